"""The clinician service: ``create_app`` builds a Flask app over a trained artifact."""
from __future__ import annotations

from typing import Mapping

from flask import Flask

from .api import api
from .config import load_config
from .errors import register_error_handlers
from .model_store import ModelStore


def create_app(config: Mapping | None = None) -> Flask:
    """Application factory: defaults -> config file -> environment -> ``config``."""
    app = Flask(__name__)
    app.config.update(load_config(config))
    app.json.sort_keys = False
    register_error_handlers(app)
    app.extensions["model_store"] = ModelStore(app.config["ARTIFACT"])
    app.register_blueprint(api)
    return app
