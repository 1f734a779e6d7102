"""Held-out rows a factor model is scored on between its training sweeps (early stopping).

:class:`Validation` computes NDCG@k exactly as :func:`recommender.evaluation.evaluate.evaluate`
does, from the factors alone; :meth:`Validation.callback` turns it into the per-sweep callback
that ``ALSRecommender.fit(dataset, callback=...)`` stops on (patience and tolerance are the
model's ``early_stopping`` and ``tol``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data.dataset import Dataset
from ..data.patient import Query
from ..exceptions import ParameterError
from ..ranking import BATCH_SIZE, FactorScoringModel, rank_patients, safety, top_k
from . import metrics
from .queries import build_queries


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

    def callback(self, model: FactorScoringModel) -> Callable[..., float]:
        """An implicit-style ``fit`` callback ``(iteration, elapsed, loss) -> score`` that
        scores ``model`` after each sweep: what ``fit(dataset, callback=...)`` of a factor model
        with ``early_stopping`` stops on.

        Raises
        ------
        ParameterError
            When the rows hold no query with a treatment that worked (the score is NaN).
        """

        def score(iteration: int, elapsed: float, loss: float | None = None) -> float:
            value = self.score(model)
            if np.isnan(value):
                raise ParameterError(
                    "the validation rows hold no query with a treatment that "
                    "worked, so there is nothing to stop on; give other "
                    "held-out rows"
                )
            return value

        return score

    def score(self, model: FactorScoringModel) -> float:
        """Mean NDCG@k of the fitted factor ``model`` over the queries with a relevant treatment."""
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
        patients = plan.patients[plan.unrestricted]
        return np.concatenate(
            [
                rank_patients(model, patients[s : s + BATCH_SIZE], -1, None, self.k, False)[0]
                for s in range(0, len(patients), BATCH_SIZE)
            ]
        )

    def _plan(self, dataset: Dataset) -> _Plan:
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
    def build(cls, dataset: Dataset, test: pd.DataFrame, by_condition: bool) -> _Plan:

        queries = build_queries(dataset, test, by_condition)
        patients = queries.frame["patient"].to_numpy()
        conditions = queries.frame["condition"].to_numpy()
        width = dataset.n_treatments + 1
        restricted = np.flatnonzero(conditions >= 0)
        query = Query.known(dataset, patients[restricted], conditions[restricted])
        codes = safety.exclusion_codes(
            dataset, query, False, safety.active_treatments(dataset, query)
        )
        banned = np.unique(
            restricted[np.repeat(np.arange(len(restricted)), np.diff(codes.indptr))] * width
            + codes.indices
        )
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
        return cls(
            patients=patients,
            groups=groups,
            unrestricted=np.flatnonzero(conditions < 0),
            relevant_keys=q * width + relevant["treatment"].to_numpy(),
            n_relevant=np.bincount(q, minlength=len(patients)),
            width=width,
        )
