"""Service configuration: defaults, then a JSON file, then ``RECOMMENDER_*`` variables, then the
mapping passed to ``create_app`` (later sources win).

The environment names are a contract operators and their scripts rely on; the full table, with
types and defaults, is in ``service/README.md``. Configuration is read once, when the app is
built, and checked as a whole: a wrong value stops the service with a message that names the
setting and the variable it came from.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from recommender.exceptions import RecommenderError

CONFIG_FILE_VARIABLE = "RECOMMENDER_CONFIG"


class ConfigError(RecommenderError):
    """The service configuration is incomplete or holds a wrong value."""


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated list (blank entries dropped)."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true/false, got {text!r}")


DEFAULTS: dict[str, Any] = {
    "ARTIFACT": "artifacts/default",
    "API_TOKENS_FILE": None,
    "PSEUDONYM_KEY_FILE": None,
    "AUDIT_LOG": None,
    "AUDIT_FSYNC": True,
    "AUDIT_FSYNC_INTERVAL_MS": 10,
    "MAX_K": 100,
    "DEFAULT_K": 10,
    "MAX_HISTORY": 500,
    "MAX_CONDITIONS": 200,
    "MAX_BODY_BYTES": 256 * 1024,
    "ARTIFACT_ROOT": None,
    "ACCESS_LOG": True,
    "RELOAD_TIMEOUT": 25.0,
    "FEEDBACK_LOG": None,
    "CDS_ISSUERS": (),
    "CDS_JWKS": None,
    "CDS_BASE_URL": None,
    "CDS_STORE": None,
    "CDS_CORS_ORIGINS": (),
    "CDS_MAX_CARDS": 3,
    "CDS_SUGGESTIONS": 3,
    "CDS_INFO_URL": None,
    "CDS_JWT_MAX_LIFETIME": 3600,
    "CDS_JTI_CACHE_SIZE": 100_000,
    "CDS_CARD_TTL_DAYS": 30,
    "CDS_FHIR_TIMEOUT": 5.0,
    "CDS_FHIR_MAX_CALLS": 10,
    "CDS_FHIR_ALLOW_HTTP": False,
    "CDS_FHIR_CA_FILE": None,
    "CDS_LOOKBACK_DAYS": 3650,
    "CDS_ICON_URL": None,
    "CDS_DETAIL": "short",
    "CONSOLE": True,
    "CONSOLE_SESSION_LIFETIME": 3600,
    "CONSOLE_SECRET_KEY_FILE": None,
    "CONSOLE_COOKIE_SECURE": "auto",
}

#: Environment variable -> (config key, converter). The first five are the operators' contract.
ENVIRONMENT: dict[str, tuple[str, Callable[[str], Any]]] = {
    "RECOMMENDER_ARTIFACT": ("ARTIFACT", str),
    "RECOMMENDER_API_TOKENS_FILE": ("API_TOKENS_FILE", str),
    "RECOMMENDER_PSEUDONYM_KEY_FILE": ("PSEUDONYM_KEY_FILE", str),
    "RECOMMENDER_AUDIT_LOG": ("AUDIT_LOG", str),
    "RECOMMENDER_MAX_K": ("MAX_K", int),
    "RECOMMENDER_DEFAULT_K": ("DEFAULT_K", int),
    "RECOMMENDER_MAX_HISTORY": ("MAX_HISTORY", int),
    "RECOMMENDER_MAX_CONDITIONS": ("MAX_CONDITIONS", int),
    "RECOMMENDER_MAX_BODY_BYTES": ("MAX_BODY_BYTES", int),
    "RECOMMENDER_AUDIT_FSYNC": ("AUDIT_FSYNC", _boolean),
    "RECOMMENDER_AUDIT_FSYNC_INTERVAL_MS": ("AUDIT_FSYNC_INTERVAL_MS", int),
    "RECOMMENDER_ARTIFACT_ROOT": ("ARTIFACT_ROOT", str),
    "RECOMMENDER_ACCESS_LOG": ("ACCESS_LOG", _boolean),
    "RECOMMENDER_RELOAD_TIMEOUT": ("RELOAD_TIMEOUT", float),
    "RECOMMENDER_FEEDBACK_LOG": ("FEEDBACK_LOG", str),
    "RECOMMENDER_CDS_ISSUERS": ("CDS_ISSUERS", _names),
    "RECOMMENDER_CDS_JWKS": ("CDS_JWKS", str),
    "RECOMMENDER_CDS_BASE_URL": ("CDS_BASE_URL", str),
    "RECOMMENDER_CDS_STORE": ("CDS_STORE", str),
    "RECOMMENDER_CDS_CORS_ORIGINS": ("CDS_CORS_ORIGINS", _names),
    "RECOMMENDER_CDS_MAX_CARDS": ("CDS_MAX_CARDS", int),
    "RECOMMENDER_CDS_SUGGESTIONS": ("CDS_SUGGESTIONS", int),
    "RECOMMENDER_CDS_INFO_URL": ("CDS_INFO_URL", str),
    "RECOMMENDER_CDS_JWT_MAX_LIFETIME": ("CDS_JWT_MAX_LIFETIME", int),
    "RECOMMENDER_CDS_JTI_CACHE_SIZE": ("CDS_JTI_CACHE_SIZE", int),
    "RECOMMENDER_CDS_CARD_TTL_DAYS": ("CDS_CARD_TTL_DAYS", int),
    "RECOMMENDER_CDS_FHIR_TIMEOUT": ("CDS_FHIR_TIMEOUT", float),
    "RECOMMENDER_CDS_FHIR_MAX_CALLS": ("CDS_FHIR_MAX_CALLS", int),
    "RECOMMENDER_CDS_FHIR_ALLOW_HTTP": ("CDS_FHIR_ALLOW_HTTP", _boolean),
    "RECOMMENDER_CDS_FHIR_CA_FILE": ("CDS_FHIR_CA_FILE", str),
    "RECOMMENDER_CDS_LOOKBACK_DAYS": ("CDS_LOOKBACK_DAYS", int),
    "RECOMMENDER_CDS_ICON_URL": ("CDS_ICON_URL", str),
    "RECOMMENDER_CDS_DETAIL": ("CDS_DETAIL", str),
    "RECOMMENDER_CONSOLE": ("CONSOLE", _boolean),
    "RECOMMENDER_CONSOLE_SESSION_LIFETIME": ("CONSOLE_SESSION_LIFETIME", int),
    "RECOMMENDER_CONSOLE_SECRET_KEY_FILE": ("CONSOLE_SECRET_KEY_FILE", str),
    "RECOMMENDER_CONSOLE_COOKIE_SECURE": ("CONSOLE_COOKIE_SECURE", str),
}

_KEY_TO_VARIABLE = {key: variable for variable, (key, _) in ENVIRONMENT.items()}
#: Keys whose value must be set (a path) for the service to start.
REQUIRED_PATHS = ("ARTIFACT", "API_TOKENS_FILE", "PSEUDONYM_KEY_FILE", "AUDIT_LOG")
#: Integer settings and their allowed range.
INT_RANGES = {
    "MAX_K": (1, 10_000),
    "DEFAULT_K": (1, 10_000),
    "MAX_HISTORY": (1, 100_000),
    "MAX_CONDITIONS": (1, 100_000),
    "MAX_BODY_BYTES": (1024, 64 * 2**20),
    "CDS_MAX_CARDS": (1, 20),
    "CDS_SUGGESTIONS": (1, 10),
    "CDS_JWT_MAX_LIFETIME": (10, 86_400),
    "CDS_JTI_CACHE_SIZE": (100, 10_000_000),
    "CDS_CARD_TTL_DAYS": (1, 3650),
    "CDS_FHIR_MAX_CALLS": (0, 50),
    "CDS_LOOKBACK_DAYS": (0, 36_500),
    "AUDIT_FSYNC_INTERVAL_MS": (0, 10_000),
    "CONSOLE_SESSION_LIFETIME": (60, 86_400),
}
#: Files kept beside the audit log unless configured (its folder must exist and be writable).
BESIDE_AUDIT_LOG = {"FEEDBACK_LOG": "feedback.jsonl", "CDS_STORE": "cds.sqlite"}
#: Internal keys set by the server, not by operators (see ``service/reload.py``).
INTERNAL = ("RELOAD_CONTROL_DIR",)


def load_config(
    overrides: Mapping | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The merged, checked configuration.

    Parameters
    ----------
    overrides : mapping, optional
        Highest-priority settings (``create_app(config)``), by config key (e.g. ``"MAX_K"``).
    environ : mapping, optional
        Environment to read (default ``os.environ``).

    Raises
    ------
    ConfigError
        Unknown key in the file or mapping, a value of the wrong type or range, or a required
        setting missing.
    """
    environ = os.environ if environ is None else environ
    given: dict[str, Any] = {}
    path = environ.get(CONFIG_FILE_VARIABLE)
    if path:
        given.update(_read_file(Path(path)))
    for variable, (key, convert) in ENVIRONMENT.items():
        if environ.get(variable, "") != "":
            try:
                given[key] = convert(environ[variable])
            except ValueError as exc:
                raise ConfigError(f"{variable}={environ[variable]!r}: {exc}") from None
    overrides = dict(overrides or {})
    _check_known(overrides, "create_app(config)")
    given.update(overrides)
    config = {**DEFAULTS, **given}
    if "DEFAULT_K" not in given and isinstance(config["MAX_K"], int):
        config["DEFAULT_K"] = min(config["DEFAULT_K"], config["MAX_K"])  # a small MAX_K wins
    return check_config(config)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{CONFIG_FILE_VARIABLE}: cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{CONFIG_FILE_VARIABLE}: {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{CONFIG_FILE_VARIABLE}: {path} must hold a JSON object of settings")
    _check_known(data, str(path))
    return data


def _check_known(settings: Mapping, where: str) -> None:
    unknown = sorted(set(settings) - set(DEFAULTS) - set(INTERNAL) - _FLASK_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {unknown}; known: {sorted(DEFAULTS)}")


#: Flask's own keys a test may pass through ``create_app(config)``.
_FLASK_KEYS = {"TESTING", "DEBUG", "PROPAGATE_EXCEPTIONS"}


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """Check types, ranges and required settings; returns ``config`` (normalised paths)."""
    for key, (low, high) in INT_RANGES.items():
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(
                f"{_name(key)} must be a whole number in [{low}, {high}]; got {value!r}"
            )
    if config["DEFAULT_K"] > config["MAX_K"]:
        raise ConfigError(
            f"{_name('DEFAULT_K')} ({config['DEFAULT_K']}) must not exceed "
            f"{_name('MAX_K')} ({config['MAX_K']})"
        )
    for key in ("AUDIT_FSYNC", "ACCESS_LOG", "CONSOLE"):
        if not isinstance(config[key], bool):
            raise ConfigError(f"{_name(key)} must be true or false; got {config[key]!r}")
    timeout = config["RELOAD_TIMEOUT"]
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 600:
        raise ConfigError(f"{_name('RELOAD_TIMEOUT')} must be seconds in (0, 600]; got {timeout!r}")
    missing = [_name(key) for key in REQUIRED_PATHS if not config.get(key)]
    if missing:
        raise ConfigError(
            f"missing required setting(s): {', '.join(missing)}; see service/README.md"
        )
    for key, name in BESIDE_AUDIT_LOG.items():
        if not config.get(key):
            config[key] = str(Path(config["AUDIT_LOG"]).expanduser().parent / name)
    _check_console(config)
    for key in (*REQUIRED_PATHS, "ARTIFACT_ROOT", "CONSOLE_SECRET_KEY_FILE", *BESIDE_AUDIT_LOG):
        if config.get(key) is not None:
            config[key] = str(Path(config[key]).expanduser())
    if config["ARTIFACT_ROOT"] is None:
        config["ARTIFACT_ROOT"] = str(Path(config["ARTIFACT"]).resolve().parent)
    return _check_cds(config)


#: ``CONSOLE_COOKIE_SECURE`` values: ``auto`` marks the cookie Secure when the request came over
#: HTTPS (as the WSGI server sees it; behind a TLS-terminating proxy set ``true``).
COOKIE_SECURE = ("auto", "true", "false")


def _check_console(config: dict[str, Any]) -> None:
    value = config["CONSOLE_COOKIE_SECURE"]
    if isinstance(value, bool):
        value = "true" if value else "false"
    if not isinstance(value, str) or value.strip().lower() not in COOKIE_SECURE:
        raise ConfigError(
            f"{_name('CONSOLE_COOKIE_SECURE')} must be one of {list(COOKIE_SECURE)}; got {value!r}"
        )
    config["CONSOLE_COOKIE_SECURE"] = value.strip().lower()
    key_file = config["CONSOLE_SECRET_KEY_FILE"]
    if key_file is not None and (not isinstance(key_file, str) or not key_file):
        raise ConfigError(f"{_name('CONSOLE_SECRET_KEY_FILE')} must be a path; got {key_file!r}")


def _check_cds(config: dict[str, Any]) -> dict[str, Any]:
    """CDS Hooks settings: off without issuers; with issuers, keys and the public URL required."""
    for key in ("CDS_ISSUERS", "CDS_CORS_ORIGINS"):
        value = config[key]
        if isinstance(value, str):
            value = _names(value)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{_name(key)} must be a comma-separated list; got {value!r}")
        config[key] = tuple(value)
    for key in ("CDS_JWKS", "CDS_BASE_URL", "CDS_INFO_URL", "CDS_ICON_URL", "CDS_FHIR_CA_FILE"):
        if config[key] is not None and (not isinstance(config[key], str) or not config[key]):
            raise ConfigError(f"{_name(key)} must be a non-empty text; got {config[key]!r}")
    for key in ("CDS_BASE_URL", "CDS_INFO_URL", "CDS_ICON_URL"):
        value = config[key]
        if value is not None and not (value.startswith("https://") or value.startswith("http://")):
            raise ConfigError(f"{_name(key)} must be an absolute http(s) URL; got {value!r}")
    timeout = config["CDS_FHIR_TIMEOUT"]
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 60:
        raise ConfigError(
            f"{_name('CDS_FHIR_TIMEOUT')} must be a number of seconds in (0, 60]; got {timeout!r}"
        )
    if not isinstance(config["CDS_FHIR_ALLOW_HTTP"], bool):
        raise ConfigError(f"{_name('CDS_FHIR_ALLOW_HTTP')} must be true or false")
    if config["CDS_DETAIL"] not in ("short", "full"):
        raise ConfigError(
            f"{_name('CDS_DETAIL')} must be 'short' or 'full'; got {config['CDS_DETAIL']!r}"
        )
    if config["CDS_ISSUERS"]:
        missing = [_name(key) for key in ("CDS_JWKS", "CDS_BASE_URL") if not config[key]]
        if missing:
            raise ConfigError(
                f"CDS Hooks is on ({_name('CDS_ISSUERS')} is set) but "
                f"{', '.join(missing)} is missing; see service/README.md"
            )
        config["CDS_BASE_URL"] = config["CDS_BASE_URL"].rstrip("/")
    return config


def _name(key: str) -> str:
    """How an operator sets ``key``: its environment variable (or the key itself)."""
    variable = _KEY_TO_VARIABLE.get(key)
    return f"{variable} ({key})" if variable else key
