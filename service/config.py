"""Service configuration: defaults, then an optional JSON file, then ``RECOMMENDER_*`` variables,
then the mapping passed to ``create_app`` (tests)."""
from __future__ import annotations

import json
import os
from typing import Mapping

DEFAULTS = {
    "ARTIFACT": "artifacts/default",
    "MAX_K": 100,
    "DEFAULT_K": 10,
}
#: Environment variable -> (config key, converter).
ENVIRONMENT = {
    "RECOMMENDER_ARTIFACT": ("ARTIFACT", str),
    "RECOMMENDER_MAX_K": ("MAX_K", int),
}


def load_config(overrides: Mapping | None = None, environ: Mapping[str, str] | None = None) -> dict:
    environ = os.environ if environ is None else environ
    config = dict(DEFAULTS)
    path = environ.get("RECOMMENDER_CONFIG")
    if path:
        with open(path) as handle:
            config.update(json.load(handle))
    for variable, (key, convert) in ENVIRONMENT.items():
        if variable in environ:
            config[key] = convert(environ[variable])
    config.update(overrides or {})
    return config
