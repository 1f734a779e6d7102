"""The clinician service: ``create_app`` builds a Flask app over a trained artifact.

Nothing happens at import time. ``create_app`` reads the configuration (defaults -> JSON file
named by ``RECOMMENDER_CONFIG`` -> ``RECOMMENDER_*`` variables -> the ``config`` mapping), loads
and verifies the artifact with the pseudonymisation key, opens the audit log, reads the API
tokens and registers the blueprints. Any problem stops it with a
:class:`~service.config.ConfigError` naming the setting. Operators' guide: ``service/README.md``.
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import Flask

from .config import ConfigError, load_config

__all__ = ["create_app", "ConfigError"]


def create_app(config: Mapping | None = None) -> Flask:
    """Application factory.

    Parameters
    ----------
    config : mapping, optional
        Settings by key (``"ARTIFACT"``, ``"MAX_K"`` ...) overriding every other source.

    Raises
    ------
    ConfigError
        Missing or wrong setting, unreadable tokens file, audit log not writable, artifact
        missing/tampered/unkeyed, or a pseudonymisation key that does not match the artifact.
    """
    from . import middleware
    from .admin import admin
    from .api import api
    from .errors import register_error_handlers
    from .json_provider import OrjsonProvider
    from .ops import ops
    from .runtime import Runtime

    settings = load_config(config)
    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    app.config.update(settings)
    app.config["MAX_CONTENT_LENGTH"] = settings["MAX_BODY_BYTES"]
    app.json.sort_keys = False
    app.json.compact = True
    app.extensions["recommender"] = Runtime(app.config)
    register_error_handlers(app)
    middleware.register(app)
    for blueprint in (ops, api, admin):
        app.register_blueprint(blueprint)
    if settings["CDS_ISSUERS"]:
        _register_cds(app, settings)
    if settings["CONSOLE"]:
        from .console import register as register_console

        register_console(app)
    return app


def _register_cds(app: Flask, settings: Mapping) -> None:
    """The CDS Hooks blueprint, with CORS for browser-based EHRs when origins are configured."""
    from .cds_hooks.views import cds

    app.register_blueprint(cds)
    origins = list(settings["CDS_CORS_ORIGINS"])
    if origins:
        from flask_cors import CORS

        CORS(
            app,
            resources={r"/cds-services(/.*)?": {"origins": origins}},
            allow_headers=["Authorization", "Content-Type"],
            methods=["GET", "POST", "OPTIONS"],
            supports_credentials=False,
            max_age=3600,
        )
