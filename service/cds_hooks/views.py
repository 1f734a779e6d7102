"""CDS Hooks endpoints (blueprint ``cds``): discovery, the two services and their feedback.

Views validate the request, take the model snapshot once, and leave what the audit line needs
in ``g.audit`` (the middleware writes it, fail-closed, like for the REST endpoints). The
``fhirAuthorization`` access token is validated for shape and otherwise ignored: this service
never calls the EHR's FHIR server, and the token is never logged, audited or echoed.
"""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, g, jsonify, request

from recommender.exceptions import DataValidationError

from .. import schemas
from ..auth import cds_client, patient_data, public
from ..errors import ApiError
from ..feedback import store_feedback
from ..model_store import Served
from . import hooks
from .cards import Style
from .discovery import ORDER_SELECT, SERVICES, discovery_document
from .feedback import decisions, feedback_schema
from .patient import gather
from .prefetch import parse_prefetch
from .store import CardRecord, StoreError

cds = Blueprint("cds", __name__)
log = logging.getLogger(__name__)

_TEXT = {"type": "string", "minLength": 1, "maxLength": 2048}
FHIR_AUTHORIZATION = {
    "type": "object",
    "required": ["access_token", "token_type", "expires_in", "scope", "subject"],
    "properties": {
        "access_token": {"type": "string", "minLength": 1, "maxLength": 16_384},
        "token_type": {"type": "string", "enum": ["Bearer"]},
        "expires_in": {"type": "integer", "minimum": 0},
        "scope": {"type": "string", "maxLength": 16_384},
        "subject": _TEXT,
        "patient": _TEXT,
    },
}


def request_schema() -> dict:
    """The body of a CDS service call (CDS Hooks 2.0 "Calling a CDS Service")."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["hook", "hookInstance", "context"],
        "properties": {
            "hook": {"type": "string", "minLength": 1, "maxLength": 256},
            "hookInstance": {"type": "string", "minLength": 1, "maxLength": 256},
            "fhirServer": _TEXT,
            "fhirAuthorization": FHIR_AUTHORIZATION,
            "context": {
                "type": "object",
                "required": ["patientId"],
                "properties": {
                    "patientId": schemas.identifier("the FHIR Patient.id in context"),
                    "userId": {"type": "string", "minLength": 1, "maxLength": 512},
                    "encounterId": {"type": "string", "minLength": 1, "maxLength": 512},
                    "selections": {
                        "type": "array",
                        "maxItems": 100,
                        "items": {"type": "string", "minLength": 1, "maxLength": 512},
                    },
                    "draftOrders": {"type": "object"},
                },
            },
            "prefetch": {"type": "object"},
            "extension": {"type": "object"},
        },
    }


def _served() -> Served:
    g.served = current_app.extensions["recommender"].store.current
    return g.served


def _service(service_id: str) -> dict:
    service = SERVICES.get(service_id)
    if service is None:
        raise ApiError(
            404,
            "unknown_service",
            f"no CDS service {service_id!r}; GET /cds-services lists {sorted(SERVICES)}",
        )
    return service


@cds.get("/cds-services")
@public
def discovery():
    """The CDS services, their hooks and prefetch templates (open: no patient data)."""
    return jsonify(discovery_document())


@cds.post("/cds-services/<service_id>")
@cds_client
@patient_data
def call_service(service_id: str):
    """Cards for one hook call (``patient-view`` or ``order-select``)."""
    service = _service(service_id)
    document = schemas.parse_json_body(request.content_type, request.get_data(cache=False))
    body = schemas.validate_body(document, request_schema())
    if body["hook"] != service["hook"]:
        raise ApiError(
            400,
            "invalid_body",
            f"service {service_id!r} answers the {service['hook']!r} hook, not {body['hook']!r}",
        )
    if "fhirAuthorization" in body and "fhirServer" not in body:
        raise ApiError(400, "invalid_body", "fhirServer is required with fhirAuthorization")
    context = body["context"]
    patient_id = context["patientId"]
    served = _served()
    g.audit = {
        "patient_pseudonym": served.pseudonym(patient_id),
        "hook": body["hook"],
        "hook_instance": body["hookInstance"],
        "user": context.get("userId"),
    }
    if service["hook"] == ORDER_SELECT:
        hooks.check_selections(context)
    known = served.treatments.__contains__
    prefetched = parse_prefetch(
        body.get("prefetch"),
        patient_id,
        lambda identifier: known(identifier) or identifier in served.conditions,
    )
    inputs = gather(served, patient_id, prefetched)
    config = current_app.config
    style = Style(
        {
            "type": served.info["type"],
            "version": served.version,
            "data_fingerprint": served.info["data"]["fingerprint"],
        },
        config["CDS_INFO_URL"],
    )
    answer_of = hooks.order_select if service["hook"] == ORDER_SELECT else hooks.patient_view
    try:
        answer = answer_of(
            served, inputs, context, style, config["CDS_MAX_CARDS"], config["CDS_SUGGESTIONS"]
        )
    except DataValidationError as exc:
        raise ApiError(400, "invalid_prefetch", str(exc)) from None
    g.audit.update(condition_ids=answer.conditions, treatment_ids=answer.treatments)
    _remember(service_id, served, patient_id, answer.cards)
    return jsonify({"cards": [card.body for card in answer.cards]})


def _remember(service_id: str, served: Served, patient_id: str, cards) -> None:
    """Keep what each card was about, for feedback (a failure costs feedback, not the cards)."""
    records = [
        CardRecord(
            card.uuid,
            service_id,
            card.kind,
            served.pseudonym(patient_id),
            served.version,
            card.treatments,
            card.suggestions,
        )
        for card in cards
    ]
    try:
        current_app.extensions["recommender"].cds.store.save_cards(records)
    except StoreError as exc:
        log.error(
            "request %s: cards not remembered, feedback on them will be refused: %s",
            g.get("request_id"),
            exc,
        )


@cds.post("/cds-services/<service_id>/feedback")
@cds_client
@patient_data
def feedback(service_id: str):
    """Accepted and overridden cards -> decisions in the feedback store (idempotent)."""
    _service(service_id)
    document = schemas.parse_json_body(request.content_type, request.get_data(cache=False))
    body = schemas.validate_body(document, feedback_schema())
    runtime = current_app.extensions["recommender"]
    g.audit = {
        "cards": [item["card"] for item in body["feedback"]],
        "feedback_outcomes": [item["outcome"] for item in body["feedback"]],
    }
    try:
        found = decisions(body["feedback"], service_id, runtime.cds.store, g.principal.id)
    except StoreError as exc:
        log.error("request %s: CDS store unavailable: %s", g.get("request_id"), exc)
        raise ApiError(
            503,
            "store_unavailable",
            "the cards cannot be looked up right now; retry later (feedback is idempotent)",
        ) from None
    g.audit.update(treatment_ids=found.treatments)
    if len(found.patients) == 1:
        g.audit["patient_pseudonym"] = found.patients[0]
    else:
        g.audit["patient_pseudonyms"] = found.patients
    stored = store_feedback(runtime.feedback, found.records)
    return jsonify(
        {
            "stored": stored,
            "already_stored": len(found.records) - stored,
            "audit_only": found.audit_only,
        }
    )
