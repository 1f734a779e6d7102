"""Policies of a dataset: how outcomes become confidences, and the tunable parts of the safety rules.

:class:`ConfidencePolicy` decides what value each outcome puts into the training matrix.
implicit's ALS reads a matrix value ``v`` as preference 1 with confidence ``alpha * v`` when
``v > 0`` and preference 0 with confidence ``alpha * |v|`` when ``v < 0``; a missing entry is
preference 0 with confidence 1. So a positive value at or below ``1 / alpha`` is no more
confident than "never tried". This module makes the mapping explicit and the engine always fits
implicit with its own ``alpha = 1``, so the matrix holds confidences directly:

============================  ============  ==========================================
outcome ``o``                 preference    matrix value (confidence, signed)
============================  ============  ==========================================
``o > positive_threshold``    1             ``+(1 + alpha * o)``
``o <= positive_threshold``   0             ``-(1 + alpha * max(|o|, failure_floor))``
side-information column       1             ``+(1 + alpha * side_weight)``
============================  ============  ==========================================

With the defaults (alpha 4, threshold 0, floor 0.5): responded 5.0, partial 3.0,
no_response -3.0, worsened -3.0, adverse -5.0, a diagnosis column 3.0.

:class:`SafetyPolicy` holds the tunable thresholds of the safety rules, whose logic lives in
:mod:`recommender.ranking.safety`; ``SEVERITY_CODES`` codes the ``interactions`` table's
severities as the dataset stores them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..exceptions import ParameterError


@dataclass(frozen=True)
class ConfidencePolicy:
    """How outcomes become signed confidences (see the module docstring for the table).

    Parameters
    ----------
    alpha : float
        Confidence added per unit of |outcome|; must be > 0.
    positive_threshold : float
        Outcomes strictly above it count as "worked" (preference 1); in [-1, 1).
    failure_floor : float
        Minimum |outcome| used for a failure, so that "no effect" (0) is still a confident
        negative; in [0, 1].
    side_weight : float
        Strength of side-information columns (conditions, age band, sex) in outcome units; >= 0.
    """

    alpha: float = 4.0
    positive_threshold: float = 0.0
    failure_floor: float = 0.5
    side_weight: float = 0.5

    def __post_init__(self):
        checks = {
            "alpha": self.alpha > 0,
            "positive_threshold": -1 <= self.positive_threshold < 1,
            "failure_floor": 0 <= self.failure_floor <= 1,
            "side_weight": self.side_weight >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ParameterError(
                    f"ConfidencePolicy.{name} is out of range; got "
                    f"{getattr(self, name)!r} (see the policy's docstring)"
                )

    def worked(self, outcomes: np.ndarray) -> np.ndarray:
        """Boolean array: which outcomes count as the therapy having worked."""
        return np.asarray(outcomes) > self.positive_threshold

    def values(self, outcomes: np.ndarray) -> np.ndarray:
        """Signed confidences (float32, same shape) for outcomes in [-1, 1]."""
        outcomes = np.asarray(outcomes, dtype=np.float32)
        positive = 1.0 + self.alpha * outcomes
        negative = -(1.0 + self.alpha * np.maximum(np.abs(outcomes), self.failure_floor))
        return np.where(self.worked(outcomes), positive, negative).astype(np.float32)

    @property
    def side_value(self) -> float:
        """Matrix value of a side-information column."""
        return float(1.0 + self.alpha * self.side_weight)

    def to_dict(self) -> dict:
        return asdict(self)


SEVERE, MODERATE = 2, 1
SEVERITY_CODES = {"severe": SEVERE, "moderate": MODERATE}
#: What the duplicate_therapy rule may do with a candidate sharing an active ingredient.
DUPLICATE_MODES = ("exclude", "flag")


@dataclass(frozen=True)
class SafetyPolicy:
    """Tunable parts of the safety rules (the rules themselves are not optional).

    Parameters
    ----------
    min_support : int
        A treatment received by fewer patients than this in the training data is not offered.
    active_window_days : int
        A treatment that worked and started within this many days of the patient's latest
        recorded outcome counts as active for the interaction and duplicate-therapy checks.
    duplicates : {"exclude", "flag"}
        What the ``duplicate_therapy`` rule does with a candidate sharing an active ingredient
        with an active treatment: "exclude" it (the default), or keep it "flag"-ged as a dose
        change, for sites whose clinicians adjust a dose by ordering another strength. The
        active treatment itself is excluded either way.
    """

    min_support: int = 3
    active_window_days: int = 180
    duplicates: str = "exclude"

    def __post_init__(self):
        for name in ("min_support", "active_window_days"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ParameterError(
                    f"SafetyPolicy.{name} must be a whole number >= 0; got {value!r}"
                )
        if self.duplicates not in DUPLICATE_MODES:
            raise ParameterError(
                f"SafetyPolicy.duplicates must be one of {list(DUPLICATE_MODES)}; "
                f"got {self.duplicates!r}"
            )

    def to_dict(self) -> dict:
        return asdict(self)
