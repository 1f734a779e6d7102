"""Storing clinicians' decisions (REST feedback, the console and CDS Hooks card feedback share this)."""

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


def store_decision(store, served, principal: str, source: str, body) -> bool:
    """Store one clinician's decision on a suggested therapy; False when already stored.

    Parameters
    ----------
    store : FeedbackStore
        The service's feedback store.
    served : Served
        The model snapshot of the request (pseudonymises the patient id, knows the therapies).
    principal : str
        The token id of the clinician; ids are scoped per client as
        ``<source>:<principal>:<feedback_id>``.
    source : str
        ``"api"`` or ``"console"``.
    body : mapping
        Valid against :func:`service.schemas.feedback_schema`.

    Raises
    ------
    ApiError
        404 ``unknown_treatment``; 503 ``feedback_unavailable`` when the file cannot be written.
    """
    treatment = body["treatment_id"]
    if treatment not in served.treatments:
        raise ApiError(
            404,
            "unknown_treatment",
            f"unknown treatment id {treatment!r}",
            {"treatment_id": treatment},
        )
    record = {
        "feedback_id": f"{source}:{principal}:{body['feedback_id']}",
        "patient": served.pseudonym(body["patient_id"]),
        "treatment_id": treatment,
        "decision": body["decision"],
        "reason": body.get("reason"),
        "principal": principal,
        "source": source,
        "model_version": body.get("model_version"),
    }
    return bool(store_feedback(store, [record]))
