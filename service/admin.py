"""Operator endpoints (blueprint ``admin``): hot reload, admin role only."""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Blueprint, current_app, g, jsonify, request

from . import reload, schemas
from .audit import AuditError
from .auth import roles
from .errors import ApiError
from .tokens import ADMIN

admin = Blueprint("admin", __name__)
log = logging.getLogger(__name__)


@admin.post("/v1/admin/reload")
@roles(ADMIN)
def reload_model():
    """Load an artifact (default: the one serving, re-read), verify it, swap it in.

    Under ``recommender serve`` every worker switches (through the gunicorn master); answers
    200 when the new model serves, 422 when it was refused (the old one keeps serving), 202
    when the master had not finished within ``RELOAD_TIMEOUT``.
    """
    raw = request.get_data(cache=False)
    document = schemas.parse_json_body(request.content_type, raw) if raw else {}  # body optional
    body = schemas.validate_body(document, schemas.reload_schema())
    artifact = _allowed_path(body["artifact"]) if "artifact" in body else None
    runtime = current_app.extensions["recommender"]
    control = current_app.config.get(reload.CONTROL_KEY)
    if control:
        outcome = reload.request_fleet_reload(
            control,
            current_app.config[reload.MASTER_KEY],
            artifact,
            current_app.config["RELOAD_TIMEOUT"],
        )
    else:
        outcome = runtime.reload(artifact).to_dict()
    _audit(runtime, artifact, outcome)
    outcome = _public(outcome)
    if outcome is None:
        return jsonify(
            {
                "status": "pending",
                "artifact": _relative(artifact),
                "message": "the reload is still running; watch GET /v1/model",
            }
        ), 202
    if outcome["status"] != "reloaded":
        raise ApiError(
            422,
            "reload_refused",
            f"artifact refused, model "
            f"{outcome['previous_version']} keeps serving: {outcome['error']}",
            outcome,
        )
    return jsonify(outcome)


def _allowed_path(artifact: str) -> str:
    """The absolute artifact path, if it lies under ``ARTIFACT_ROOT`` (422 otherwise).

    A relative path is taken relative to the root, so ``{"artifact": "als-v2"}`` is enough.
    """
    root = Path(current_app.config["ARTIFACT_ROOT"]).resolve()
    try:
        path = (root / Path(artifact).expanduser()).resolve()  # relative: under the root
    except (OSError, RuntimeError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ApiError(
            422, "reload_refused", f"artifact path cannot be resolved ({reason})"
        ) from None
    if path != root and root not in path.parents:
        raise ApiError(
            422,
            "reload_refused",
            "artifact paths must lie under the artifact root (RECOMMENDER_ARTIFACT_ROOT); "
            "give a folder name relative to it",
        )
    return str(path)


def _relative(path: str | None) -> str | None:
    """``path`` as the client names it: relative to ``ARTIFACT_ROOT`` (bodies carry no
    absolute path of this machine)."""
    if path is None:
        return None
    root = Path(current_app.config["ARTIFACT_ROOT"]).resolve()
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return Path(path).name


def _public(outcome: dict | None) -> dict | None:
    """The reload outcome with every artifact path relative to the root, in fields and text."""
    if outcome is None:
        return None
    root = str(Path(current_app.config["ARTIFACT_ROOT"]).resolve())
    public = dict(outcome, artifact=_relative(outcome.get("artifact")))
    for key in ("error",):
        if isinstance(public.get(key), str):
            public[key] = public[key].replace(root + "/", "").replace(root, ".")
    if "warnings" in public:
        public["warnings"] = [w.replace(root + "/", "") for w in public["warnings"]]
    return public


def _audit(runtime, artifact: str | None, outcome: dict | None) -> None:
    """Reloads are recorded in the audit log too (who switched the model, from what to what)."""
    try:
        runtime.audit.write(
            {
                "event": "model_reload",
                "request_id": g.get("request_id"),
                "client_request_id": g.get("client_request_id"),
                "principal": g.principal.id,
                "role": g.principal.role,
                "endpoint": request.endpoint,
                "artifact": artifact,
                "status": "pending" if outcome is None else outcome["status"],
                "model_version": None if outcome is None else outcome["model_version"],
                "previous_version": None if outcome is None else outcome["previous_version"],
            }
        )
    except AuditError as exc:  # the reload happened; say so in the log rather than hide it
        log.error("reload by %s not recorded in the audit log: %s", g.principal.id, exc)
