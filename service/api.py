"""Clinical endpoints (blueprint ``api``), versioned under ``/v1``.

Each view validates its input (``service/schemas.py``), takes the current model snapshot once,
asks the engine, and returns the engine's ``RecommendationList.to_dict()`` unchanged, so fields
the engine adds reach clients without a change here. Patient-data views leave what the audit
line needs in ``g.audit``.
"""

from __future__ import annotations

from datetime import datetime, timezone

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request

from recommender.trust.model_card import model_card_markdown

from . import recommendations, schemas
from .auth import patient_data, roles
from .errors import ApiError
from .feedback import store_decision
from .model_store import Served
from .tokens import CLINICIAN

api = Blueprint("api", __name__)


def _served(app: Flask | None = None, ctx=None) -> Served:
    """The model snapshot this request uses from start to end (a reload cannot split it).

    ``app`` and ``ctx`` are the current app and ``g`` when the caller already holds them
    (each access to Flask's ``current_app`` / ``g`` proxies costs a context lookup).
    """
    app = current_app if app is None else app
    ctx = g if ctx is None else ctx
    ctx.served = served = app.extensions["recommender"].store.current
    return served


@api.get("/v1/patients/<patient_id>/recommendations")
@roles(CLINICIAN)
@patient_data
def patient_recommendations(patient_id: str):
    """Top-k therapies for a patient in the model, with what was excluded and why."""
    # The busiest endpoint: the app and g are taken from their proxies once (see _served).
    app, ctx = current_app._get_current_object(), g._get_current_object()
    config = app.config
    schemas.check_identifier(patient_id, "patient_id")
    served = _served(app, ctx)
    ctx.audit = audit = {"patient_pseudonym": served.pseudonym(patient_id)}
    params = schemas.parse_query(request.args, schemas.query_parameters(config))
    condition = params.get("condition")
    audit["condition_id"] = condition
    body = recommendations.for_patient(
        served,
        patient_id,
        k=params.get("k", config["DEFAULT_K"]),
        condition=condition,
        include_tried=params.get("include_tried", False),
        active=schemas.active_ids(params.get("active")),
    )
    audit["treatment_ids"] = recommendations.recommended_ids(body)
    return app.json.response(body)


@api.post("/v1/recommendations")
@roles(CLINICIAN)
@patient_data
def new_patient_recommendations():
    """Top-k therapies for a patient outside the model, from the history in the body."""
    config = current_app.config
    served = _served()
    g.audit = {"history_items": None}
    document = schemas.parse_json_body(request.content_type, request.get_data(cache=False))
    body = schemas.validate_body(document, schemas.new_patient_schema(config))
    g.audit.update(history_items=len(body.get("history", [])), condition_id=body.get("condition"))
    result = recommendations.for_new_patient(served, body, config["DEFAULT_K"])
    g.audit["treatment_ids"] = recommendations.recommended_ids(result)
    return jsonify(result)


@api.get("/v1/treatments/<treatment_id>/similar")
def similar_treatments(treatment_id: str):
    """Therapies whose learned profile is closest to ``treatment_id`` (no patient data)."""
    schemas.check_identifier(treatment_id, "treatment_id")
    served = _served()
    k_schema = schemas.query_parameters(current_app.config)["k"]
    params = schemas.parse_query(request.args, {"k": k_schema})
    if treatment_id not in served.treatments:
        raise ApiError(
            404,
            "unknown_treatment",
            f"unknown treatment id {treatment_id!r}",
            {"treatment_id": treatment_id},
        )
    pairs = served.model.similar(treatment_id, k=params.get("k", current_app.config["DEFAULT_K"]))
    return jsonify(
        {
            "treatment_id": treatment_id,
            "model": {"type": served.info["type"], "version": served.version},
            "similar": [
                {"rank": rank, "treatment_id": other, "similarity": similarity}
                for rank, (other, similarity) in enumerate(pairs, start=1)
            ],
        }
    )


@api.get("/v1/model")
def model_description():
    """Type, version, training-data fingerprint, metrics and creation time of the model."""
    served = _served()
    return jsonify(
        {**served.info, "artifact": served.path.name, "loaded_at": _iso(served.loaded_at)}
    )


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


@api.get("/v1/model/card")
def model_card():
    """The model card of the model being served, as Markdown (any valid token)."""
    served = _served()
    cache = current_app.extensions.setdefault("recommender_model_cards", {})
    text = cache.get(served.version)
    if text is None:
        text = cache[served.version] = model_card_markdown(served.artifact)
    return Response(text, content_type="text/markdown; charset=utf-8")


@api.post("/v1/feedback")
@roles(CLINICIAN)
@patient_data
def clinician_feedback():
    """A clinician accepted or overrode a suggested therapy: stored once (idempotent)."""
    served = _served()
    g.audit = {}
    document = schemas.parse_json_body(request.content_type, request.get_data(cache=False))
    body = schemas.validate_body(document, schemas.feedback_schema())
    treatment = body["treatment_id"]
    g.audit.update(
        patient_pseudonym=served.pseudonym(body["patient_id"]),
        treatment_ids=[treatment],
        decision=body["decision"],
        feedback_id=body["feedback_id"],
        recommendation_request_id=body.get("request_id"),
    )
    stored = store_decision(
        current_app.extensions["recommender"].feedback, served, g.principal.id, "api", body
    )
    return jsonify(
        {"status": "stored" if stored else "already_stored", "feedback_id": body["feedback_id"]}
    ), 201 if stored else 200
