"""What happens around every request: request id, authorisation, audit, metrics, access log.

Order for one request:

1. ``before_request``: start the clock, make this request's unique id (a client's own valid
   ``X-Request-ID`` is kept beside it as ``client_request_id``: two clients, or one retrying,
   may send the same), authorise (:func:`service.auth.authorize`, may answer 401/403), and
   hold a chunked body to the size limit (:mod:`service.body_limit`, may answer 413).
2. the view (or an error handler).
3. ``after_request``: for a patient-data endpoint called by an authenticated principal, append
   the audit line - if that fails, the answer is replaced by a 503 that holds no patient data;
   then security headers, metrics and the access log line.

The access log names the endpoint, never the URL: a URL can hold a raw patient id.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from flask import Flask, Request, Response, current_app, g, request

from .audit import AuditError
from .audit_fields import bounded, client_request_id
from .auth import authorize, is_patient_data, view_function
from .body_limit import buffer_chunked_body
from .errors import error_response

access_log = logging.getLogger("service.access")
log = logging.getLogger(__name__)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
#: Endpoint-specific audit fields, written when the view sets them (service/README.md).
AUDIT_EXTRA = (
    "history_items",
    "hook",
    "hook_instance",
    "user",
    "condition_ids",
    "cards",
    "feedback_outcomes",
    "patient_pseudonyms",
    "feedback_id",
    "decision",
    "recommendation_request_id",
    "fhir_calls",
)


def register(app: Flask) -> None:
    app.before_request(_begin)
    app.after_request(_finish)


def _begin() -> None:
    ctx, req = g._get_current_object(), request._get_current_object()
    ctx.started = time.perf_counter()
    ctx.request_id = uuid.uuid4().hex
    ctx.client_request_id = client_request_id(req.headers, _REQUEST_ID)
    app = current_app._get_current_object()
    authorize(app, req, ctx)
    buffer_chunked_body(req, app.config["MAX_CONTENT_LENGTH"])


def _finish(response: Response) -> Response:
    # The proxies (request, g, current_app) are resolved once: each access costs a lookup.
    app, req, ctx = (
        current_app._get_current_object(),
        request._get_current_object(),
        g._get_current_object(),
    )
    runtime = app.extensions["recommender"]
    view = view_function(app, req)
    principal = ctx.get("principal")
    if principal is not None and is_patient_data(view):
        response = _audit(runtime, req, ctx, principal, response)
    headers = response.headers
    headers["X-Request-ID"] = ctx.get("request_id", "")
    headers["Cache-Control"] = "no-store"
    headers["X-Content-Type-Options"] = "nosniff"
    endpoint = req.endpoint if view is not None else "unmatched"
    seconds = time.perf_counter() - ctx.get("started", time.perf_counter())
    runtime.metrics.observe(endpoint, req.method, response.status_code, seconds)
    if runtime.config["ACCESS_LOG"]:
        access_log.info(
            json.dumps(
                {
                    "request_id": ctx.get("request_id"),
                    "client_request_id": ctx.get("client_request_id"),
                    "principal": principal.id if principal else None,
                    "method": req.method,
                    "endpoint": endpoint,
                    "status": response.status_code,
                    "ms": round(seconds * 1000, 3),
                },
                separators=(",", ":"),
            )
        )
    return response


def _audit(runtime, req: Request, ctx, principal, response: Response) -> Response:
    """Append the audit line of a patient-data request; 503 without data if that fails."""
    served = ctx.get("served") or runtime.store.current
    details = ctx.get("audit", {})
    patient = details.get("patient_pseudonym")
    view_args = req.view_args
    if patient is None and view_args and "patient_id" in view_args:
        patient = served.pseudonym(view_args["patient_id"])
    record = {
        "event": "patient_data_access",
        "request_id": ctx.get("request_id"),
        "principal": principal.id,
        "role": principal.role,
        "endpoint": req.endpoint,
        "method": req.method,
        "patient_pseudonym": patient,
        "condition_id": details.get("condition_id"),
        "model_version": served.version,
        "treatment_ids": details.get("treatment_ids", []),
        "status": response.status_code,
        "error_code": _error_code(response) or ctx.get("error_code"),  # console: HTML errors
        "remote_addr": req.remote_addr,
    }
    record.update({key: details[key] for key in AUDIT_EXTRA if key in details})
    tenant = ctx.get("cds_tenant")
    if tenant:
        record["tenant"] = tenant
    if ctx.get("client_request_id"):
        record["client_request_id"] = ctx.client_request_id
    record = bounded(record, served.conditions, served.treatments)
    try:
        runtime.audit.write(record)
    except AuditError as exc:
        log.error("request %s refused: %s", ctx.get("request_id"), exc)
        runtime.metrics.audit_failures.inc()
        return error_response(
            503,
            "audit_unavailable",
            "the access could not be recorded in "
            "the audit log, so no patient data is returned; retry later",
        )
    return response


def _error_code(response: Response) -> str | None:
    if response.status_code < 400 or not response.is_json:
        return None
    body = response.get_json(silent=True) or {}
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("code") if isinstance(error, dict) else None
