"""The answer a clinician sees: ranked treatments, what was excluded and why, and the model."""

from __future__ import annotations

from dataclasses import dataclass, field

from .protocols import ScoringModel

DISCLAIMER = (
    "Decision support only: these suggestions rest on historical outcomes of similar "
    "patients and support, never replace, the clinician's judgment."
)


@dataclass
class Recommendation:
    rank: int
    treatment_id: str
    score: float
    explanation: dict | None = None
    flags: list = field(default_factory=list)
    treatment_name: str | None = None


@dataclass
class Exclusion:
    treatment_id: str
    reason: str
    detail: str
    rule: str = ""
    treatment_name: str | None = None


@dataclass
class RecommendationList:
    """One answer: the ranked treatments, what was excluded and why, and the model's identity."""

    patient_id: str | None
    condition_id: str | None
    recommendations: list[Recommendation]
    excluded: list[Exclusion]
    model: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-able form; optional parts are omitted when empty."""
        recommendations = []
        for item in self.recommendations:
            entry = {"rank": item.rank, "treatment_id": item.treatment_id, "score": item.score}
            if item.treatment_name:
                entry["treatment_name"] = item.treatment_name
            if item.explanation is not None:
                entry["explanation"] = item.explanation
            if item.flags:
                entry["flags"] = item.flags
            recommendations.append(entry)
        result: dict[str, object] = {
            "patient_id": self.patient_id,
            "condition_id": self.condition_id,
            "model": self.model,
            "recommendations": recommendations,
            "excluded": [
                {k: v for k, v in vars(e).items() if v is not None} for e in self.excluded
            ],
        }
        if self.notes:
            result["notes"] = self.notes
        return result

    @property
    def treatment_ids(self) -> list[str]:
        return [r.treatment_id for r in self.recommendations]


def model_summary(model: ScoringModel) -> dict:
    """The model identity attached to every answer: kind, version and data fingerprint."""
    info = {"type": model.kind}
    manifest = getattr(model, "manifest_", None)
    if manifest:
        info.update(
            version=manifest.get("version"),
            data_fingerprint=manifest.get("data", {}).get("fingerprint"),
        )
    info["disclaimer"] = DISCLAIMER
    return info
