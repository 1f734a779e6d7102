"""Shared machinery of the matrix-factorisation models (ALS, BPR, LMF).

Learned state: ``user_factors_`` float32 (n_p, d) and ``item_factors_`` float32 (n_t + n_f, d);
a score is the dot product of a patient's row with a treatment's row. Only the first ``n_t``
item rows are ever scored: side-information columns shape the factors but are never offered.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

import numpy as np
import pandas as pd

from ..exceptions import ParameterError
from ..utils.threads import single_threaded_blas
from .base import Query, Recommender, positive_part

if TYPE_CHECKING:
    from ..data.dataset import Dataset

log = logging.getLogger(__name__)


class FactorModel(Recommender):
    """Base of the factorisation models: scoring, fold-in for new patients, array state."""

    #: Columns at the end of the factor rows that implicit uses for biases, per side:
    #: (user columns, item columns) of constant ones that a folded-in user must keep.
    _bias_layout: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())

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
        return (self.user_factors_[query.patients] if query.patients is not None
                else self._fold_in(query.rows))

    def _factor_scores(self, users: np.ndarray, treatments: np.ndarray | None) -> np.ndarray:
        factors = (self.item_factors_[:self.dataset_.n_treatments] if treatments is None
                   else self.item_factors_[treatments])
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


# --- early stopping ---------------------------------------------------------------------------

class Validation:
    """Held-out outcome rows a factor model is scored on between training sweeps (early stopping).

    The score is NDCG@``k`` as :func:`recommender.evaluation.evaluate.evaluate` defines it: queries are
    (patient, condition) groups of ``test`` rows, ranked with every safety rule (with
    ``by_condition`` among the condition's treatments), relevance is "the held-out outcome
    worked", and the mean runs over queries with a relevant treatment.

    The exclusions do not change while a model trains, so the allowed (query, treatment) pairs
    are found once per dataset; each sweep then costs one dot product per allowed pair.

    Parameters
    ----------
    test : DataFrame
        Held-out outcome rows (columns of ``CohortTables.outcomes``), for example
        ``split.test`` of a :mod:`recommender.data.splits` split of the *training* tables; never the
        rows the final model is tested on.
    k : int
        NDCG cut-off.
    by_condition : bool
        Restrict each query to its condition's treatments, as the service does.
    """

    def __init__(self, test: pd.DataFrame, k: int = 10, by_condition: bool = True):
        self.test = test
        self.k = k
        self.by_condition = by_condition

    def score(self, model: "FactorModel") -> float:
        """Mean NDCG@k of the fitted factor ``model`` over the queries with a relevant treatment."""
        from ..evaluation import metrics
        from ..ranking.core import top_k

        plan = self._plan(model.dataset_)
        users, items = model.user_factors_, model.item_factors_
        top = np.full((len(plan.patients), self.k), -1, np.int64)
        for queries, candidates, excluded in plan.groups:
            scores = users[plan.patients[queries]] @ items[candidates].T
            scores[excluded] = -np.inf
            idx, _ = top_k(scores, self.k)
            top[queries] = np.where(idx >= 0, candidates[np.maximum(idx, 0)], -1)
        if len(plan.unrestricted):
            top[plan.unrestricted] = self._rank_unrestricted(model, plan)
        hits = np.isin(np.arange(len(top))[:, None] * plan.width + top, plan.relevant_keys)
        hits &= top >= 0
        ndcg = metrics.ndcg_at_k(hits, plan.n_relevant, self.k)
        return metrics.mean(ndcg[plan.n_relevant > 0])

    def _rank_unrestricted(self, model, plan) -> np.ndarray:
        """Top-k over every treatment for the queries without a condition."""
        from ..ranking.core import BATCH_SIZE, rank_patients

        patients = plan.patients[plan.unrestricted]
        return np.concatenate([
            rank_patients(model, patients[s:s + BATCH_SIZE], -1, None, self.k, False)[0]
            for s in range(0, len(patients), BATCH_SIZE)])

    def _plan(self, dataset: "Dataset") -> "_Plan":
        """The rows encoded against ``dataset`` and their exclusions (cached per dataset)."""
        cached = self.__dict__.get("_cached")
        if cached is None or cached[0] is not dataset:
            self._cached = (dataset, _Plan.build(dataset, self.test, self.by_condition))
        return self._cached[1]


@dataclass
class _Plan:
    """Validation queries encoded against one dataset.

    ``patients`` (n_q,) per query; ``groups`` one (queries, candidates, excluded) triple per
    condition: the queries asking about it, its candidate treatments (sorted, as
    :meth:`Dataset.candidates`) and a boolean (queries, candidates) mask of what the safety
    rules exclude; ``unrestricted`` the queries without a condition; ``relevant_keys`` =
    query * width + treatment of what worked and ``n_relevant`` (n_q,) their counts.
    """

    patients: np.ndarray
    groups: list
    unrestricted: np.ndarray
    relevant_keys: np.ndarray
    n_relevant: np.ndarray
    width: int

    @classmethod
    def build(cls, dataset: "Dataset", test: pd.DataFrame, by_condition: bool) -> "_Plan":
        from ..ranking import safety
        from ..evaluation.evaluate import build_queries

        queries = build_queries(dataset, test, by_condition)
        patients = queries.frame["patient"].to_numpy()
        conditions = queries.frame["condition"].to_numpy()
        width = dataset.n_treatments + 1
        restricted = np.flatnonzero(conditions >= 0)
        query = Query.known(dataset, patients[restricted], conditions[restricted])
        codes = safety.exclusion_codes(dataset, query, False,
                                       safety.active_treatments(dataset, query))
        banned = np.unique(restricted[np.repeat(np.arange(len(restricted)), np.diff(codes.indptr))]
                           * width + codes.indices)
        low = safety.low_evidence(dataset)
        groups = []
        for condition in np.unique(conditions[restricted]):
            members = restricted[conditions[restricted] == condition]
            candidates = dataset.candidates(condition)
            keys = members[:, None] * width + candidates[None, :]
            found = np.minimum(np.searchsorted(banned, keys), max(len(banned) - 1, 0))
            excluded = (banned[found] == keys) if len(banned) else np.zeros(keys.shape, bool)
            groups.append((members, candidates, excluded | low[candidates][None, :]))
        relevant = queries.items[queries.items["worked"]]
        q = relevant["query"].to_numpy()
        return cls(patients=patients, groups=groups, unrestricted=np.flatnonzero(conditions < 0),
                   relevant_keys=q * width + relevant["treatment"].to_numpy(),
                   n_relevant=np.bincount(q, minlength=len(patients)), width=width)


class StopTraining(Exception):
    """Raised by :class:`EarlyStopping` inside implicit's per-sweep callback to end ``fit``
    (implicit has no other way to stop early); the fitting model catches it."""


class EarlyStopping:
    """implicit ``fit`` callback: score the factors after every sweep, keep the best, stop after
    ``patience`` sweeps without a gain above ``tol``.

    Attributes (after training): ``scores`` (validation score per sweep), ``best_iteration``
    (1-based sweep of the best score), ``best_score``, and ``best`` (copies of the best
    (user, item) factors, None until the first sweep).
    """

    def __init__(self, model: "FactorModel", dataset: "Dataset", solver, validation: Validation,
                 patience: int, tol: float):
        self.model, self.dataset, self.solver = model, dataset, solver
        self.validation, self.patience, self.tol = validation, patience, tol
        self.scores: list[float] = []
        self.best_score, self.best_iteration, self.best = -np.inf, 0, None

    def __call__(self, iteration: int, elapsed: float, loss=None) -> None:
        model = self.model
        model.user_factors_, model.item_factors_ = self.solver.user_factors, self.solver.item_factors
        model.dataset_ = self.dataset  # scoring ranks through the model; fit() sets it anyway
        score = self.validation.score(model)
        if np.isnan(score):
            raise ParameterError("the validation rows hold no query with a treatment that worked, "
                                 "so there is nothing to stop on; give other held-out rows")
        self.scores.append(score)
        log.info("sweep %d: validation ndcg@%d %.5f (%.2fs)", iteration + 1, self.validation.k,
                 score, elapsed)
        if score > self.best_score + self.tol or self.best is None:
            self.best_score, self.best_iteration = score, iteration + 1
            self.best = (model.user_factors_.copy(), model.item_factors_.copy())
        elif iteration + 1 - self.best_iteration >= self.patience:
            raise StopTraining
