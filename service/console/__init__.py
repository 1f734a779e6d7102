"""The clinician console: server-rendered pages under ``/console`` over the same engine path.

- ``/console/login``: sign in with an API token (form POST); a signed, ``HttpOnly``,
  ``SameSite=Strict`` session cookie (``Secure`` over HTTPS), ``CONSOLE_SESSION_LIFETIME``
  seconds long (:mod:`service.sessions`). Roles are the API's: clinicians see patients, any
  role sees the model page.
- ``/console/patients/<id>``: what ``GET /v1/patients/{id}/recommendations`` answers (the same
  code, :mod:`service.recommendations`), drawn: predicted success or score with its interval,
  contributions, evidence with its Wilson interval, exclusions with reason and rule, the
  disclaimer; accept / override forms into the feedback store. Audited like the API.
- ``/console/new-patient``: a history typed in, answered by ``recommend_new``.
- ``/console/model``: the model card, and the reports kept with the artifact
  (:mod:`.model_page`).

Jinja templates with autoescaping, one stylesheet and one small script; a strict
Content-Security-Policy (no inline script or style) and a CSRF token on every form. On unless
``RECOMMENDER_CONSOLE=false``; operators' guide: ``service/README.md``.
"""

from __future__ import annotations

from flask import Flask

from .. import sessions


def register(app: Flask) -> None:
    """Install the session cookie and the console's blueprint on ``app``."""
    from .views import console

    sessions.configure(app)
    app.jinja_env.autoescape = True  # every template, whatever its file name
    app.register_blueprint(console)
