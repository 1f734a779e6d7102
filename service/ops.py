"""Operational endpoints (blueprint ``ops``): probes, metrics and the API description."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from .auth import public
from .errors import error_response
from .metrics import CONTENT_TYPE
from .openapi import openapi_document
from .readiness import model_problem

ops = Blueprint("ops", __name__)


@ops.get("/health")
@public
def health():
    """Liveness: the process answers. Open, no token."""
    return jsonify(status="ok")


@ops.get("/ready")
@public
def ready():
    """Readiness: the audit log can be appended to and the model answers its smoke queries
    (:mod:`service.readiness`: cached per model, re-run after a reload)."""
    runtime = current_app.extensions["recommender"]
    served = runtime.store.current
    if not runtime.audit.writable():
        return error_response(
            503,
            "not_ready",
            "the audit log cannot be appended to, so patient data would be refused",
            {"model_version": served.version},
        )
    problem = model_problem(served)
    if problem is not None:
        return error_response(
            503,
            "not_ready",
            f"the model being served cannot answer: {problem}",
            {"model_version": served.version},
        )
    return jsonify(status="ready", model_version=served.version)


@ops.get("/metrics")
def metrics():
    """Prometheus text exposition (any valid token)."""
    body = current_app.extensions["recommender"].metrics.render()
    return Response(body, content_type=CONTENT_TYPE)


@ops.get("/openapi.json")
def openapi():
    """The OpenAPI 3 description of this service, for this configuration (any valid token)."""
    return jsonify(openapi_document(current_app))
