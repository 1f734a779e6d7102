"""Shared machinery of the matrix-factorisation models (ALS, BPR, LMF).

Learned state: ``user_factors_`` float32 (n_p, d) and ``item_factors_`` float32 (n_t + n_f, d);
a score is the dot product of a patient's row with a treatment's row. Only the first ``n_t``
item rows are ever scored: side-information columns shape the factors but are never offered.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .base import Query, Recommender, positive_part


class FactorModel(Recommender):
    """Base of the factorisation models: scoring, fold-in for new patients, array state."""

    #: Columns at the end of the factor rows that implicit uses for biases, per side:
    #: (user columns, item columns) of constant ones that a folded-in user must keep.
    _bias_layout: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())

    def _score(self, query: Query) -> np.ndarray:
        n_t = self.dataset_.n_treatments
        users = (self.user_factors_[query.patients] if query.patients is not None
                 else self._fold_in(query.rows))
        return users @ self.item_factors_[:n_t].T

    def _fold_in(self, rows) -> np.ndarray:
        """Factors (n, d) for patients outside the training data.

        Generic rule for models without a closed-form solve: the confidence-weighted mean of the
        factors of the columns that worked for the patient (treatments and side features),
        with implicit's bias slots set as the trained users have them.
        """
        positive = positive_part(rows)
        weights = np.asarray(positive.sum(axis=1)).ravel()
        users = np.asarray(positive @ self.item_factors_) / np.maximum(weights, 1e-12)[:, None]
        users = users.astype(np.float32)
        for column in self._bias_layout[0]:
            users[:, column] = self.user_factors_[:, column].mean() if len(self.user_factors_) else 1.0
        return users

    def _state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_}

    def _load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.user_factors_ = arrays["user_factors"]
        self.item_factors_ = arrays["item_factors"]

    def _treatment_vectors(self):
        return self.treatment_factors

    @property
    def treatment_factors(self) -> np.ndarray:
        """Factors of the recommendable columns only, shape (n_t, d)."""
        return self.item_factors_[: self.dataset_.n_treatments]
