"""Non-personalised baselines: overall popularity and per-condition success rate."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..data.patient import Query
from .base import Recommender
from .params import real


class PopularRecommender(Recommender):
    """Ranks treatments by how many patients they worked for; the same list for everyone.

    Learned state: ``scores_`` float32 (n_t,), the number of patients whose latest outcome with
    the treatment counts as worked, plus a tie-break of 1e-6 per patient who received it.
    """

    kind = "popular"
    personalised = False

    def __init__(self):
        pass

    def _fit(self, dataset, show_progress: bool) -> None:
        history = dataset.history
        worked = dataset.policy.worked(history.data)
        counts = np.bincount(history.indices[worked], minlength=dataset.n_treatments)
        self.scores_ = (counts + 1e-6 * dataset.treatment_support).astype(np.float32)

    def _score(self, query: Query) -> np.ndarray:
        return np.broadcast_to(self.scores_, (len(query), len(self.scores_))).copy()

    def _state(self) -> dict[str, np.ndarray]:
        return {"scores": self.scores_}

    def state_shapes(self, arrays) -> dict[str, tuple]:
        return {"scores": (self.dataset_.n_treatments,)}

    def _load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.scores_ = arrays["scores"]


class ConditionPopularRecommender(Recommender):
    """Per-condition success rate: what a guideline-following clinician would choose.

    For each (condition, treatment) the smoothed rate of outcomes that worked,
    ``(successes + m * overall_rate) / (outcomes + m)`` with ``m = prior_strength``. A request
    about a condition ranks by that condition's rates; otherwise by the best rate over the
    patient's recorded conditions; treatments never given for those conditions fall back to
    their overall rate, scaled below any condition-specific rate.

    Learned state: ``rates_`` float32 (n_c, n_t), ``seen_`` bool (n_c, n_t) and
    ``overall_`` float32 (n_t,).

    Parameters
    ----------
    prior_strength : float
        Pseudo-outcomes pulling a rate with little evidence towards the treatment's overall rate.
    """

    kind = "condition-popular"
    personalised = False
    _constraints = {"prior_strength": real(0)}

    def __init__(self, prior_strength: float = 2.0):
        self.prior_strength = prior_strength

    def _fit(self, dataset, show_progress: bool) -> None:
        history = dataset.history
        worked = dataset.policy.worked(history.data).astype(np.float64)
        tried = np.bincount(history.indices, minlength=dataset.n_treatments)
        successes = np.bincount(history.indices, weights=worked, minlength=dataset.n_treatments)
        self.overall_ = ((successes + 1.0) / (tried + 2.0)).astype(np.float32)
        outcomes = dataset.condition_outcomes.toarray()
        wins = dataset.condition_successes.toarray()
        m = self.prior_strength
        self.rates_ = ((wins + m * self.overall_) / np.maximum(outcomes + m, 1e-12)).astype(
            np.float32
        )
        self.seen_ = outcomes > 0

    def _score(self, query: Query) -> np.ndarray:
        table = np.where(self.seen_, 1.0 + self.rates_, 0.0).astype(np.float32)  # (n_c, n_t)
        scores = np.tile(self.overall_ * 1e-3, (len(query), 1))  # below every condition's rate
        asked = query.conditions >= 0
        scores[asked] = np.maximum(scores[asked], table[query.conditions[asked]])
        unasked = np.flatnonzero(~asked)
        own = query.patient_conditions[unasked].tocoo()
        for condition in np.unique(own.col):
            rows = unasked[own.row[own.col == condition]]
            scores[rows] = np.maximum(scores[rows], table[condition])
        return scores

    def _state(self) -> dict[str, np.ndarray]:
        return {"rates": self.rates_, "seen": self.seen_, "overall": self.overall_}

    def state_shapes(self, arrays) -> dict[str, tuple]:
        shape = (len(self.dataset_.conditions), self.dataset_.n_treatments)
        return {"rates": shape, "seen": shape, "overall": (self.dataset_.n_treatments,)}

    def _load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.rates_, self.seen_, self.overall_ = arrays["rates"], arrays["seen"], arrays["overall"]
