"""Clinicians' accept / override decisions, stored append-only, usable as training signal.

A record is one JSON line::

    {"feedback_id": "...", "time": "2026-11-24T10:00:00+00:00", "patient": "<pseudonym>",
     "treatment_id": "rxnorm|314076",
     "decision": "accepted" | "overridden" | "warning_overridden",
     "reason": "optional override reason", "principal": "<token id>", "source": "api",
     "model_version": "..."}

``patient`` is the id the model holds (the keyed pseudonym for a pseudonymised model), never a
raw identifier. Appends take an exclusive lock, so several server processes can share one file;
a ``feedback_id`` already stored is not written again (idempotent retries). Each line is flushed
and fsync'ed before the call returns.

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

import fcntl
import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ..exceptions import DataValidationError

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
    """Append-only JSON-lines file of decisions (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._seen: set[str] = set()
        self._offset = 0

    def append(self, record: Mapping) -> bool:
        """Store one decision; False when its ``feedback_id`` is already stored.

        Raises DataValidationError naming the field when the record is malformed.
        """
        entry = _validated(record)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._catch_up()
            if entry["feedback_id"] in self._seen:
                return False
            os.write(fd, (json.dumps(entry, sort_keys=True) + "\n").encode("utf-8"))
            os.fsync(fd)
            self._seen.add(entry["feedback_id"])
            return True
        finally:
            os.close(fd)  # closing releases the lock

    def _catch_up(self) -> None:
        """Read ids appended (by any process) since this store last looked."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            handle.seek(self._offset)
            for line in handle:
                if line.endswith(b"\n"):
                    self._seen.add(json.loads(line)["feedback_id"])
                    self._offset += len(line)


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
    entry["time"] = entry["time"] or datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {k: v for k, v in entry.items() if v is not None}


def read_feedback(path: str | os.PathLike) -> pd.DataFrame:
    """All stored decisions as a DataFrame (patient, treatment_id, decision, time, ...).

    Training uses the latest preference (:data:`PREFERENCES`) per (patient, treatment). A
    malformed line is an error naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataValidationError("no such feedback file", file=str(path))
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(_validated(json.loads(line)))
            except (json.JSONDecodeError, DataValidationError) as exc:
                raise DataValidationError(
                    f"line {number} is not a valid feedback record: {exc}",
                    file=str(path),
                    row=number,
                ) from None
    columns = list(FIELDS)
    frame = pd.DataFrame(records, columns=columns)
    frame["time"] = pd.to_datetime(frame["time"], utc=True, errors="coerce", format="ISO8601")
    return frame
