"""Who may call what: bearer tokens, roles, and the access rule of every view.

Every view requires a valid token unless marked :func:`public`; :func:`roles` narrows it to
some roles. Missing or unknown token: 401 with ``WWW-Authenticate: Bearer``; valid token of the
wrong role: 403. Tokens are hashed on arrival and compared with the stored hashes in constant
time (:class:`service.tokens.TokenStore`); a token is never stored, logged or echoed.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, Request, current_app, g, request, session

from . import sessions
from .errors import ApiError, CredentialError
from .tokens import ROLES, Principal, TokenStore

REALM = 'Bearer realm="recommender"'
#: Longest Authorization header value considered (tokens made here are 43 characters).
MAX_TOKEN_LENGTH = 512
_ACCESS = "_access"
_PATIENT_DATA = "_patient_data"
EVERYONE = frozenset(ROLES)
#: Access marker of the CDS Hooks views: the EHR's signed JWT instead of an API token.
CDS_CLIENT = "cds-client"


def public(view: Callable) -> Callable:
    """Mark a view as open to anyone (liveness and readiness probes only)."""
    setattr(view, _ACCESS, None)
    return view


def roles(*allowed: str) -> Callable[[Callable], Callable]:
    """Restrict a view to principals with one of ``allowed`` roles."""
    unknown = set(allowed) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown role(s) {sorted(unknown)}")

    def mark(view: Callable) -> Callable:
        setattr(view, _ACCESS, frozenset(allowed))
        return view

    return mark


def cds_client(view: Callable) -> Callable:
    """Mark a view as called by an EHR with its signed JWT (``service/cds_hooks/security.py``)."""
    setattr(view, _ACCESS, CDS_CLIENT)
    return view


class SignedIn(frozenset):
    """Access marker of the console's pages: the roles allowed, from the session cookie."""


def signed_in(*allowed: str) -> Callable[[Callable], Callable]:
    """Restrict a console page to a signed-in session (:mod:`service.sessions`) whose token has
    one of ``allowed`` roles (all roles when none is given)."""
    unknown = set(allowed) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown role(s) {sorted(unknown)}")

    def mark(view: Callable) -> Callable:
        setattr(view, _ACCESS, SignedIn(allowed or ROLES))
        return view

    return mark


def patient_data(view: Callable) -> Callable:
    """Mark a view as an access to patient data: every authenticated call is audited."""
    setattr(view, _PATIENT_DATA, True)
    return view


def view_function(app: Flask | None = None, req: Request | None = None) -> Callable | None:
    """The view the current request is routed to (None for a routing error).

    ``app`` and ``req`` are the current app and request when the caller already holds them
    (each access to Flask's ``current_app`` / ``request`` proxies costs a context lookup).
    """
    app = current_app if app is None else app
    req = request if req is None else req
    if req.url_rule is None:
        return None
    return app.view_functions.get(req.endpoint)


def is_patient_data(view: Callable | None) -> bool:
    return bool(view is not None and getattr(view, _PATIENT_DATA, False))


def authorize(app: Flask | None = None, req: Request | None = None, ctx=None) -> None:
    """``before_request``: authenticate and authorise, leaving ``g.principal`` when known.

    ``app``, ``req`` and ``ctx`` are the current app, request and ``g`` when the caller already
    holds them (see :func:`view_function`).

    Raises
    ------
    ApiError
        401 (``missing_token`` / ``invalid_token``) or 403 (``forbidden``).
    """
    app = current_app._get_current_object() if app is None else app
    req = request._get_current_object() if req is None else req
    ctx = g._get_current_object() if ctx is None else ctx
    view = view_function(app, req)
    if view is None or req.method == "OPTIONS":
        return  # unmatched URL or method: routing answers 404/405; CORS preflights carry no token
    allowed = getattr(view, _ACCESS, EVERYONE)
    if allowed is None:
        return
    if allowed == CDS_CLIENT:
        ctx.principal = authenticate_cds_client()
        return
    runtime = app.extensions["recommender"]
    if isinstance(allowed, SignedIn):
        principal = authenticate_session(app, runtime)
    else:
        principal = authenticate(req.headers.get("Authorization"), runtime.tokens, runtime.metrics)
    ctx.principal = principal
    if principal.role not in allowed:
        runtime.metrics.auth_failure("forbidden")
        raise ApiError(
            403,
            "forbidden",
            f"role {principal.role!r} may not call this endpoint; "
            f"it needs {' or '.join(sorted(allowed))}",
            {"role": principal.role, "allowed_roles": sorted(allowed)},
            {"WWW-Authenticate": f'{REALM}, error="insufficient_scope"'},
        )


def authenticate_cds_client() -> Principal:
    """The EHR behind a CDS Hooks call: its JWT issuer (401/503 when refused)."""
    runtime = current_app.extensions["recommender"]
    try:
        identity = runtime.cds.verifier.verify(
            request.headers.get("Authorization"), runtime.cds.audiences(request.path)
        )
    except CredentialError as exc:
        runtime.metrics.auth_failure("missing" if exc.code == "missing_token" else "invalid")
        headers = (
            {"WWW-Authenticate": f'{REALM}, error="invalid_token"'} if exc.status == 401 else None
        )
        raise ApiError(exc.status, exc.code, exc.message, None, headers) from None
    g.cds_tenant = identity.tenant
    return Principal(identity.issuer, CDS_CLIENT)


def authenticate_session(app: Flask, runtime) -> Principal:
    """The principal of the console session cookie (401 ``not_signed_in`` otherwise)."""
    found = sessions.principal(
        session, runtime.tokens, app.secret_key, app.config["CONSOLE_SESSION_LIFETIME"]
    )
    if found is None:
        runtime.metrics.auth_failure("invalid" if "binding" in session else "missing")
        raise ApiError(401, "not_signed_in", "sign in to the console with your API token")
    return found


def authenticate(header: str | None, tokens: TokenStore, metrics=None) -> Principal:
    """The principal of an ``Authorization: Bearer <token>`` header (401 otherwise).

    Refusals are counted in ``metrics`` (default: the current app's).
    """
    if metrics is None:
        metrics = current_app.extensions["recommender"].metrics
    if not header:
        metrics.auth_failure("missing")
        raise ApiError(
            401,
            "missing_token",
            "this endpoint needs an API token: send 'Authorization: Bearer <token>'",
            None,
            {"WWW-Authenticate": REALM},
        )
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_LENGTH:
        metrics.auth_failure("malformed")
        raise ApiError(
            401,
            "invalid_token",
            "the Authorization header must be 'Bearer <token>'",
            None,
            {"WWW-Authenticate": f'{REALM}, error="invalid_request"'},
        )
    principal = tokens.authenticate(token)
    if principal is None:
        metrics.auth_failure("invalid")
        raise ApiError(
            401,
            "invalid_token",
            "the API token is not valid (unknown or revoked)",
            None,
            {"WWW-Authenticate": f'{REALM}, error="invalid_token"'},
        )
    return principal
