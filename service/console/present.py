"""What the console draws from an engine answer: labels, percentages and bar geometry.

Input is the body of ``GET /v1/patients/{id}/recommendations`` (``RecommendationList.to_dict()``)
as it is; nothing is recomputed. Bars are SVG rectangles on a 0-100 axis (``x``, ``width``), so
the templates need no inline style (the Content-Security-Policy forbids it). Every number a bar
shows is also written out as text next to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Outcome labels of the evidence counts, in the engine's order, as a person reads them.
OUTCOME_WORDS = {
    "responded": "responded",
    "partial": "partial response",
    "no_response": "no response",
    "worsened": "worsened",
    "adverse": "adverse outcome",
}
#: Exclusion reason codes (``recommender.ranking.safety``) in words.
REASONS = {
    "previous_harm": "harmed this patient before",
    "contraindicated": "contraindicated",
    "severe_interaction": "severe interaction with an active therapy",
    "duplicate_therapy": "same active ingredient as a current therapy",
    "insufficient_evidence": "too little evidence",
    "already_tried": "already tried",
}
_OUTCOME_BOUNDS = ((0.75, "responded"), (0.25, "partial response"), (-0.25, "no response"))


class Names:
    """Display names of therapies and conditions (the model's dictionaries, else the id)."""

    def __init__(self, treatments: Mapping[str, str], conditions: Mapping[str, str]):
        self.treatments, self.conditions = treatments, conditions

    def treatment(self, identifier: str) -> str:
        return self.treatments.get(identifier) or identifier

    def condition(self, identifier: str | None) -> str:
        if identifier is None:
            return "any condition"
        return self.conditions.get(identifier) or identifier


def percent(value: float | None) -> str:
    """``0.623`` -> ``"62%"``; ``"?"`` when unknown."""
    return "?" if value is None else f"{100 * value:.0f}%"


def _clip(value: float) -> float:
    return round(min(100.0, max(0.0, value)), 2)


def interval_bar(low: float | None, high: float | None, point: float | None) -> dict | None:
    """A probability interval on the 0-100 axis: ``{"x", "width", "point"}`` (None if unknown)."""
    if low is None or high is None:
        return None
    x = _clip(100 * low)
    return {
        "x": x,
        "width": max(0.5, _clip(100 * high) - x),
        "point": None if point is None else _clip(100 * point),
    }


def present_answer(body: Mapping, names: Names) -> dict:
    """The console's view of one answer: items, exclusions, notes, model and disclaimer."""
    items = body.get("recommendations", [])
    scores = [float(item["score"]) for item in items]
    span = max((abs(s) for s in scores), default=0.0) or 1.0
    model = body.get("model") or {}
    return {
        "condition_id": body.get("condition_id"),
        "condition_name": names.condition(body.get("condition_id")),
        "therapies": [_item(item, names, span) for item in items],
        "excluded": [_exclusion(entry, names) for entry in body.get("excluded", [])],
        "notes": list(body.get("notes", [])),
        "model": {
            "type": model.get("type"),
            "version": model.get("version"),
            "fingerprint": str(model.get("data_fingerprint") or "")[:12],
        },
        "disclaimer": model.get("disclaimer"),
    }


def _item(item: Mapping, names: Names, span: float) -> dict:
    explanation = item.get("explanation") or {}
    success = explanation.get("predicted_success")
    low, high = (explanation.get("predicted_success_ci95") or (None, None))[:2]
    score = float(item["score"])
    view: dict[str, Any] = {
        "rank": item["rank"],
        "treatment_id": item["treatment_id"],
        "name": item.get("treatment_name") or names.treatment(item["treatment_id"]),
        "score": score,
        "score_text": f"{score:.3f}",
        "basis": explanation.get("basis"),
        "flags": [
            {"severity": flag.get("severity", ""), "with": names.treatment(str(flag.get("with")))}
            for flag in item.get("flags") or []
        ],
        "contributions": contributions(explanation.get("contributions") or [], names),
        "evidence": evidence(explanation.get("evidence")),
    }
    if success is not None:
        harm = explanation.get("harm_probability")
        overlap = explanation.get("overlap") or {}
        view["success"] = {
            "text": percent(success),
            "low": percent(low),
            "high": percent(high),
            "bar": interval_bar(low, high, success),
            "harm": None if harm is None else percent(harm),
            "low_overlap": bool(overlap.get("low")),
            "propensity": percent(overlap.get("propensity")),
        }
    else:  # a ranking score, not a probability: a bar relative to the largest in the list
        view["score_bar"] = {
            "width": max(0.5, _clip(50 * abs(score) / span)),
            "negative": score < 0,
        }
    return view


def contributions(entries: list[Mapping], names: Names) -> list[dict]:
    """Diverging bars around the middle (50) of the axis, scaled to the largest magnitude."""
    largest = max((abs(float(e.get("contribution", 0.0))) for e in entries), default=0.0) or 1.0
    rows = []
    for entry in entries:
        value = float(entry.get("contribution", 0.0))
        width = max(0.5, round(50 * abs(value) / largest, 2))
        rows.append(
            {
                "label": contribution_label(entry, names),
                "value": f"{value:+.3f}",
                "raised": value > 0,
                "x": 50.0 if value > 0 else round(50 - width, 2),
                "width": width,
            }
        )
    return rows


def contribution_label(entry: Mapping, names: Names) -> str:
    """What one entry of the record is, in words (as the CDS Hooks cards say it)."""
    source = entry.get("source")
    if source == "outcome":
        outcome = float(entry.get("outcome", 0.0))
        word = next((w for bound, w in _OUTCOME_BOUNDS if outcome >= bound), None)
        word = word or ("worsened" if outcome >= -0.75 else "adverse outcome")
        return f"{names.treatment(str(entry.get('treatment_id')))}: {word}"
    if source == "condition":
        return f"diagnosis {names.condition(str(entry.get('id')))}"
    if source == "age_band":
        return f"age band {entry.get('id')}"
    if source == "sex":
        return f"sex {entry.get('id', entry.get('value', ''))}"
    if source == "age":
        return f"age {entry.get('value')}"
    if source == "observation":
        return f"{names.condition(str(entry.get('code')))} {entry.get('value')}"
    if source == "history":
        return f"outcomes of {entry.get('treatments_on_record', 0)} earlier therapies"
    if source == "line":
        return f"{entry.get('value', 0)} therapies already tried for this condition"
    return str(entry.get("id", source))


def evidence(entry: Mapping | None) -> dict | None:
    """Outcome counts on record and the response rate with its Wilson 95% interval."""
    if not entry:
        return None
    rate = entry.get("response_rate")
    low, high = (entry.get("response_rate_ci95") or (None, None))[:2]
    return {
        "scope": entry.get("scope"),
        "recorded": entry.get("outcomes_recorded", 0),
        "treated": entry.get("patients_treated", 0),
        "counts": [
            {"label": OUTCOME_WORDS.get(label, label.replace("_", " ")), "count": count}
            for label, count in (entry.get("outcomes") or {}).items()
        ],
        "rate": percent(rate) if rate is not None else None,
        "low": percent(low),
        "high": percent(high),
        "bar": interval_bar(low, high, rate) if rate is not None else None,
    }


def _exclusion(entry: Mapping, names: Names) -> dict:
    reason = entry.get("reason", "")
    return {
        "treatment_id": entry.get("treatment_id"),
        "name": entry.get("treatment_name") or names.treatment(str(entry.get("treatment_id"))),
        "reason": REASONS.get(reason, reason.replace("_", " ")),
        "rule": entry.get("rule") or reason,
        "detail": entry.get("detail", ""),
    }
