"""CDS Hooks endpoints (blueprint ``cds``): discovery, the two services and their feedback.

Views validate the request, take the model snapshot once, and leave what the audit line needs
in ``g.audit`` (the middleware writes it, fail-closed, like for the REST endpoints). With
``fhirServer`` and a usable ``fhirAuthorization``, what the prefetch lacks is fetched from the
EHR's FHIR server (:mod:`.fhir_client`); the access token is used for that only and never
logged, audited or echoed.

Liberal in what they accept (the robustness principle, as EHRs differ): a body without a
Content-Type is read as JSON; unknown top-level fields are ignored and their names (never their
values) logged; ``fhirAuthorization.expires_in`` may be missing or a number in text.
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
from .cards import Style, gaps_markdown
from .discovery import ORDER_SELECT, SERVICES, discovery_document
from .feedback import decisions, feedback_schema
from .fhir_client import FhirClient, FhirSettings, fetch_missing, usable_authorization
from .medications import ingredient_reader
from .patient import gather
from .prefetch import parse_prefetch, provided_keys
from .store import CardRecord, StoreError

cds = Blueprint("cds", __name__)
log = logging.getLogger(__name__)

_TEXT = {"type": "string", "minLength": 1, "maxLength": 2048}
FHIR_AUTHORIZATION = {
    "type": "object",
    "required": ["access_token", "token_type"],
    "properties": {
        "access_token": {"type": "string", "minLength": 1, "maxLength": 16_384},
        "token_type": {"type": "string", "enum": ["Bearer", "bearer"]},
        "expires_in": {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "minLength": 1, "maxLength": 12},
            ],
            "description": "expires_in must be a number of seconds (a whole number, or text)",
        },
        "scope": {"type": "string", "maxLength": 16_384},
        "subject": _TEXT,
        "patient": _TEXT,
    },
}
#: The top-level fields of a call (CDS Hooks 2.0); others are ignored and logged by name.
CALL_FIELDS = ("hook", "hookInstance", "fhirServer", "fhirAuthorization", "context", "prefetch")


def request_schema() -> dict:
    """The body of a CDS service call (CDS Hooks 2.0 "Calling a CDS Service")."""
    return {
        "type": "object",
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
    return jsonify(discovery_document(current_app.config["CDS_LOOKBACK_DAYS"]))


@cds.post("/cds-services/<service_id>")
@cds_client
@patient_data
def call_service(service_id: str):
    """Cards for one hook call (``patient-view`` or ``order-select``)."""
    service = _service(service_id)
    body = schemas.validate_body(_json_body(), request_schema())
    _log_unknown_fields(body, CALL_FIELDS)
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
    config = current_app.config
    prefetch, client = _complete_prefetch(body, config)
    known = served.treatments.__contains__
    prefetched = parse_prefetch(
        prefetch,
        patient_id,
        lambda identifier: known(identifier) or identifier in served.conditions,
        is_treatment=known,
        fetch_medication=client.medication if client is not None else None,
        ingredients_of=ingredient_reader(served.ingredients),
        lookback_days=config["CDS_LOOKBACK_DAYS"] or None,
    )
    if client is not None:
        g.audit["fhir_calls"] = client.calls
    problem = None
    if client is not None:
        problem = client.down or "; ".join(client.notes) or None
    inputs = gather(served, patient_id, prefetched, problem)
    style = Style(
        {
            "type": served.info["type"],
            "version": served.version,
            "data_fingerprint": served.info["data"]["fingerprint"],
        },
        config["CDS_INFO_URL"],
        icon_url=config["CDS_ICON_URL"],
        short=config["CDS_DETAIL"] == "short",
        notes=tuple(
            gaps_markdown(
                prefetched.unresolved,
                prefetched.skipped,
                client.notes if client is not None else [],
            )
        ),
        user=context.get("userId"),
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


def _json_body():
    """The request's JSON document; a body without a Content-Type is read as JSON too."""
    content_type = request.content_type
    if not content_type or content_type.split(";", 1)[0].strip().lower() == "application/fhir+json":
        content_type = "application/json"
    return schemas.parse_json_body(content_type, request.get_data(cache=False))


def _log_unknown_fields(body: dict, allowed: tuple[str, ...]) -> None:
    """Drop top-level fields the specification does not define; log their names only."""
    unknown = sorted(name for name in body if name not in allowed and name != "extension")
    if unknown:
        names = ", ".join(repr(name[:64]) for name in unknown[:10])
        log.info("request %s: unknown top-level field(s) ignored: %s", g.get("request_id"), names)
        for name in unknown:
            del body[name]


def _complete_prefetch(body: dict, config) -> tuple[dict, FhirClient | None]:
    """The prefetch, with the keys it lacks fetched from the EHR's FHIR server when the call
    allows it; the client (its call count, notes and state) or None when not used."""
    prefetch = dict(body.get("prefetch") or {})
    token = usable_authorization(body)
    settings = FhirSettings.from_config(config)
    if token is None or settings.max_calls == 0:
        return prefetch, None
    client = FhirClient(body["fhirServer"], token, settings)
    provided = provided_keys(prefetch)
    prefetch.update(fetch_missing(client, provided, body["context"]))
    return prefetch, client


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
    """Accepted and overridden cards -> decisions in the feedback store, item by item
    (idempotent); ``results`` holds one result per item."""
    _service(service_id)
    body = schemas.validate_body(_json_body(), feedback_schema(items={"type": "object"}))
    _log_unknown_fields(body, ("feedback",))
    runtime = current_app.extensions["recommender"]
    items = body["feedback"]
    g.audit = {
        "cards": [item.get("card") for item in items if isinstance(item.get("card"), str)],
        "feedback_outcomes": [item.get("outcome") for item in items],
    }
    try:
        found = decisions(items, service_id, runtime.cds.store, g.principal.id)
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
    elif found.patients:
        g.audit["patient_pseudonyms"] = found.patients
    if found.first_error is not None and len(found.items) == sum(
        item["status"] in ("invalid", "unknown_card") for item in found.items
    ):
        error = found.first_error  # no item could be used: the request is the error
        raise ApiError(
            error.status,
            error.code,
            error.message + ("" if len(items) == 1 else "; no item of the batch was usable"),
            {**(error.details or {}), "results": found.items},
        )
    positions = [n for n, item in enumerate(found.items) if item["status"] == "stored"]
    stored = 0
    for position in positions:
        new = store_feedback(runtime.feedback, found.records_of[position])
        stored += new
        found.items[position]["status"] = "stored" if new else "already_stored"
    return jsonify(
        {
            "stored": stored,
            "already_stored": len(found.records) - stored,
            "audit_only": found.audit_only,
            "results": found.items,
        }
    )
