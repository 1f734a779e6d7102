"""Console forms -> the REST bodies they stand for, checked by the same JSON Schemas.

The new-patient form becomes a ``POST /v1/recommendations`` body and the decision form a
``POST /v1/feedback`` body; both then pass :func:`service.schemas.validate_body` with the API's
own schema, so a form accepts exactly what the API accepts. Unknown fields are refused, as the
API refuses them. Problems raise :class:`FormError` with one message per field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from werkzeug.datastructures import MultiDict

from .. import schemas
from ..errors import ApiError
from ..sessions import CSRF_FIELD

_ROW = re.compile(r"^history-(\d{1,5})-(treatment|outcome|date|adverse)$")
_SPLIT = re.compile(r"[\s,;]+")
NEW_PATIENT_FIELDS = {
    CSRF_FIELD,
    "condition",
    "conditions",
    "allergies",
    "k",
    "include_tried",
    "sex",
    "birth_year",
}
FEEDBACK_FIELDS = {
    CSRF_FIELD,
    "feedback_id",
    "patient_id",
    "treatment_id",
    "model_version",
    "request_id",
    "decision",
    "reason_code",
    "reason_text",
    "condition",
    "k",
    "include_tried",
}
#: Override reasons offered on the decision form (code -> what is stored as the reason).
OVERRIDE_REASONS = {
    "patient-preference": "Patient preference",
    "other-therapy-chosen": "Another therapy chosen on clinical grounds",
    "tried-before": "Already tried (not in the record)",
    "contraindication-not-recorded": "Contraindication or allergy not in the record",
    "cost-or-access": "Cost, coverage or availability",
    "other": "Other",
}
_FEEDBACK_ID = re.compile(r"^[0-9a-f]{32}$")


class FormError(Exception):
    """A form that cannot become a valid body; ``problems`` lists each, naming the field."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def _unknown(form: MultiDict, allowed: set[str], rows: bool = False) -> list[str]:
    names = [n for n in form if n not in allowed and not (rows and _ROW.match(n))]
    return [f"unknown field {name!r}" for name in sorted(names)]


def _integer(form: MultiDict, name: str, problems: list[str]) -> int | None:
    raw = form.get(name, "").strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.lstrip("-").isdigit() and len(raw) <= 9):
        problems.append(f"{name}: expected a whole number, got {raw!r}")
        return None
    return int(raw)


def history_rows(form: MultiDict, max_rows: int) -> list[dict]:
    """The history rows of the form by index: ``treatment``, ``outcome``, ``date``, ``adverse``."""
    rows: dict[int, dict] = {}
    for name in form:
        match = _ROW.match(name)
        if match and int(match.group(1)) < max_rows:
            rows.setdefault(int(match.group(1)), {})[match.group(2)] = form.get(name, "").strip()
    return [rows[index] for index in sorted(rows)]


def new_patient_body(form: MultiDict, config: Mapping) -> dict:
    """The ``POST /v1/recommendations`` body of the new-patient form.

    Raises
    ------
    FormError
        Unknown fields, a history row with an outcome but no therapy (or the reverse), a number
        that is not one, or anything the API's schema refuses.
    """
    problems = _unknown(form, NEW_PATIENT_FIELDS, rows=True)
    body: dict = {}
    history = []
    for number, row in enumerate(history_rows(form, config["MAX_HISTORY"]), start=1):
        treatment, outcome = row.get("treatment", ""), row.get("outcome", "")
        if not treatment and not outcome:
            continue  # a blank row
        if not treatment or not outcome:
            problems.append(f"history row {number}: give both the therapy and its outcome")
            continue
        item = {"treatment_id": treatment, "outcome": outcome}
        if row.get("date"):
            item["timestamp"] = row["date"]
        if row.get("adverse"):
            item["adverse"] = True
        history.append(item)
    if history:
        body["history"] = history
    for name in ("conditions", "allergies"):
        codes = [code for code in _SPLIT.split(form.get(name, "")) if code]
        if codes:
            body[name] = codes
    for name in ("condition", "sex"):
        if form.get(name, "").strip():
            body[name] = form[name].strip()
    for name in ("k", "birth_year"):
        value = _integer(form, name, problems)
        if value is not None:
            body[name] = value
    if form.get("include_tried"):
        body["include_tried"] = True
    if problems:
        raise FormError(problems)
    return _valid(body, schemas.new_patient_schema(config))


def feedback_body(form: MultiDict) -> dict:
    """The ``POST /v1/feedback`` body of a decision form.

    Raises
    ------
    FormError
        Unknown fields, an override without a reason, or anything the API's schema refuses.
    """
    problems = _unknown(form, FEEDBACK_FIELDS)
    body = {
        name: form[name].strip()
        for name in ("feedback_id", "patient_id", "treatment_id", "model_version", "request_id")
        if form.get(name, "").strip()
    }
    if "feedback_id" in body and not _FEEDBACK_ID.match(body["feedback_id"]):
        problems.append("feedback_id: expected the form's 32 hexadecimal digits")
    decision = form.get("decision", "")
    if decision:
        body["decision"] = decision
    code, text = form.get("reason_code", ""), " ".join(form.get("reason_text", "").split())
    if code and code not in OVERRIDE_REASONS:
        problems.append(f"reason_code: must be one of {sorted(OVERRIDE_REASONS)}")
    reason = ": ".join(part for part in (OVERRIDE_REASONS.get(code, ""), text) if part)
    if code == "other" and not text:
        problems.append("reason_text: describe the reason when it is 'Other'")
    if decision == "overridden" and not reason:
        problems.append("reason_code: an override needs a reason")
    if reason:
        body["reason"] = reason
    if problems:
        raise FormError(problems)
    return _valid(body, schemas.feedback_schema())


def _valid(body: dict, schema: Mapping) -> dict:
    try:
        return schemas.validate_body(body, schema)
    except ApiError as exc:
        problems = (exc.details or {}).get("problems") or [exc.message]
        raise FormError([problem.removeprefix("$.") for problem in problems]) from None
