"""Storing clinicians' decisions (REST feedback and CDS Hooks card feedback share this)."""

from __future__ import annotations

import logging

from flask import g

from .errors import ApiError

log = logging.getLogger(__name__)


def store_feedback(store, records: list[dict]) -> int:
    """Append decisions to the feedback store; how many were new (503 if it cannot be written)."""
    try:
        return sum(store.append(record) for record in records)
    except OSError as exc:
        log.error("request %s: feedback not stored: %s", g.get("request_id"), exc)
        raise ApiError(
            503,
            "feedback_unavailable",
            "the decision could not be stored; retry later (feedback is idempotent)",
        ) from None
