"""The one model contract every recommender implements.

A model is a scikit-learn style estimator: hyperparameters are keyword arguments stored as
given; ``fit(dataset)`` validates them, learns state (attributes ending in ``_``) and returns
``self``. Scoring, ranking with the safety exclusions, saving and loading are shared here, so a
model family only implements ``_fit``, ``_score`` and its array state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data.dataset import Dataset
from ..data.patient import Query
from ..exceptions import NotFittedError, ParameterError
from ..ranking import (
    RecommendationList,
    check_k,
    recommend_known,
    recommend_known_conditions,
    recommend_many,
    recommend_unknown,
    recommend_unknown_conditions,
    top_k,
)
from ..ranking.contributions import (
    MAX_CONTRIBUTIONS,
    describe_strongest,
    leave_one_out,
    strongest,
)
from ..utils.threads import single_threaded_blas
from . import persistence, registry
from .lookups import Lookups
from .params import Estimator


def positive_part(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Copy of ``matrix`` keeping only entries > 0 (what worked, and side columns)."""
    result = matrix.copy()
    result.data = np.where(result.data > 0, result.data, 0).astype(np.float32)
    result.eliminate_zeros()
    return result


class Recommender(Estimator, Lookups):
    """Base class. Subclasses set ``kind``, ``_constraints`` and implement the private hooks.

    A subclass with a ``kind`` is registered under it (:mod:`recommender.models.registry`), so
    artifacts, the CLI and :func:`~recommender.models.registry.make_model` find it by name.
    """

    kind: ClassVar[str] = ""
    #: Whether ``score`` is ``patient_factors(query) @ item_factors_[:n_t].T`` whatever the
    #: condition asked about (see :class:`~recommender.ranking.protocols.ScoringModel`); a
    #: subclass that overrides ``_score`` of a factor model must set it back to False.
    scores_are_factor_products: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("kind"):
            registry.register(cls)

    # --- fitting and scoring ------------------------------------------------------------------

    def fit(self, dataset: Dataset, show_progress: bool = False) -> Recommender:
        """Learn from ``dataset`` (its ``matrix``, CSR (n_p, n_t + n_f)); returns self.

        BLAS is limited to one thread inside: implicit parallelises itself and is slower with
        multithreaded BLAS underneath.
        """
        self._validate_params()
        with single_threaded_blas():
            self._fit(dataset, show_progress=show_progress)
        self.dataset_ = dataset
        return self

    @property
    def is_fitted(self) -> bool:
        return "dataset_" in self.__dict__

    def check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted: call fit(dataset) or load an artifact first"
            )

    def score(self, query: Query) -> np.ndarray:
        """Scores of every treatment, float32 array of shape (len(query), n_t); higher is better.

        Scores carry no safety rule: :mod:`recommender.ranking` applies the exclusions.
        """
        self.check_fitted()
        with single_threaded_blas():
            scores = self._score(query)
        return np.asarray(scores, dtype=np.float32)

    def _fit(self, dataset: Dataset, show_progress: bool) -> None:
        raise NotImplementedError

    def _score(self, query: Query) -> np.ndarray:
        raise NotImplementedError

    # --- persistence: arrays only -------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        """Learned arrays to save (names without dots)."""
        return {}

    def _load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore learned arrays from :meth:`_state` output (arrays may be memory-mapped)."""

    def state_shapes(self, arrays: Mapping[str, np.ndarray]) -> dict[str, tuple]:
        """The shape each array of :meth:`_state` must have for ``self.dataset_``: ints are
        exact lengths, strings name a dimension that must agree across arrays (see
        :mod:`recommender.models.verification`). ``arrays`` are the ones about to be loaded
        (for a family whose layout is itself saved)."""
        return {}

    def warm_up(self) -> None:
        """Derive now what answering derives lazily on first use: the id indices and the
        evidence of explanations, and a family's own state (ALS: its explanation solver).

        A server calls this before it forks its workers, so they share the result instead of
        each computing a private copy on its first request.
        """
        self.check_fitted()
        self.warm_lookups()

    def save(self, path, metrics: Mapping | None = None):
        """Write an artifact folder (see :mod:`recommender.models.persistence`); returns its path."""
        self.check_fitted()
        return persistence.save_artifact(self, path, metrics=metrics)

    @classmethod
    def load(cls, path, mmap: bool = True) -> Recommender:
        """Load an artifact written by :meth:`save`, verifying its checksums."""
        model = persistence.load_artifact(path, mmap=mmap).model
        if not isinstance(model, cls):
            raise ParameterError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    # --- explanations ---------------------------------------------------------------------------

    #: Whether a patient's own record changes the scores (False for the popularity baselines).
    personalised: ClassVar[bool] = True

    def contributions(self, query: Query, treatments: np.ndarray) -> list[list[tuple[int, float]]]:
        """For each treatment index, (matrix column, contribution to its score) pairs for the
        single patient in ``query``; see :mod:`recommender.ranking.contributions`."""
        if not self.personalised:
            return [[] for _ in treatments]
        return leave_one_out(self, query, treatments)

    def strongest_contributions(
        self, query: Query, treatments: np.ndarray, limit: int
    ) -> list[list[tuple[int, float]]]:
        """For each treatment index, the at most ``limit`` pairs of :meth:`contributions` whose
        magnitude is at least ``explain.MIN_CONTRIBUTION``, largest magnitude first (equal
        magnitudes keep the order of :meth:`contributions`)."""
        return [strongest(pairs, limit) for pairs in self.contributions(query, treatments)]

    def explanations(self, query: Query, treatments: np.ndarray, condition: int) -> list[dict]:
        """For each treatment index, the model's part of its explanation for the single patient
        of ``query`` asking about ``condition``: the ``basis`` and the ``contributions`` of the
        patient's record (the ranker adds the ``evidence``). Models with more to say (an
        interval, a harm probability) override it."""
        pairs = self.strongest_contributions(query, treatments, MAX_CONTRIBUTIONS)
        basis = (
            "the patient's own record, compared with patients with similar outcome histories"
            if self.personalised
            else "population outcome rates only; this model does not use the patient's own record"
        )
        return [
            {"basis": basis, "contributions": contributions}
            for contributions in describe_strongest(self.dataset_, query, pairs)
        ]

    def score_treatments(self, query: Query, treatments: np.ndarray) -> np.ndarray:
        """Scores float32 (len(query), len(treatments)) of the treatment indices asked for
        (what :meth:`score` gives for them; a model that can score a few alone overrides it)."""
        return self.score(query)[:, treatments]

    # --- similar treatments --------------------------------------------------------------------

    def _treatment_vectors(self):
        """Rows describing each treatment, shape (n_t, any): what ``similar`` compares.

        Default: which patients each treatment worked for (so non-factor models still answer).
        """
        history = self.dataset_.history
        worked = history.copy()
        worked.data = self.dataset_.policy.worked(history.data).astype(np.float32)
        worked.eliminate_zeros()
        return worked.T.tocsr()

    def similar(self, treatment_id: str, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` treatments most similar to ``treatment_id`` (cosine of the model's
        treatment vectors), most similar first, as (treatment_id, similarity) pairs."""
        self.check_fitted()
        k = check_k(k)
        treatments = self.dataset_.treatments
        target = treatments.index_of(treatment_id)
        vectors = self._treatment_vectors()
        if sp.issparse(vectors):
            norms = np.sqrt(np.asarray(vectors.multiply(vectors).sum(axis=1)).ravel())
            sims = np.asarray((vectors @ vectors[target].T).todense()).ravel()
        else:
            vectors = np.asarray(vectors, dtype=np.float64)
            norms = np.linalg.norm(vectors, axis=1)
            sims = vectors @ vectors[target]
        sims = (sims / np.maximum(norms * norms[target], 1e-12)).astype(np.float32)
        sims[target] = -np.inf
        idx, values = top_k(sims[None, :], k)
        keep = idx[0] >= 0
        return [
            (str(t), float(v))
            for t, v in zip(treatments.to_external(idx[0][keep]), values[0][keep])
        ]

    # --- ranking with exclusions (shared by every model) --------------------------------------

    def recommend(
        self,
        patient_id: str,
        k: int = 10,
        condition_id: str | None = None,
        include_tried: bool = False,
        active_treatments: Iterable[str] | None = None,
        explain: bool = True,
    ) -> RecommendationList:
        """Top-k treatments for a patient in the training data, safety rules applied.

        ``active_treatments`` adds treatment ids to those the record shows as active (for the
        interaction and duplicate-therapy checks; an ingredient id such as
        ``drug|hydrochlorothiazide`` counts for duplicate therapy); ``explain`` attaches contributions and evidence to each item.
        """
        return recommend_known(
            self,
            patient_id,
            k=k,
            condition_id=condition_id,
            include_tried=include_tried,
            active_treatments=active_treatments,
            explain=explain,
        )

    def recommend_batch(
        self,
        patient_ids: Sequence[str],
        k: int = 10,
        condition_ids: Sequence[str | None] | None = None,
        include_tried: bool = False,
        show_progress: bool = False,
    ) -> pd.DataFrame:
        """Top-k for many known patients: DataFrame (patient_id, condition_id, rank, treatment_id, score)."""
        return recommend_many(
            self,
            patient_ids,
            k=k,
            condition_ids=condition_ids,
            include_tried=include_tried,
            show_progress=show_progress,
        )

    def recommend_conditions(
        self,
        patient_id: str,
        condition_ids: Sequence[str | None],
        k: int = 10,
        include_tried: bool = False,
        active_treatments: Iterable[str] | None = None,
        explain: bool = True,
    ) -> list[RecommendationList]:
        """:meth:`recommend` for each of ``condition_ids``, the patient read and scored once."""
        return recommend_known_conditions(
            self,
            patient_id,
            condition_ids,
            k=k,
            include_tried=include_tried,
            active_treatments=active_treatments,
            explain=explain,
        )

    def recommend_new_conditions(
        self,
        history: Sequence[Mapping],
        conditions: Iterable[str],
        condition_ids: Sequence[str | None],
        k: int = 10,
        include_tried: bool = False,
        sex: str | None = None,
        birth_year: int | None = None,
        active_treatments: Iterable[str] | None = None,
        explain: bool = True,
        observations: Mapping[str, float] | None = None,
    ) -> list[RecommendationList]:
        """:meth:`recommend_new` for each of ``condition_ids``, the patient encoded once."""
        return recommend_unknown_conditions(
            self,
            history,
            conditions,
            condition_ids,
            k=k,
            include_tried=include_tried,
            sex=sex,
            birth_year=birth_year,
            active_treatments=active_treatments,
            explain=explain,
            observations=observations,
        )

    def recommend_new(
        self,
        history: Sequence[Mapping] = (),
        conditions: Iterable[str] = (),
        k: int = 10,
        condition_id: str | None = None,
        include_tried: bool = False,
        sex: str | None = None,
        birth_year: int | None = None,
        active_treatments: Iterable[str] | None = None,
        explain: bool = True,
        observations: Mapping[str, float] | None = None,
    ) -> RecommendationList:
        """Top-k for a patient outside the training data, given their outcome history.

        ``observations`` (code -> latest value, e.g. ``{"loinc|33914-3": 42}``) inform the
        models that use covariates (the outcome model)."""
        return recommend_unknown(
            self,
            history,
            conditions,
            k=k,
            condition_id=condition_id,
            include_tried=include_tried,
            sex=sex,
            birth_year=birth_year,
            active_treatments=active_treatments,
            explain=explain,
            observations=observations,
        )
