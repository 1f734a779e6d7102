"""REST endpoints (blueprint ``api``), versioned under ``/v1``."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from recommender.exceptions import UnknownIdError

from .errors import ApiError

api = Blueprint("api", __name__)


def _store():
    return current_app.extensions["model_store"]


def _k() -> int:
    raw = request.args.get("k", str(current_app.config["DEFAULT_K"]))
    max_k = current_app.config["MAX_K"]
    if not raw.isdigit() or not 1 <= int(raw) <= max_k:
        raise ApiError(400, "invalid_parameter", f"k must be a whole number in [1, {max_k}]",
                       {"field": "k", "value": raw})
    return int(raw)


@api.get("/health")
def health():
    return jsonify(status="ok")


@api.get("/ready")
def ready():
    manifest = _store().artifact.manifest
    return jsonify(status="ready", model_version=manifest["version"])


@api.get("/v1/patients/<patient_id>/recommendations")
def patient_recommendations(patient_id: str):
    k = _k()
    condition = request.args.get("condition") or None
    include_tried = request.args.get("include_tried", "false").lower() in ("1", "true", "yes")
    model = _store().model
    try:
        answer = model.recommend(patient_id, k=k, condition_id=condition, include_tried=include_tried)
    except UnknownIdError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    return jsonify(answer.to_dict())
