"""Clinical endpoints (blueprint ``api``), versioned under ``/v1``.

Each view validates its input (``service/schemas.py``), takes the current model snapshot once,
asks the engine, and returns the engine's ``RecommendationList.to_dict()`` unchanged, so fields
the engine adds reach clients without a change here. Patient-data views leave what the audit
line needs in ``g.audit``.
"""

from __future__ import annotations

from datetime import datetime, timezone

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request

from recommender.exceptions import DataValidationError, ParameterError, UnknownIdError
from recommender.trust.model_card import model_card_markdown

from . import schemas
from .auth import patient_data, roles
from .errors import ApiError
from .feedback import store_feedback
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


def _check_condition(served: Served, condition: str | None) -> None:
    if condition is not None and condition not in served.conditions:
        raise ApiError(
            404,
            "unknown_condition",
            f"unknown condition id {condition!r}: the model "
            "has no outcome, diagnosis or contraindication that mentions it",
            {"condition": condition},
        )


def _recommended_ids(body: dict) -> list[str]:
    return [item["treatment_id"] for item in body.get("recommendations", [])]


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
    _check_condition(served, condition)
    active = schemas.active_ids(params.get("active"))
    try:
        answer = served.model.recommend(
            patient_id,
            k=params.get("k", config["DEFAULT_K"]),
            condition_id=condition,
            include_tried=params.get("include_tried", False),
            active_treatments=active,
        )
    except UnknownIdError:
        raise ApiError(
            404,
            "unknown_patient",
            f"unknown patient id {patient_id!r}: not in the "
            "model's training data; POST /v1/recommendations with the patient's "
            "history instead",
        ) from None
    body = answer.to_dict()
    audit["treatment_ids"] = _recommended_ids(body)
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
    history = [_history_item(item) for item in body.get("history", [])]
    condition = body.get("condition")
    g.audit.update(history_items=len(history), condition_id=condition)
    _check_condition(served, condition)
    try:
        answer = served.model.recommend_new(
            history=history,
            conditions=[*body.get("conditions", []), *body.get("allergies", [])],
            k=body.get("k", config["DEFAULT_K"]),
            condition_id=condition,
            include_tried=body.get("include_tried", False),
            sex=body.get("sex"),
            birth_year=body.get("birth_year"),
            active_treatments=body.get("active_treatments"),
        )
    except (DataValidationError, ParameterError) as exc:
        raise ApiError(400, "invalid_body", str(exc)) from None
    except UnknownIdError as exc:
        raise ApiError(404, "unknown_id", str(exc)) from None
    result = answer.to_dict()
    g.audit["treatment_ids"] = _recommended_ids(result)
    return jsonify(result)


def _history_item(item: dict) -> dict:
    """A validated history item as the engine takes it (adverse as 0/1, upper-case ISO time)."""
    engine_item = {**item, "adverse": int(item.get("adverse", False))}
    if "timestamp" in item:
        engine_item["timestamp"] = item["timestamp"].upper()
    return engine_item


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
    if treatment not in served.treatments:
        raise ApiError(
            404,
            "unknown_treatment",
            f"unknown treatment id {treatment!r}",
            {"treatment_id": treatment},
        )
    stored_id = f"api:{g.principal.id}:{body['feedback_id']}"
    record = {
        "feedback_id": stored_id,
        "patient": g.audit["patient_pseudonym"],
        "treatment_id": treatment,
        "decision": body["decision"],
        "reason": body.get("reason"),
        "principal": g.principal.id,
        "source": "api",
        "model_version": body.get("model_version"),
    }
    stored = store_feedback(current_app.extensions["recommender"].feedback, [record])
    return jsonify(
        {"status": "stored" if stored else "already_stored", "feedback_id": body["feedback_id"]}
    ), 201 if stored else 200
