"""The one recommendation path of the service: the REST API and the console both answer here.

Each function takes the model snapshot of the request and returns the engine's
``RecommendationList.to_dict()`` unchanged (``service/README.md``, *Endpoints*), so the JSON of
``GET /v1/patients/{id}/recommendations`` and the console's patient page cannot differ.
Client mistakes raise :class:`~service.errors.ApiError` (404 for unknown ids, 400 for a body
the engine refuses).
"""

from __future__ import annotations

from collections.abc import Mapping

from recommender.exceptions import DataValidationError, ParameterError, UnknownIdError

from .errors import ApiError
from .model_store import Served


def check_condition(served: Served, condition: str | None) -> None:
    """404 ``unknown_condition`` unless ``condition`` is None or known to the model."""
    if condition is not None and condition not in served.conditions:
        raise ApiError(
            404,
            "unknown_condition",
            f"unknown condition id {condition!r}: the model "
            "has no outcome, diagnosis or contraindication that mentions it",
            {"condition": condition},
        )


def for_patient(
    served: Served,
    patient_id: str,
    *,
    k: int,
    condition: str | None,
    include_tried: bool,
    active: list[str] | None = None,
) -> dict:
    """Top-``k`` therapies for a patient in the model (404 ``unknown_patient`` otherwise).

    ``active`` lists treatment ids the patient takes now (the duplicate-therapy rule's input);
    None means none beyond the patient's own history.
    """
    check_condition(served, condition)
    try:
        answer = served.model.recommend(
            patient_id,
            k=k,
            condition_id=condition,
            include_tried=include_tried,
            active_treatments=active,
        )
    except UnknownIdError:
        raise ApiError(
            404,
            "unknown_patient",
            f"unknown patient id {patient_id!r}: not in the "
            "model's training data; POST /v1/recommendations with the patient's "
            "history instead",
        ) from None
    return answer.to_dict()


def for_new_patient(served: Served, body: Mapping, default_k: int) -> dict:
    """Top-k therapies for a patient outside the model.

    Parameters
    ----------
    body : mapping
        A body already valid against :func:`service.schemas.new_patient_schema`.
    default_k : int
        ``k`` when the body gives none.
    """
    history = [history_item(item) for item in body.get("history", [])]
    condition = body.get("condition")
    check_condition(served, condition)
    try:
        answer = served.model.recommend_new(
            history=history,
            conditions=[*body.get("conditions", []), *body.get("allergies", [])],
            k=body.get("k", default_k),
            condition_id=condition,
            include_tried=body.get("include_tried", False),
            sex=body.get("sex"),
            birth_year=body.get("birth_year"),
            active_treatments=body.get("active_treatments"),
        )
    except (DataValidationError, ParameterError) as exc:
        raise ApiError(400, "invalid_body", str(exc)) from None
    except UnknownIdError as exc:
        raise ApiError(404, "unknown_id", str(exc)) from None
    return answer.to_dict()


def history_item(item: Mapping) -> dict:
    """A validated history item as the engine takes it (adverse as 0/1, upper-case ISO time)."""
    engine_item = {**item, "adverse": int(item.get("adverse", False))}
    if "timestamp" in item:
        engine_item["timestamp"] = item["timestamp"].upper()
    return engine_item


def recommended_ids(body: Mapping) -> list[str]:
    """The therapy ids of an answer, in rank order (what the audit line records)."""
    return [item["treatment_id"] for item in body.get("recommendations", [])]
