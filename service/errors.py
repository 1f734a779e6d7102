"""One JSON error format for every error: ``{"error": {"code", "message", "details"?}}``.

Routing errors (404, 405), body errors (400, 413, 415), authentication (401, 403) and bugs
(500) all leave through :func:`error_response`; a client never sees HTML or a traceback.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Mapping

from flask import Flask, Response, g, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

#: Machine-readable codes of the HTTP errors Werkzeug raises for us.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    411: "length_required",
    413: "body_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    431: "headers_too_large",
    500: "internal_error",
}


class CredentialError(Exception):
    """Refused credentials (a client's signed JWT): HTTP status, error code and a message
    naming what was wrong. The authentication hook (:mod:`service.auth`) turns it into an
    :class:`ApiError`; the verifiers that raise it (:mod:`service.cds_hooks.security`) sit above."""

    def __init__(self, code: str, message: str, status: int = 401):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


class ApiError(Exception):
    """An error the client can act on: HTTP status, machine-readable code, message, details.

    Parameters
    ----------
    status : int
        HTTP status code.
    code : str
        Stable snake_case identifier clients can branch on (listed in ``service/README.md``).
    message : str
        What was wrong and what was expected, for a person.
    details : mapping, optional
        Structured specifics (the offending field, allowed range ...).
    headers : mapping, optional
        Extra response headers (e.g. ``WWW-Authenticate``).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details, self.headers = details, headers


#: An absolute file-system path of at least two parts (not an API path, not inside a URL).
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])/(?!v1/|cds-services)(?:[\w.@+~-]+/)+([\w.@+~-]*)")


def without_paths(value):
    """``value`` (text, or a JSON-like structure of it) with absolute paths of this machine
    cut to their last part: error bodies never show the server's file layout."""
    if isinstance(value, str):
        return _ABSOLUTE_PATH.sub(lambda match: match.group(1) or ".", value)
    if isinstance(value, Mapping):
        return {key: without_paths(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_paths(item) for item in value]
    return value


def error_response(
    status: int,
    code: str,
    message: str,
    details: Mapping | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body = {"error": {"code": code, "message": without_paths(message)}}
    if details:
        body["error"]["details"] = without_paths(dict(details))
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(error: ApiError):
        return error_response(error.status, error.code, error.message, error.details, error.headers)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        status = error.code or 500
        headers = {name: value for name, value in error.get_headers() if name.lower() == "allow"}
        message = error.description or error.name
        if status == 413:
            message = (
                f"request body larger than {app.config['MAX_CONTENT_LENGTH']} bytes "
                "(RECOMMENDER_MAX_BODY_BYTES)"
            )
        return error_response(status, HTTP_CODES.get(status, "http_error"), message, None, headers)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        # A bug. The traceback is logged without the exception's message, which could quote a
        # raw identifier from the request; the client gets no detail at all.
        frames = "".join(traceback.format_tb(error.__traceback__))
        log.error("request %s: unhandled %s\n%s", g.get("request_id"), type(error).__name__, frames)
        return error_response(
            500,
            "internal_error",
            "internal server error; the request id in X-Request-ID identifies it in the server log",
        )
