"""Console sign-in: a signed session cookie bound to an API token, and its CSRF token.

A clinician signs in to the console (``service/console``) with an API token. The token itself is
never kept: the session holds the principal's id, a *binding* - HMAC-SHA256 of the token's
SHA-256 under the session secret - the time it began, and a CSRF token. Every request looks the
binding up among the tokens in force, so revoking a token (and reloading) ends its sessions, and
the role is always the token's current one. A session ends ``CONSOLE_SESSION_LIFETIME`` seconds
after sign-in, however active (the cookie is not refreshed).

The cookie (:class:`ConsoleSessionInterface`) is Flask's signed cookie, scoped to ``/console``,
``HttpOnly``, ``SameSite=Strict``, and ``Secure`` over HTTPS (``CONSOLE_COOKIE_SECURE``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Mapping, MutableMapping
from datetime import timedelta
from pathlib import Path

from flask import Flask, Request, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

from .config import ConfigError
from .tokens import Principal, TokenStore

COOKIE_NAME = "recommender_console"
COOKIE_PATH = "/console"
CSRF_FIELD = "csrf_token"
#: Shortest session secret accepted from ``CONSOLE_SECRET_KEY_FILE``.
MIN_SECRET_BYTES = 32


class ConsoleSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, with ``Secure`` decided per request in ``auto`` mode."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """Flask's, without building the signing serializer when there is no cookie.

        Flask builds it (an HMAC key derivation) for every request, and only the console's
        paths ever carry the cookie; the answer is the same empty session either way, since
        the app always has a secret key (:func:`secret_key`).
        """
        if app.secret_key and not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        mode = app.config["CONSOLE_COOKIE_SECURE"]
        return mode == "true" or (mode == "auto" and request.is_secure)


def secret_key(config: Mapping) -> bytes:
    """The session secret: ``CONSOLE_SECRET_KEY_FILE``, or a fresh random one per app.

    A random secret is shared by the workers of a preloaded gunicorn (they fork from the master
    that built the app); sessions then end when the service restarts.

    Raises
    ------
    ConfigError
        The file cannot be read or holds fewer than 32 bytes.
    """
    path = config.get("CONSOLE_SECRET_KEY_FILE")
    if not path:
        return os.urandom(MIN_SECRET_BYTES)
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(
            f"RECOMMENDER_CONSOLE_SECRET_KEY_FILE: cannot read {path} ({exc.strerror})"
        ) from None
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"RECOMMENDER_CONSOLE_SECRET_KEY_FILE: {path} holds {len(key)} bytes; at least "
            f"{MIN_SECRET_BYTES} random bytes are needed (e.g. `openssl rand -hex 32 > {path}`)"
        )
    return key


def configure(app: Flask) -> None:
    """Install the console's session cookie on ``app`` (called by ``create_app``)."""
    app.secret_key = secret_key(app.config)
    app.session_interface = ConsoleSessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE_NAME,
        SESSION_COOKIE_PATH=COOKIE_PATH,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_REFRESH_EACH_REQUEST=False,
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=app.config["CONSOLE_SESSION_LIFETIME"]),
    )


def _binding(secret: bytes, digest: bytes) -> str:
    return hmac.new(secret, digest, hashlib.sha256).hexdigest()


def sign_in(session: MutableMapping, token: str, tokens: TokenStore, secret: bytes):
    """Start a session for ``token``; returns its principal, or None for an unknown token.

    The previous session (and its CSRF token) is discarded either way, so a session id planted
    before sign-in is worthless after it.
    """
    principal = tokens.authenticate(token)
    session.clear()
    if principal is None:
        return None
    digest = hashlib.sha256(token.encode("utf-8")).digest()
    session.update(
        principal=principal.id,
        binding=_binding(secret, digest),
        began=int(time.time()),
        csrf=secrets.token_urlsafe(32),
    )
    session.permanent = True
    return principal


def principal(
    session: Mapping, tokens: TokenStore, secret: bytes, lifetime: float
) -> Principal | None:
    """The signed-in principal of ``session``, or None (no session, expired, token revoked)."""
    binding, began = session.get("binding"), session.get("began")
    if not isinstance(binding, str) or not isinstance(began, int):
        return None
    if not 0 <= time.time() - began <= lifetime:
        return None
    found = None
    for digest, candidate in tokens.entries():  # every entry, as TokenStore.authenticate does
        if hmac.compare_digest(_binding(secret, digest), binding):
            found = candidate
    if found is None or found.id != session.get("principal"):
        return None
    return found


def csrf_token(session: MutableMapping) -> str:
    """The session's CSRF token (made for an anonymous session on first use)."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def csrf_valid(session: Mapping, sent: str | None) -> bool:
    """Whether ``sent`` (the form's ``csrf_token``) is this session's CSRF token."""
    expected = session.get("csrf")
    if not isinstance(expected, str) or not isinstance(sent, str) or not sent:
        return False
    return hmac.compare_digest(expected.encode(), sent.encode())
