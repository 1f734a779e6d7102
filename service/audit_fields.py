"""Bounds on what clients put into an audit line.

The audit trail must stay small, parseable and trustworthy whatever a client sends: ids the
model knows are recorded as they are; a condition or therapy id it does not know is not
copied (it is counted as unknown, since free text can hold anything, a patient's name
included); other client-chosen ids (card uuids, the EHR user, feedback ids ...) are kept only
when they are short identifiers, else recorded as invalid. Lists are capped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

#: What an id from a client may look like to be copied into the audit log.
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:/|@#+=-]{1,128}$")
#: Most items of one list field kept (the rest are counted).
MAX_ITEMS = 50
#: Client-chosen identifiers: kept when they look like one.
CLIENT_IDS = ("hook_instance", "user", "feedback_id", "recommendation_request_id", "tenant")
CLIENT_ID_LISTS = ("cards",)


def bounded(record: dict, conditions: frozenset, treatments: frozenset) -> dict:
    """``record`` with its client-supplied fields checked (a new dict; see the module doc).

    ``conditions`` and ``treatments`` are the ids the serving model knows. Adds
    ``unknown_ids`` (field -> how many unknown ids were left out) and ``invalid_fields``
    (fields whose value was not recorded) when there were any.
    """
    out = dict(record)
    unknown: dict[str, int] = {}
    invalid: list[str] = []
    condition = out.get("condition_id")
    if condition is not None and condition not in conditions:
        out["condition_id"] = None
        unknown["condition_id"] = 1
    for field, known in (("condition_ids", conditions), ("treatment_ids", treatments)):
        values = out.get(field)
        if values is None:
            continue
        if not isinstance(values, (list, tuple)):
            out[field], unknown[field] = [], 1
            continue
        kept = [v for v in values if isinstance(v, str) and v in known]
        if len(kept) != len(values):
            unknown[field] = len(values) - len(kept)
        out[field] = kept[:MAX_ITEMS]
    for field in CLIENT_IDS:
        value = out.get(field)
        if value is not None and not (isinstance(value, str) and _CLIENT_ID.match(value)):
            out[field] = None
            invalid.append(field)
    for field in CLIENT_ID_LISTS:
        values = out.get(field)
        if values is None:
            continue
        ok = isinstance(values, (list, tuple)) and all(
            isinstance(v, str) and _CLIENT_ID.match(v) for v in values
        )
        if not ok:
            out[field] = None
            invalid.append(field)
        else:
            out[field] = list(values[:MAX_ITEMS])
    outcomes = out.get("feedback_outcomes")
    if isinstance(outcomes, (list, tuple)):
        out["feedback_outcomes"] = [str(v)[:32] for v in outcomes[:MAX_ITEMS]]
    if unknown:
        out["unknown_ids"] = unknown
    if invalid:
        out["invalid_fields"] = invalid
    return out


def client_request_id(headers: Mapping[str, str], pattern: re.Pattern) -> str | None:
    """The client's own ``X-Request-ID`` when it is a short identifier, else None."""
    value = headers.get("X-Request-ID", "")
    return value if pattern.match(value) else None
