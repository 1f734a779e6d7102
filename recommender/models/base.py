"""The one model contract every recommender implements.

A model is a scikit-learn style estimator: hyperparameters are keyword arguments stored as
given; ``fit(dataset)`` validates them, learns state (attributes ending in ``_``) and returns
``self``. Scoring, ranking with the safety exclusions, saving and loading are shared here, so a
model family only implements ``_fit``, ``_score`` and its array state.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..exceptions import NotFittedError, ParameterError
from ..utils.sparse_rows import take_rows
from ..utils.threads import single_threaded_blas

if TYPE_CHECKING:  # imported lazily at run time to keep the module graph acyclic
    from ..data.dataset import Dataset
    from ..ranking.core import RecommendationList


@dataclass
class Query:
    """The patients to score.

    Attributes
    ----------
    rows : CSR (n, n_t + n_f) float32
        Each patient's matrix row (signed confidences, side columns included).
    patients : ndarray of int, shape (n,), or None
        Dataset indices of known patients; None for patients outside the training data.
    conditions : ndarray of int, shape (n,)
        Condition index each request asks about, -1 for none.
    patient_conditions : CSR (n, n_c) bool
        Each patient's diagnoses and allergies.
    history : CSR (n, n_t) float32
        Latest outcome per tried treatment (explicit zeros kept), as in ``Dataset.history``.
    harmful : CSR (n, n_t) bool
        Treatments that harmed the patient, as in ``Dataset.harmful``.
    history_days : CSR (n, n_t) float32
        Day of each ``history`` entry, as in ``Dataset.history_days``.
    """

    rows: sp.csr_matrix
    patients: np.ndarray | None
    conditions: np.ndarray
    patient_conditions: sp.csr_matrix
    history: sp.csr_matrix
    harmful: sp.csr_matrix
    history_days: sp.csr_matrix

    @classmethod
    def known(cls, dataset, patients: np.ndarray, conditions: np.ndarray) -> "Query":
        """Query for patients in ``dataset`` (indices), each asking about ``conditions`` (-1: none)."""
        return cls(rows=take_rows(dataset.matrix, patients), patients=patients,
                   conditions=conditions,
                   patient_conditions=take_rows(dataset.patient_conditions, patients),
                   history=take_rows(dataset.history, patients),
                   harmful=take_rows(dataset.harmful, patients),
                   history_days=take_rows(dataset.history_days, patients))

    def __len__(self) -> int:
        return self.rows.shape[0]


def positive_part(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Copy of ``matrix`` keeping only entries > 0 (what worked, and side columns)."""
    result = matrix.copy()
    result.data = np.where(result.data > 0, result.data, 0).astype(np.float32)
    result.eliminate_zeros()
    return result


Check = tuple[Callable[[Any], bool], str]


def integer(low: int, high: float = np.inf) -> Check:
    return (lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool) and low <= v <= high,
            f"an int in the range [{low}, {high}]")


def real(low: float, high: float = np.inf, low_open: bool = False) -> Check:
    def ok(v):
        return isinstance(v, (int, float, np.floating)) and not isinstance(v, bool) and (
            low < v if low_open else low <= v) and v <= high
    return ok, f"a number in the range {'(' if low_open else '['}{low}, {high}]"


def optional_seed() -> Check:
    return (lambda v: v is None or (isinstance(v, (int, np.integer)) and v >= 0),
            "None or a non-negative int")


class Recommender:
    """Base class. Subclasses set ``kind``, ``_constraints`` and implement the private hooks."""

    kind: ClassVar[str] = ""
    _constraints: ClassVar[Mapping[str, Check]] = {}

    # --- estimator discipline -----------------------------------------------------------------

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [p.name for p in signature.parameters.values()
                if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyperparameters as given to ``__init__`` (``deep`` is accepted for sklearn parity)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> "Recommender":
        """Set hyperparameters; unknown names raise :class:`ParameterError`."""
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise ParameterError(f"{type(self).__name__} has no parameter {name!r}; "
                                     f"valid: {sorted(valid)}")
            setattr(self, name, value)
        return self

    def clone(self) -> "Recommender":
        """An unfitted copy with the same hyperparameters."""
        return type(self)(**self.get_params())

    def _validate_params(self) -> None:
        for name, (check, expected) in self._constraints.items():
            value = getattr(self, name)
            if not check(value):
                raise ParameterError(f"The {name!r} parameter of {type(self).__name__} must be "
                                     f"{expected}. Got {value!r} instead.")

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    # --- fitting and scoring ------------------------------------------------------------------

    def fit(self, dataset: "Dataset", show_progress: bool = False) -> "Recommender":
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
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit(dataset) or load "
                                 "an artifact first")

    def score(self, query: Query) -> np.ndarray:
        """Scores of every treatment, float32 array of shape (len(query), n_t); higher is better.

        Scores carry no safety rule: :mod:`recommender.ranking` applies the exclusions.
        """
        self.check_fitted()
        with single_threaded_blas():
            scores = self._score(query)
        return np.asarray(scores, dtype=np.float32)

    def _fit(self, dataset: "Dataset", show_progress: bool) -> None:
        raise NotImplementedError

    def _score(self, query: Query) -> np.ndarray:
        raise NotImplementedError

    # --- persistence: arrays only -------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        """Learned arrays to save (names without dots)."""
        return {}

    def _load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore learned arrays from :meth:`_state` output (arrays may be memory-mapped)."""

    def warm_up(self) -> None:
        """Derive now what answering derives lazily on first use (nothing by default).

        A server calls this before it forks its workers, so they share the result instead of
        each computing a private copy on its first request.
        """

    def save(self, path, metrics: Mapping | None = None):
        """Write an artifact folder (see :mod:`recommender.models.persistence`); returns its path."""
        from .persistence import save_artifact
        self.check_fitted()
        return save_artifact(self, path, metrics=metrics)

    @classmethod
    def load(cls, path, mmap: bool = True) -> "Recommender":
        """Load an artifact written by :meth:`save`, verifying its checksums."""
        from .persistence import load_artifact
        model = load_artifact(path, mmap=mmap).model
        if cls is not Recommender and not isinstance(model, cls):
            raise ParameterError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    # --- explanations ---------------------------------------------------------------------------

    #: Whether a patient's own record changes the scores (False for the popularity baselines).
    personalised: ClassVar[bool] = True

    def contributions(self, query: Query, treatments: np.ndarray) -> list[list[tuple[int, float]]]:
        """For each treatment index, (matrix column, contribution to its score) pairs for the
        single patient in ``query``; see :mod:`recommender.ranking.explain`."""
        from ..ranking.explain import leave_one_out
        if not self.personalised:
            return [[] for _ in treatments]
        return leave_one_out(self, query, treatments)

    def strongest_contributions(self, query: Query, treatments: np.ndarray,
                                limit: int) -> list[list[tuple[int, float]]]:
        """For each treatment index, the at most ``limit`` pairs of :meth:`contributions` whose
        magnitude is at least ``explain.MIN_CONTRIBUTION``, largest magnitude first (equal
        magnitudes keep the order of :meth:`contributions`)."""
        from ..ranking.explain import strongest
        return [strongest(pairs, limit) for pairs in self.contributions(query, treatments)]

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
        from ..ranking.core import check_k, top_k
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
        return [(str(t), float(v)) for t, v in zip(treatments.to_external(idx[0][keep]), values[0][keep])]

    # --- ranking with exclusions (shared by every model) --------------------------------------

    def recommend(self, patient_id: str, k: int = 10, condition_id: str | None = None,
                  include_tried: bool = False, active_treatments: Iterable[str] | None = None,
                  explain: bool = True) -> "RecommendationList":
        """Top-k treatments for a patient in the training data, safety rules applied.

        ``active_treatments`` adds treatment ids to those the record shows as active (for the
        interaction check); ``explain`` attaches contributions and evidence to each item.
        """
        from ..ranking.core import recommend_known
        return recommend_known(self, patient_id, k=k, condition_id=condition_id,
                               include_tried=include_tried, active_treatments=active_treatments,
                               explain=explain)

    def recommend_batch(self, patient_ids: Sequence[str], k: int = 10,
                        condition_ids: Sequence[str | None] | None = None,
                        include_tried: bool = False, show_progress: bool = False) -> pd.DataFrame:
        """Top-k for many known patients: DataFrame (patient_id, condition_id, rank, treatment_id, score)."""
        from ..ranking.core import recommend_many
        return recommend_many(self, patient_ids, k=k, condition_ids=condition_ids,
                              include_tried=include_tried, show_progress=show_progress)

    def recommend_new(self, history: Sequence[Mapping] = (), conditions: Iterable[str] = (),
                      k: int = 10, condition_id: str | None = None, include_tried: bool = False,
                      sex: str | None = None, birth_year: int | None = None,
                      active_treatments: Iterable[str] | None = None,
                      explain: bool = True) -> "RecommendationList":
        """Top-k for a patient outside the training data, given their outcome history."""
        from ..ranking.core import recommend_unknown
        return recommend_unknown(self, history, conditions, k=k, condition_id=condition_id,
                                 include_tried=include_tried, sex=sex, birth_year=birth_year,
                                 active_treatments=active_treatments, explain=explain)
