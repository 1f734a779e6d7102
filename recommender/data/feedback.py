"""Clinicians' accept / override decisions, stored append-only, usable as training signal.

A record is one JSON line::

    {"feedback_id": "...", "time": "2026-11-24T10:00:00+00:00", "patient": "<pseudonym>",
     "treatment_id": "rxnorm|314076",
     "decision": "accepted" | "overridden" | "warning_overridden",
     "reason": "optional override reason", "principal": "<token id>", "source": "api",
     "model_version": "..."}

``patient`` is the id the model holds (the keyed pseudonym for a pseudonymised model), never a
raw identifier. Appends take an exclusive lock, so several server processes can share one file;
a ``feedback_id`` already stored is not written again (idempotent retries). Each line is written
whole or not at all (:mod:`recommender.utils.jsonlines`: a short write on a full disk is cut
back and raised, a torn tail is moved aside to ``<file>.torn``) and fsync'ed before the call
returns, so a decision reported stored is in the file. Readers skip (and count) lines that do
not parse.

Decisions about a *suggestion* (``accepted``, ``overridden``) are preferences. A decision is not
an outcome: in training (``Dataset.from_tables(feedback=...)``) a preference only adds a weak
signal to the factor matrix for (patient, treatment) pairs with no outcome on record, ``+`` for
accepted and ``-`` for overridden, of strength ``feedback_weight`` in outcome units.

``warning_overridden`` is the clinician ordering a therapy despite a safety warning (a CDS Hooks
``order-select`` warning card). It is neither a preference for the therapy (the warning says
the patient should not get it) nor against it (the clinician chose it), so training ignores it
(:data:`PREFERENCES`); it is stored, with the override reason, for safety review: which rules
are overridden, how often and why (``record-incorrect`` points at a data error).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ..exceptions import DataValidationError
from ..utils.jsonlines import append_line, locked, open_for_append, read_records, repair_tail
from ..utils.text import text_problem

log = logging.getLogger(__name__)

#: Decisions on a suggested therapy, and the sign of the weak preference each adds in training.
PREFERENCES = {"accepted": 1.0, "overridden": -1.0}
#: Every decision the store holds: the preferences and overridden safety warnings.
DECISIONS = (*PREFERENCES, "warning_overridden")
FIELDS = (
    "feedback_id",
    "time",
    "patient",
    "treatment_id",
    "decision",
    "reason",
    "principal",
    "source",
    "model_version",
)


class FeedbackStore:
    """Append-only JSON-lines file of decisions (see the module docstring).

    Opening creates the file (0600) if missing and moves a torn last line aside.

    Raises
    ------
    OSError
        The file cannot be opened for appending, or a torn tail cannot be moved aside.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._seen: set[str] = set()
        self._offset = 0
        fd = open_for_append(self.path)
        try:
            with locked(fd):
                repair_tail(fd, self.path)
        finally:
            os.close(fd)

    def append(self, record: Mapping) -> bool:
        """Store one decision; False when its ``feedback_id`` is already stored.

        Raises
        ------
        DataValidationError
            The record is malformed (the message names the field).
        OSError
            The decision could not be stored (e.g. the disk is full); the file is unchanged
            up to its last complete record, so a retry stores it once.
        """
        entry = _validated(record)
        line = (json.dumps(entry, sort_keys=True, ensure_ascii=True) + "\n").encode("ascii")
        fd = open_for_append(self.path)
        try:
            with locked(fd):
                self._catch_up()
                if entry["feedback_id"] in self._seen:
                    return False
                append_line(fd, line, self.path)
            os.fsync(fd)
            self._seen.add(entry["feedback_id"])
            return True
        finally:
            os.close(fd)

    def _catch_up(self) -> None:
        """Read ids appended (by any process) since this store last looked."""
        found = read_records(self.path, self._offset)
        start, self._offset = self._offset, found.end
        for _, entry in found.records:
            if isinstance(entry.get("feedback_id"), str):
                self._seen.add(entry["feedback_id"])
        if found.unparsable:
            log.warning(
                "%s: skipped %d unparsable line(s) after byte %d",
                self.path,
                len(found.unparsable),
                start,
            )


def _validated(record: Mapping) -> dict:
    entry = {field: record.get(field) for field in FIELDS}
    for field in ("feedback_id", "patient", "treatment_id", "decision"):
        value = entry[field]
        if not isinstance(value, str) or not value.strip():
            raise DataValidationError(f"feedback needs a non-empty string '{field}'", column=field)
    if entry["decision"] not in DECISIONS:
        raise DataValidationError(
            f"decision {entry['decision']!r} is not one of {list(DECISIONS)}", column="decision"
        )
    for field, value in entry.items():
        if value is not None and not isinstance(value, str):
            raise DataValidationError(f"feedback field '{field}' must be a string", column=field)
        problem = value and text_problem(value, free_text=field == "reason")
        if problem:
            raise DataValidationError(f"feedback field '{field}' {problem}", column=field)
    entry["time"] = entry["time"] or datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {k: v for k, v in entry.items() if v is not None}


def read_feedback(path: str | os.PathLike) -> pd.DataFrame:
    """All stored decisions as a DataFrame (patient, treatment_id, decision, time, ...).

    Training uses the latest preference (:data:`PREFERENCES`) per (patient, treatment). Lines
    that do not parse, or are not valid records, are skipped and counted: their line numbers
    are in ``frame.attrs["skipped_lines"]`` and a warning names the file and how many.
    """
    path = Path(path)
    if not path.is_file():
        raise DataValidationError("no such feedback file", file=str(path))
    found = read_records(path)
    skipped = list(found.unparsable)
    records = []
    for number, entry in found.records:
        try:
            records.append(_validated(entry))
        except DataValidationError:
            skipped.append(number)
    if skipped:
        log.warning(
            "%s: skipped %d line(s) that are not valid feedback records (lines %s)",
            path,
            len(skipped),
            ", ".join(map(str, sorted(skipped)[:10])) + (", ..." if len(skipped) > 10 else ""),
        )
    columns = list(FIELDS)
    frame = pd.DataFrame(records, columns=columns)
    frame["time"] = pd.to_datetime(frame["time"], utc=True, errors="coerce", format="ISO8601")
    frame.attrs["skipped_lines"] = sorted(skipped)
    return frame
