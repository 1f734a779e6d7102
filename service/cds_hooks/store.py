"""What the CDS Hooks endpoints remember between calls, shared by every gunicorn worker.

One SQLite file (``RECOMMENDER_CDS_STORE``, WAL mode) holds two tables:

- ``jti``: the ``(iss, jti)`` of every accepted client JWT until its ``exp``, so a token is
  accepted once, whichever worker receives it (the replay cache). Bounded: expired rows are
  pruned, and beyond ``max_tokens`` rows the ones expiring first are dropped (logged).
- ``cards``: for every card answered, who it was about (the patient's pseudonym, never the raw
  id), which therapies it suggested or warned about, and the uuid of each suggestion, so that
  ``POST /cds-services/{id}/feedback``, which names only card and suggestion uuids, can be
  stored as decisions about (patient, therapy). Rows older than ``card_ttl_days`` are pruned.

Each process opens its own connection on first use (never across a fork), one per thread.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: Prune expired rows every this many writes (per process).
PRUNE_EVERY = 512
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jti (iss TEXT NOT NULL, jti TEXT NOT NULL, exp REAL NOT NULL,
                                PRIMARY KEY (iss, jti));
CREATE INDEX IF NOT EXISTS jti_exp ON jti (exp);
CREATE TABLE IF NOT EXISTS cards (uuid TEXT PRIMARY KEY, service TEXT NOT NULL,
                                  kind TEXT NOT NULL, patient TEXT NOT NULL,
                                  model_version TEXT, treatments TEXT NOT NULL,
                                  suggestions TEXT NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS cards_created ON cards (created);
"""


class StoreError(Exception):
    """The CDS store cannot be read or written."""


@dataclass(frozen=True)
class CardRecord:
    """What one answered card was about.

    Attributes
    ----------
    uuid, service : str
        The card's uuid and the CDS service id that answered it.
    kind : str
        ``suggestion`` (therapies offered) or ``warning`` (a drafted therapy advised against).
    patient : str
        The patient's pseudonym (as the model holds patient ids).
    model_version : str
    treatments : tuple of str
        Therapies the card offered (suggestion) or warned about (warning).
    suggestions : dict
        Suggestion uuid -> the therapy it offers.
    """

    uuid: str
    service: str
    kind: str
    patient: str
    model_version: str
    treatments: tuple[str, ...]
    suggestions: dict = field(default_factory=dict)


class CdsStore:
    """The SQLite store (see the module docstring).

    Parameters
    ----------
    path : path-like
        The database file (created 0600 if missing; its folder must exist).
    max_tokens : int
        Most JWT ids kept at once.
    card_ttl_days : int
        Days a card can still receive feedback.

    Raises
    ------
    StoreError
        The file cannot be created or is not a usable database.
    """

    def __init__(self, path: str | os.PathLike, max_tokens: int = 100_000, card_ttl_days: int = 30):
        self.path = Path(path)
        self.max_tokens, self.card_ttl = max_tokens, card_ttl_days * 86_400.0
        self._local = threading.local()
        self._writes = 0
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            with closing(self._connect()) as connection:
                connection.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the CDS store {self.path}: {exc}") from None

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection

    @property
    def _db(self) -> sqlite3.Connection:
        """This process's (and thread's) connection; a forked child opens its own."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.connection, local.pid = self._connect(), os.getpid()
        return local.connection

    # --- JWT replay cache ---------------------------------------------------------------------

    def first_use(self, issuer: str, jti: str, exp: float, now: float | None = None) -> bool:
        """Record a token id; False when the same issuer already used it (a replay).

        Raises
        ------
        StoreError
        """
        now = time.time() if now is None else now
        try:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO jti VALUES (?, ?, ?)", (issuer, jti, float(exp))
            )
            fresh = cursor.rowcount == 1
            if fresh:
                self._maybe_prune(now)
        except sqlite3.Error as exc:
            raise StoreError(f"CDS store {self.path}: {exc}") from None
        return fresh

    def _maybe_prune(self, now: float) -> None:
        self._writes += 1
        if self._writes % PRUNE_EVERY:
            return
        db = self._db
        db.execute("DELETE FROM jti WHERE exp < ?", (now,))
        db.execute("DELETE FROM cards WHERE created < ?", (now - self.card_ttl,))
        (count,) = db.execute("SELECT COUNT(*) FROM jti").fetchone()
        if count > self.max_tokens:
            log.warning(
                "JWT replay cache over %d entries: dropping the %d expiring first "
                "(raise RECOMMENDER_CDS_JTI_CACHE_SIZE or lower "
                "RECOMMENDER_CDS_JWT_MAX_LIFETIME)",
                self.max_tokens,
                count - self.max_tokens,
            )
            db.execute(
                "DELETE FROM jti WHERE rowid IN (SELECT rowid FROM jti ORDER BY exp LIMIT ?)",
                (count - self.max_tokens,),
            )

    def prune(self, now: float | None = None) -> None:
        """Drop expired token ids and cards past their time to live now."""
        self._writes = PRUNE_EVERY - 1
        try:
            self._maybe_prune(time.time() if now is None else now)
        except sqlite3.Error as exc:
            raise StoreError(f"CDS store {self.path}: {exc}") from None

    # --- cards -----------------------------------------------------------------------------------

    def save_cards(self, cards: list[CardRecord], now: float | None = None) -> None:
        """Remember the cards of one answer (one transaction).

        Raises
        ------
        StoreError
        """
        if not cards:
            return
        now = time.time() if now is None else now
        rows = [
            (
                c.uuid,
                c.service,
                c.kind,
                c.patient,
                c.model_version,
                json.dumps(c.treatments),
                json.dumps(c.suggestions),
                now,
            )
            for c in cards
        ]
        try:
            db = self._db
            db.execute("BEGIN")
            try:
                db.executemany("INSERT INTO cards VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            except sqlite3.Error:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            self._maybe_prune(now)
        except sqlite3.Error as exc:
            raise StoreError(f"CDS store {self.path}: {exc}") from None

    def card(self, uuid: str, now: float | None = None) -> CardRecord | None:
        """The card answered with ``uuid`` (None if unknown or past its time to live)."""
        now = time.time() if now is None else now
        try:
            row = self._db.execute(
                "SELECT uuid, service, kind, patient, model_version, treatments, suggestions "
                "FROM cards WHERE uuid = ? AND created >= ?",
                (uuid, now - self.card_ttl),
            ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"CDS store {self.path}: {exc}") from None
        if row is None:
            return None
        return CardRecord(
            row[0], row[1], row[2], row[3], row[4], tuple(json.loads(row[5])), json.loads(row[6])
        )
