"""The OpenAPI 3 document of the service, built from the request schemas and the configuration.

Request bodies and query parameters come from ``service/schemas.py``, the same dictionaries
that validate requests; limits (``MAX_K``, history length) are those of the running
configuration. Response objects the engine produces are described with their required fields
and stay open (``additionalProperties``) so fields the engine adds do not break the contract.
``tests/service/test_openapi.py`` checks that every route is documented and that a fuzzer
finds no response the document does not allow.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from . import schemas
from .cds_hooks.feedback import feedback_schema
from .cds_hooks.views import request_schema

ERROR_STATUSES = {
    400: "Invalid request: parameter, body or JSON syntax (see error.code)",
    401: "Missing or invalid bearer token",
    403: "The token's role may not call this endpoint",
    404: "Unknown patient, condition or treatment id",
    413: "Body larger than RECOMMENDER_MAX_BODY_BYTES",
    415: "Body is not application/json",
    412: "Required prefetch missing: the model does not know the patient and the request "
    "lacks its conditions, medications or allergies",
    422: "Artifact refused; the current model keeps serving",
    503: "The audit log (or the feedback store) cannot be written; no patient data is returned",
}


def openapi_document(app: Flask) -> dict:
    """The document for ``app`` (built once per app, then reused)."""
    cached = app.extensions.get("recommender_openapi")
    if cached is None:
        cached = app.extensions["recommender_openapi"] = build(app.config)
    return cached


def build(config) -> dict[str, Any]:
    document = _rest(config)
    if config.get("CDS_ISSUERS"):
        _add_cds(document)
    _state_text_patterns(document)
    return document


def _state_text_patterns(document: dict) -> None:
    """Add the text check's ``pattern`` to request schemas: parameters and request bodies."""
    referenced = set()
    for path in document["paths"].values():
        for operation in path.values():
            for parameter in operation.get("parameters", []):
                parameter["schema"] = schemas.with_text_patterns(parameter["schema"])
            for media in operation.get("requestBody", {}).get("content", {}).values():
                referenced.add(media["schema"].get("$ref", "").rsplit("/", 1)[-1])
    components = document["components"]["schemas"]
    for name in referenced & set(components):
        components[name] = schemas.with_text_patterns(components[name])


def _rest(config) -> dict[str, Any]:
    query = schemas.query_parameters(config)
    k = _query("k", query["k"], f"list length (default {config['DEFAULT_K']})")
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Treatment recommender",
            "version": "1",
            "description": "Ranked therapy suggestions from historical outcomes. They "
            "support a clinician's decision and never replace it.",
        },
        "security": [{"bearerAuth": []}],
        "paths": {
            "/v1/patients/{patient_id}/recommendations": {
                "get": _operation(
                    "patientRecommendations",
                    "Top-k therapies for a patient in the model",
                    [
                        _path(
                            "patient_id",
                            "the patient's id as the EHR knows it (pseudonymised by the service)",
                        ),
                        k,
                        _query("condition", query["condition"], "condition being treated"),
                        _query(
                            "include_tried", query["include_tried"], "rank therapies already tried"
                        ),
                        _query(
                            "active",
                            query["active"],
                            f"comma-separated ids (at most {schemas.ACTIVE_MAX}) of what the "
                            "patient takes now, beyond the record: treatment ids, or ingredient "
                            "ids such as drug|metformin; checked for severe interactions and "
                            "duplicate therapy",
                        ),
                    ],
                    "RecommendationList",
                    [400, 401, 403, 404, 503],
                )
            },
            "/v1/recommendations": {
                "post": _operation(
                    "newPatientRecommendations",
                    "Top-k therapies for a patient outside the model",
                    [],
                    "RecommendationList",
                    [400, 401, 403, 404, 413, 415, 503],
                    body={
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/NewPatient"}
                            }
                        },
                    },
                )
            },
            "/v1/treatments/{treatment_id}/similar": {
                "get": _operation(
                    "similarTreatments",
                    "Therapies with the most similar learned profile",
                    [_path("treatment_id", "therapy id"), k],
                    "SimilarTreatments",
                    [400, 401, 404],
                )
            },
            "/v1/model": {
                "get": _operation("model", "The model being served", [], "ModelInfo", [401])
            },
            "/v1/model/card": {
                "get": _operation(
                    "modelCard",
                    "The model card of the model being served (Markdown)",
                    [],
                    None,
                    [401],
                    text="text/markdown",
                )
            },
            "/v1/feedback": {
                "post": _operation(
                    "feedback",
                    "A clinician accepted or overrode a suggested therapy (idempotent: "
                    "201 when stored, 200 when that feedback_id was already stored)",
                    [],
                    "FeedbackResult",
                    [400, 401, 403, 404, 413, 415, 503],
                    body={
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Feedback"}
                            }
                        },
                    },
                    extra={"201": _json("Stored", "FeedbackResult")},
                )
            },
            "/v1/admin/reload": {
                "post": _operation(
                    "reload",
                    "Load, verify and swap in an artifact (admin role)",
                    [],
                    "ReloadResult",
                    [400, 401, 403, 413, 415, 422],
                    body={
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ReloadRequest"}
                            }
                        },
                    },
                    extra={
                        "202": _json("Reload still running after RELOAD_TIMEOUT", "ReloadPending")
                    },
                )
            },
            "/health": {"get": _operation("health", "Liveness", [], "Status", [], public=True)},
            "/ready": {
                "get": _operation(
                    "ready",
                    "Readiness: model loaded and audit log writable",
                    [],
                    "Status",
                    [503],
                    public=True,
                )
            },
            "/metrics": {
                "get": _operation(
                    "metrics", "Prometheus metrics", [], None, [401], text="text/plain"
                )
            },
            "/openapi.json": {"get": _operation("openapi", "This document", [], "Document", [401])},
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "API token; its SHA-256 is in the tokens file",
                }
            },
            "schemas": {
                "NewPatient": schemas.new_patient_schema(config),
                "Feedback": schemas.feedback_schema(),
                "FeedbackResult": _object(
                    {
                        "status": {"type": "string", "enum": ["stored", "already_stored"]},
                        "feedback_id": _string(),
                    },
                    ["status", "feedback_id"],
                ),
                "ReloadRequest": schemas.reload_schema(),
                "RecommendationList": _recommendation_list(),
                "SimilarTreatments": _similar(),
                "ModelInfo": _model_info(),
                "ReloadResult": _object(
                    {
                        "status": {"type": "string", "enum": ["reloaded"]},
                        "artifact": _string(),
                        "model_version": _string(),
                        "previous_version": _string(),
                        "warnings": {"type": "array", "items": _string()},
                    },
                    ["status", "model_version", "previous_version"],
                ),
                "ReloadPending": _object(
                    {
                        "status": {"type": "string", "enum": ["pending"]},
                        "artifact": _string(nullable=True),
                        "message": _string(),
                    },
                    ["status"],
                ),
                "Status": _object({"status": _string(), "model_version": _string()}, ["status"]),
                "Document": {"type": "object"},
                "Error": _object(
                    {
                        "error": _object(
                            {
                                "code": _string(),
                                "message": _string(),
                                "details": {"type": "object"},
                            },
                            ["code", "message"],
                        )
                    },
                    ["error"],
                ),
            },
        },
    }


def _operation(
    operation_id: str,
    summary: str,
    parameters: list,
    schema: str | None,
    errors: list[int],
    *,
    body: dict | None = None,
    public: bool = False,
    text: str | None = None,
    extra: dict | None = None,
) -> dict:
    if text:
        ok = {"description": "OK", "content": {text: {"schema": {"type": "string"}}}}
    else:
        ok = _json("OK", schema)
    operation = {
        "operationId": operation_id,
        "summary": summary,
        "parameters": parameters,
        "responses": {
            "200": ok,
            **(extra or {}),
            **{str(s): _json(ERROR_STATUSES[s], "Error") for s in errors},
        },
    }
    if body is not None:
        operation["requestBody"] = body
    if public:
        operation["security"] = []
    return operation


def _json(description: str, schema: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _path(name: str, description: str) -> dict:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1, "maxLength": schemas.ID_MAX},
    }


def _query(name: str, schema: dict, description: str) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _string(nullable: bool = False) -> dict:
    return {"type": "string", "nullable": True} if nullable else {"type": "string"}


def _object(properties: dict, required: list[str]) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": True,
    }


def _recommendation_list() -> dict:
    item = _object(
        {
            "rank": {"type": "integer", "minimum": 1},
            "treatment_id": _string(),
            "score": {"type": "number"},
        },
        ["rank", "treatment_id", "score"],
    )
    excluded = _object(
        {"treatment_id": _string(), "reason": _string(), "detail": _string()},
        ["treatment_id", "reason", "detail"],
    )
    return _object(
        {
            "patient_id": _string(nullable=True),
            "condition_id": _string(nullable=True),
            "model": {"type": "object"},
            "recommendations": {
                "type": "array",
                "items": item,
                "description": "best first; fewer than k when the exclusions leave fewer therapies",
            },
            "excluded": {
                "type": "array",
                "items": excluded,
                "description": "therapies removed from the candidates, with the reason",
            },
            "notes": {"type": "array", "items": _string()},
        },
        ["patient_id", "condition_id", "model", "recommendations", "excluded"],
    )


def _similar() -> dict:
    item = _object(
        {
            "rank": {"type": "integer", "minimum": 1},
            "treatment_id": _string(),
            "similarity": {"type": "number"},
        },
        ["rank", "treatment_id", "similarity"],
    )
    return _object(
        {
            "treatment_id": _string(),
            "model": {"type": "object"},
            "similar": {"type": "array", "items": item},
        },
        ["treatment_id", "model", "similar"],
    )


def _model_info() -> dict:
    return _object(
        {
            "version": _string(),
            "created": _string(),
            "type": _string(),
            "params": {"type": "object"},
            "data": {"type": "object"},
            "metrics": {"type": "object"},
            "pseudonyms": {"type": "object"},
            "libraries": {"type": "object"},
            "artifact": _string(),
            "loaded_at": _string(),
        },
        ["version", "created", "type", "data", "metrics"],
    )


def _add_cds(document: dict) -> None:
    """CDS Hooks 2.0 endpoints (on when RECOMMENDER_CDS_ISSUERS is set): the EHR's signed JWT.

    Their request and response objects are the specification's; the schemas here name the
    required parts and stay open.
    """
    service_id = {
        "name": "service_id",
        "in": "path",
        "required": True,
        "description": "a service id from GET /cds-services",
        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
    }
    cds = [{"cdsJwt": []}]
    document["paths"]["/cds-services"] = {
        "get": _operation(
            "cdsDiscovery",
            "CDS Hooks discovery: services, hooks and prefetch templates (open)",
            [],
            "CdsDiscovery",
            [],
            public=True,
        )
    }
    call = _operation(
        "cdsService",
        "Call a CDS service (patient-view or order-select): cards",
        [service_id],
        "CdsResponse",
        [400, 401, 404, 412, 413, 415, 503],
        body={
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/CdsRequest"}}
            },
        },
    )
    feedback = _operation(
        "cdsFeedback",
        "Accepted / overridden cards (idempotent)",
        [service_id],
        "CdsFeedbackResult",
        [400, 401, 404, 413, 415, 503],
        body={
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/CdsFeedback"}}
            },
        },
    )
    for operation in (call, feedback):
        operation["security"] = cds
    document["paths"]["/cds-services/{service_id}"] = {"post": call}
    document["paths"]["/cds-services/{service_id}/feedback"] = {"post": feedback}
    components = document["components"]
    components["securitySchemes"]["cdsJwt"] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "the EHR's JWT signed with an asymmetric key (CDS Hooks 2.0): iss "
        "allowed, aud = the called URL, exp, iat, jti used once",
    }
    card = _object(
        {
            "uuid": _string(),
            "summary": {"type": "string", "maxLength": 139},
            "detail": _string(),
            "indicator": {"type": "string", "enum": ["info", "warning", "critical"]},
            "source": _object({"label": _string()}, ["label"]),
            "suggestions": {"type": "array", "items": {"type": "object"}},
            "selectionBehavior": {"type": "string", "enum": ["at-most-one", "any"]},
            "overrideReasons": {"type": "array", "items": {"type": "object"}},
            "links": {"type": "array", "items": {"type": "object"}},
        },
        ["summary", "indicator", "source"],
    )
    components["schemas"].update(
        {
            "CdsDiscovery": _object(
                {
                    "services": {
                        "type": "array",
                        "items": _object(
                            {
                                "hook": _string(),
                                "id": _string(),
                                "description": _string(),
                                "title": _string(),
                                "prefetch": {"type": "object"},
                            },
                            ["hook", "id", "description"],
                        ),
                    }
                },
                ["services"],
            ),
            "CdsRequest": request_schema(),
            "CdsResponse": _object({"cards": {"type": "array", "items": card}}, ["cards"]),
            "CdsFeedback": feedback_schema(),
            "CdsFeedbackResult": _object(
                {
                    "stored": {"type": "integer"},
                    "already_stored": {"type": "integer"},
                    "audit_only": {"type": "integer"},
                    "results": {
                        "type": "array",
                        "description": "one per feedback item, in order",
                        "items": _object(
                            {
                                "card": {"type": "string", "nullable": True},
                                "status": {
                                    "type": "string",
                                    "enum": [
                                        "stored",
                                        "already_stored",
                                        "audit_only",
                                        "unknown_card",
                                        "invalid",
                                    ],
                                },
                                "message": _string(),
                            },
                            ["card", "status"],
                        ),
                    },
                },
                ["stored", "already_stored", "audit_only", "results"],
            ),
        }
    )
