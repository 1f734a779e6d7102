"""Shared machinery of the matrix-factorisation models (ALS, BPR, LMF).

Learned state: ``user_factors_`` float32 (n_p, d) and ``item_factors_`` float32 (n_t + n_f, d);
a score is the dot product of a patient's row with a treatment's row. Only the first ``n_t``
item rows are ever scored: side-information columns shape the factors but are never offered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import numpy as np

from ..data.patient import Query
from ..exceptions import ParameterError
from ..utils.threads import single_threaded_blas
from .base import Recommender, positive_part

log = logging.getLogger(__name__)

#: ``callback(iteration, elapsed, loss)`` after each training sweep (implicit's shape); what it
#: returns is the sweep's validation score when the model stops early.
SweepCallback = Callable[[int, float, "float | None"], "float | None"]


class FactorModel(Recommender):
    """Base of the factorisation models: scoring, fold-in for new patients, array state."""

    #: Columns at the end of the factor rows that implicit uses for biases, per side:
    #: (user columns, item columns) of constant ones that a folded-in user must keep.
    _bias_layout: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())
    scores_are_factor_products = True

    def _score(self, query: Query) -> np.ndarray:
        return self._factor_scores(self._patient_factors(query), None)

    def patient_factors(self, query: Query) -> np.ndarray:
        """Factors float32 (len(query), d) of the query's patients (folded in when not known)."""
        self.check_fitted()
        with single_threaded_blas():
            return np.asarray(self._patient_factors(query), dtype=np.float32)

    def factor_scores(self, users: np.ndarray, treatments: np.ndarray | None = None) -> np.ndarray:
        """Scores float32 (len(users), n) of ``users`` (from :meth:`patient_factors`) for the
        treatment indices ``treatments`` (n of them), or for every treatment when None.

        What :meth:`score` computes, split so a caller ranking one patient for several
        conditions folds the patient in once and scores only each condition's candidates.
        """
        with single_threaded_blas():
            return np.asarray(self._factor_scores(users, treatments), dtype=np.float32)

    def _patient_factors(self, query: Query) -> np.ndarray:
        return (
            self.user_factors_[query.patients]
            if query.patients is not None
            else self._fold_in(query.rows)
        )

    def _factor_scores(self, users: np.ndarray, treatments: np.ndarray | None) -> np.ndarray:
        factors = (
            self.item_factors_[: self.dataset_.n_treatments]
            if treatments is None
            else self.item_factors_[treatments]
        )
        return users @ factors.T

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
            users[:, column] = (
                self.user_factors_[:, column].mean() if len(self.user_factors_) else 1.0
            )
        return users

    def _state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_}

    def _load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.user_factors_ = arrays["user_factors"]
        self.item_factors_ = arrays["item_factors"]

    def state_shapes(self, arrays) -> dict[str, tuple]:
        dataset = self.dataset_
        columns = dataset.n_treatments + len(dataset.features)
        return {"user_factors": (dataset.n_patients, "d"), "item_factors": (columns, "d")}

    def _treatment_vectors(self):
        return self.treatment_factors

    @property
    def treatment_factors(self) -> np.ndarray:
        """Factors of the recommendable columns only, shape (n_t, d)."""
        return self.item_factors_[: self.dataset_.n_treatments]


class StopTraining(Exception):
    """Raised by :class:`SweepMonitor` inside implicit's per-sweep callback to end ``fit``
    (implicit has no other way to stop early); the fitting model catches it."""


class SweepMonitor:
    """implicit ``fit`` callback of a factor model: exposes each sweep's factors on the model,
    calls the user's ``callback`` and, with ``patience`` (the model's ``early_stopping``),
    keeps the best-scoring sweep and stops after ``patience`` sweeps without a gain above ``tol``.

    Attributes (after training): ``scores`` (what the callback returned per sweep),
    ``best_iteration`` (1-based sweep of the best score) and ``best_score``.
    """

    def __init__(
        self,
        model: FactorModel,
        dataset,
        solver,
        callback: SweepCallback,
        patience: int | None,
        tol: float,
    ):
        self.model, self.dataset, self.solver, self.callback = model, dataset, solver, callback
        self.patience, self.tol = patience, tol
        self.scores: list = []
        self.best_score: float = -np.inf
        self.best_iteration = 0
        self._best: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, iteration: int, elapsed: float, loss=None) -> None:
        model = self.model
        model.user_factors_, model.item_factors_ = (
            self.solver.user_factors,
            self.solver.item_factors,
        )
        model.dataset_ = self.dataset  # the callback may rank through the model
        score = self.callback(iteration, elapsed, loss)
        self.scores.append(score)
        if self.patience is None:
            return
        if score is None:
            raise ParameterError(
                "early_stopping needs a callback that returns the sweep's validation score "
                "(e.g. Validation(rows).callback(model)); this one returned None"
            )
        log.info("sweep %d: validation score %.5f (%.2fs)", iteration + 1, score, elapsed)
        if score > self.best_score + self.tol or self._best is None:
            self.best_score, self.best_iteration = score, iteration + 1
            self._best = (model.user_factors_.copy(), model.item_factors_.copy())
        elif iteration + 1 - self.best_iteration >= self.patience:
            raise StopTraining

    def kept(self) -> tuple[np.ndarray, np.ndarray]:
        """The (user, item) factors to keep: the best sweep's when stopping early, else the last."""
        if self._best is not None:
            return self._best
        return self.solver.user_factors, self.solver.item_factors
