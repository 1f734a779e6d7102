"""Request validation: the JSON Schemas of request bodies and query strings, and a checker.

The same schema dictionaries go into ``/openapi.json`` (``service/openapi.py``) and validate the
requests here, so the published contract and the behaviour cannot drift apart. The checker
implements the subset of JSON Schema they use (type, properties, required,
additionalProperties: false, items, min/maxItems, min/maxLength, minimum/maximum, enum, anyOf,
and the ``date`` / ``date-time`` formats) and reports every problem with its JSON path.

Unknown fields are rejected everywhere: in bodies (``additionalProperties: false``) and in
query strings (a parameter the operation does not define is a 400).

Text is checked at this boundary too (:func:`recommender.utils.text.text_problem`): no string
anywhere in a body may hold a lone surrogate (JSON's ``\\ud800`` escape can send one, and it
cannot be encoded later), and a string a schema describes may hold no control character unless
the schema marks it free text (``"x-free-text": true``, which allows tab and line breaks).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from werkzeug.datastructures import MultiDict

from recommender.columns import OUTCOME_LABELS
from recommender.utils.text import text_problem

from .errors import ApiError

ID_MAX = 256
TRUE_FALSE = ("true", "false")
#: The JSON escape of a surrogate code point: only a body holding one needs the full text walk.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATE_TIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2})(\.\d{1,9})?"
    r"([Zz]|[+-]\d{2}:\d{2})?$"
)


#: JSON Schema ``pattern`` equivalents of the text check, for the published document.
IDENTIFIER_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
FREE_TEXT_PATTERN = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$"


def with_text_patterns(schema: Any) -> Any:
    """``schema`` with the text check stated as a ``pattern`` on each string (for OpenAPI).

    The checker here applies :func:`~recommender.utils.text.text_problem` instead, which names
    the character; the two accept the same strings (lone surrogates cannot be sent in a URL or
    as UTF-8, and a JSON escape of one is refused before any schema is consulted).
    """
    if isinstance(schema, list):
        return [with_text_patterns(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    copy = {key: with_text_patterns(value) for key, value in schema.items()}
    if "properties" in schema:  # names of properties, not schemas to walk
        copy["properties"] = {
            name: with_text_patterns(value) for name, value in schema["properties"].items()
        }
    if schema.get("type") == "string" and not {"enum", "format", "pattern"} & set(schema):
        free = schema.get("x-free-text", False)
        copy["pattern"] = FREE_TEXT_PATTERN if free else IDENTIFIER_PATTERN
    return copy


def identifier(description: str) -> dict:
    return {"type": "string", "minLength": 1, "maxLength": ID_MAX, "description": description}


def history_item_schema() -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["treatment_id", "outcome"],
        "properties": {
            "treatment_id": identifier(
                "therapy id as the model knows it; unknown ids are ignored and listed in notes"
            ),
            "outcome": {
                "anyOf": [
                    {"type": "number", "minimum": -1, "maximum": 1},
                    {"type": "string", "enum": list(OUTCOME_LABELS)},
                ],
                "description": "number in [-1, 1] (1 responded, -1 harmed) or a label",
            },
            "timestamp": {
                "anyOf": [
                    {"type": "string", "format": "date"},
                    {"type": "string", "format": "date-time"},
                ],
                "description": "ISO-8601 date or date-time; the latest outcome per therapy counts",
            },
            "adverse": {"type": "boolean", "description": "an adverse event was recorded"},
        },
    }


def new_patient_schema(config: Mapping) -> dict:
    """Body of ``POST /v1/recommendations`` for the limits in ``config``."""
    codes = {
        "type": "array",
        "maxItems": config["MAX_CONDITIONS"],
        "items": identifier("condition or allergy code"),
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "history": {
                "type": "array",
                "maxItems": config["MAX_HISTORY"],
                "items": history_item_schema(),
                "description": "the patient's treatment outcomes (may be empty)",
            },
            "conditions": {**codes, "description": "diagnoses (condition ids)"},
            "allergies": {
                **codes,
                "description": "allergy and other contraindication-relevant "
                "codes; merged with conditions",
            },
            "condition": identifier(
                "the condition being treated: only therapies recorded for it are candidates"
            ),
            "k": {
                "type": "integer",
                "minimum": 1,
                "maximum": config["MAX_K"],
                "description": f"list length (default {config['DEFAULT_K']})",
            },
            "include_tried": {
                "type": "boolean",
                "description": "rank therapies already tried (never a harmful one)",
            },
            "sex": {"type": "string", "minLength": 1, "maxLength": 32},
            "birth_year": {"type": "integer", "minimum": 1850, "maximum": 2200},
            "active_treatments": {
                "type": "array",
                "maxItems": config["MAX_CONDITIONS"],
                "items": identifier("treatment id, or ingredient id such as drug|metformin"),
                "description": "what the patient takes now: checked for severe interactions and "
                "duplicate therapy (an ingredient id for duplicate therapy only); unknown ids "
                "are listed in notes as not checked",
            },
        },
    }


def feedback_schema() -> dict:
    """Body of ``POST /v1/feedback``: a clinician's decision on one suggested therapy."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["feedback_id", "patient_id", "treatment_id", "decision"],
        "anyOf": [{"required": ["request_id"]}, {"required": ["model_version"]}],
        "description": "give the request_id of the recommendation answer, its model version, "
        "or both",
        "properties": {
            "feedback_id": {
                "type": "string",
                "minLength": 1,
                "maxLength": 128,
                "description": "the client's id of this decision; sending it again "
                "stores nothing new",
            },
            "request_id": identifier("X-Request-ID of the recommendation answer decided on"),
            "model_version": identifier("model version of that answer (its model.version)"),
            "patient_id": identifier(
                "the patient's id as the EHR knows it (pseudonymised by the service)"
            ),
            "treatment_id": identifier("the therapy decided on"),
            "decision": {"type": "string", "enum": ["accepted", "overridden"]},
            "reason": {
                "type": "string",
                "minLength": 1,
                "maxLength": 1000,
                "x-free-text": True,
                "description": "why it was overridden (no patient-identifying text)",
            },
        },
    }


def reload_schema() -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "artifact": {
                "type": "string",
                "minLength": 1,
                "maxLength": 4096,
                "description": "artifact folder to load, absolute or "
                "relative to RECOMMENDER_ARTIFACT_ROOT "
                "(default: the one being served, re-read)",
            }
        },
    }


def query_parameters(config: Mapping) -> dict[str, dict]:
    """Schemas of every query parameter, by name (each operation uses a subset)."""
    return {
        "k": {"type": "integer", "minimum": 1, "maximum": config["MAX_K"]},
        "condition": {"type": "string", "minLength": 1, "maxLength": ID_MAX},
        "include_tried": {"type": "boolean"},
        "active": {"type": "string", "minLength": 1, "maxLength": ID_MAX * ACTIVE_MAX},
    }


#: At most this many ids in the ``active`` query parameter.
ACTIVE_MAX = 50


def active_ids(text: str | None) -> list[str]:
    """The ids of an ``active`` query parameter (comma-separated; 400 for an empty or overlong
    id, or too many)."""
    if text is None:
        return []
    ids = [part.strip() for part in text.split(",")]
    if len(ids) > ACTIVE_MAX or not all(0 < len(i) <= ID_MAX for i in ids):
        raise ApiError(
            400,
            "invalid_parameter",
            f"active must be at most {ACTIVE_MAX} comma-separated ids of 1 to {ID_MAX} "
            f"characters; got {text[:80]!r}",
            {"field": "active"},
        )
    return ids


# --- checking -----------------------------------------------------------------------------------


def check(value: Any, schema: Mapping, path: str = "$") -> list[str]:
    """Problems of ``value`` against ``schema`` (empty when valid), each prefixed by its path."""
    if "anyOf" in schema:
        options = [check(value, option, path) for option in schema["anyOf"]]
        if all(options):
            return [f"{path}: {schema.get('description') or 'matches none of the allowed forms'}"]
    expected = schema.get("type")
    if expected and not _has_type(value, expected):
        return [f"{path}: expected {expected}, got {_json_type(value)}"]
    problems = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{path}: must be one of {schema['enum']}")
    if isinstance(value, str):
        problems += _check_string(value, schema, path)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{path}: must be >= {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{path}: must be <= {schema['maximum']}")
    elif isinstance(value, list):
        if len(value) > schema.get("maxItems", len(value)):
            return [f"{path}: at most {schema['maxItems']} items allowed, got {len(value)}"]
        if len(value) < schema.get("minItems", 0):
            return [f"{path}: at least {schema['minItems']} item(s) needed, got {len(value)}"]
        for number, item in enumerate(value):
            problems += check(item, schema.get("items", {}), f"{path}[{number}]")
    elif isinstance(value, dict):
        problems += _check_object(value, schema, path)
    return problems


def _check_string(value: str, schema: Mapping, path: str) -> list[str]:
    if len(value) < schema.get("minLength", 0):
        return [
            f"{path}: must not be empty"
            if schema["minLength"] == 1
            else f"{path}: at least {schema['minLength']} characters"
        ]
    if len(value) > schema.get("maxLength", len(value)):
        return [f"{path}: at most {schema['maxLength']} characters"]
    problem = text_problem(value, free_text=schema.get("x-free-text", False))
    if problem:
        return [f"{path}: {problem}"]
    fmt = schema.get("format")
    if fmt and not _valid_format(value, fmt):
        return [f"{path}: not an ISO-8601 {fmt}"]
    return []


def _check_object(value: dict, schema: Mapping, path: str) -> list[str]:
    properties = schema.get("properties", {})
    problems = [
        f"{path}: missing required field {name!r}"
        for name in schema.get("required", ())
        if name not in value
    ]
    if schema.get("additionalProperties") is False:
        problems += [
            f"{path}: unknown field {name!r} (allowed: {sorted(properties)})"
            for name in value
            if name not in properties
        ]
    for name, item in value.items():
        if name in properties:
            problems += check(item, properties[name], f"{path}.{name}")
    return problems


def _valid_format(value: str, fmt: str) -> bool:
    try:
        if fmt == "date":
            return bool(_DATE.match(value)) and bool(date.fromisoformat(value))
        if fmt == "date-time":
            match = _DATE_TIME.match(value)
            if not match:
                return False
            base, fraction, offset = match.groups()
            offset = "+00:00" if offset in (None, "Z", "z") else offset
            datetime.fromisoformat(base.upper() + (fraction or "")[:7] + offset)
            return True
    except ValueError:
        return False
    return True


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}


def _has_type(value: Any, expected: str) -> bool:
    if expected == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected == "null":
        return value is None
    return isinstance(value, _TYPES[expected])


def _json_type(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _has_type(value, name):
            return name
    return type(value).__name__


# --- requests -----------------------------------------------------------------------------------


def parse_json_body(content_type: str | None, raw: bytes) -> Any:
    """The JSON document of a request body.

    Raises
    ------
    ApiError
        415 when the body is not ``application/json``; 400 when it is not valid UTF-8 JSON
        (NaN and Infinity are not JSON and are refused too).
    """
    mimetype = (content_type or "").split(";", 1)[0].strip().lower()
    if mimetype != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"the body must be application/json; got {mimetype or 'no content type'}",
        )
    try:
        document = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "malformed_json", "the body is nested too deeply") from None
    if _SURROGATE_ESCAPE.search(raw):
        where = lone_surrogate(document)
        if where is not None:
            raise ApiError(
                400,
                "invalid_text",
                f"{where}: holds a lone surrogate, which is not Unicode text",
                {"field": where},
            )
    return document


def lone_surrogate(value: Any, path: str = "$") -> str | None:
    """The JSON path of the first string (or key) in ``value`` holding a lone surrogate."""
    if isinstance(value, str):
        return path if _has_surrogate(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if _has_surrogate(key):
                return f"{path} (a key)"
            found = lone_surrogate(item, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, list):
        for number, item in enumerate(value):
            found = lone_surrogate(item, f"{path}[{number}]")
            if found:
                return found
    return None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


def validate_body(document: Any, schema: Mapping) -> dict:
    """``document`` if it matches ``schema``; otherwise a 400 listing every problem."""
    problems = check(document, schema)
    if problems:
        raise ApiError(
            400,
            "invalid_body",
            problems[0]
            if len(problems) == 1
            else f"{len(problems)} problems in the body; see details",
            {"problems": problems[:50]},
        )
    return document


def parse_query(args: MultiDict, allowed: Mapping[str, dict]) -> dict[str, Any]:
    """Typed values of the query parameters in ``allowed`` (a name -> schema map).

    Raises
    ------
    ApiError
        400 for an unknown or repeated parameter, or a value outside its schema.
    """
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise ApiError(
            400,
            "unknown_parameter",
            f"unknown query parameter(s) {unknown}; allowed: {sorted(allowed)}",
            {"unknown": unknown},
        )
    values = {}
    for name in args:
        raw = args.getlist(name)
        if len(raw) > 1:
            raise ApiError(
                400,
                "invalid_parameter",
                f"query parameter {name!r} given {len(raw)} times; give it once",
                {"field": name},
            )
        values[name] = _convert(name, raw[0], allowed[name])
    return values


def _convert(name: str, raw: str, schema: Mapping) -> Any:
    kind = schema["type"]
    if kind == "integer":
        value = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else None
        if value is None or not schema["minimum"] <= value <= schema["maximum"]:
            raise ApiError(
                400,
                "invalid_parameter",
                f"{name} must be a whole number in "
                f"[{schema['minimum']}, {schema['maximum']}]; got {raw!r}",
                {"field": name, "minimum": schema["minimum"], "maximum": schema["maximum"]},
            )
        return value
    if kind == "boolean":
        if raw not in TRUE_FALSE:
            raise ApiError(
                400,
                "invalid_parameter",
                f"{name} must be true or false; got {raw!r}",
                {"field": name},
            )
        return raw == "true"
    problems = check(raw, schema, name)
    if problems:
        raise ApiError(400, "invalid_parameter", problems[0], {"field": name})
    return raw


def check_identifier(value: str, what: str) -> str:
    """A path identifier within the length limit and of proper text (400 otherwise)."""
    if not 1 <= len(value) <= ID_MAX:
        raise ApiError(
            400, "invalid_parameter", f"{what} must be 1-{ID_MAX} characters", {"field": what}
        )
    problem = text_problem(value)
    if problem:
        raise ApiError(400, "invalid_parameter", f"{what} {problem}", {"field": what})
    return value
