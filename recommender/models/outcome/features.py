"""The feature rows of the outcome model: one row per (patient at a decision, candidate therapy).

A row joins a *patient block* (what is known of the patient at the decision) and a *therapy
block* (which therapy, for which condition, and how it sits among the others):

=====================  ==================================================================
group                  columns
=====================  ==================================================================
age, sex               age in years at the decision; sex as a category code
line                   therapies already tried in this episode (for this condition)
diagnosis:<id>         one 0/1 column per frequent diagnosis or allergy present then
observation:<code>     the latest value of each frequent lab or vital on or before then
history                the patient's outcome history: how many therapies were tried, the
                       share that worked, its collaborative-filtering factors ``u`` and the
                       candidate's scores ``b_t + u . y_t`` and from therapy associations (absent when
                       the model uses none)
therapy                the therapy and condition (category codes) and the therapy's factors
                       ``y_t``, shared across therapies so that rare ones borrow strength
=====================  ==================================================================

Missing values are NaN (the learner routes them), so "not measured" is never confused with 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ...data.covariates import Covariates
from ...data.dataset import Dataset

#: Groups whose columns describe the patient (what an explanation may name).
PATIENT_GROUPS = ("age", "sex", "history")


@dataclass
class FeatureLayout:
    """Which columns the model reads, fixed at fit time (saved with the model).

    Attributes
    ----------
    diagnoses : ndarray of int64, shape (K,)
        Condition indices used as 0/1 columns (the most frequent diagnoses and allergies).
    observations : ndarray of int64, shape (M,)
        Observation code indices used as value columns (the most frequently measured).
    sexes : list of str
        Sex values in code order (code = position; unknown sexes are NaN).
    n_factors : int
        Dimensions of the history factors (0: no history columns).
    """

    diagnoses: np.ndarray
    observations: np.ndarray
    sexes: list[str]
    n_factors: int
    columns: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not self.columns:
            self.columns, self.groups = self._names()

    def _names(self) -> tuple[list[str], list[str]]:
        names = [("age", "age"), ("sex", "sex"), ("line", "line")]
        names += [(f"diagnosis:{int(c)}", f"diagnosis:{int(c)}") for c in self.diagnoses]
        names += [(f"observation:{int(o)}", f"observation:{int(o)}") for o in self.observations]
        if self.n_factors:
            names += [("history_count", "history"), ("history_worked", "history")]
            names += [(f"u{j}", "history") for j in range(self.n_factors)]
            names += [("cf_pairs", "history"), ("cf_score", "history")]
        names += [("therapy", "therapy"), ("condition", "therapy")]
        names += [(f"y{j}", "therapy") for j in range(self.n_factors)]
        return [n for n, _ in names], [g for _, g in names]

    def diagnosis_position(self, n_conditions: int) -> np.ndarray:
        """Int64 (n_conditions,): each condition's place among ``diagnoses`` (-1: not used)."""
        cached = self.__dict__.get("_dx_position")
        if cached is None or len(cached) != n_conditions:
            cached = np.full(n_conditions, -1, np.int64)
            cached[self.diagnoses] = np.arange(len(self.diagnoses))
            self.__dict__["_dx_position"] = cached
        return cached

    @property
    def n_patient_columns(self) -> int:
        """Columns of the patient block (everything before ``therapy``)."""
        return self.columns.index("therapy")

    @property
    def categorical(self) -> list[int]:
        """Column positions holding category codes (sex, therapy, condition)."""
        return [self.columns.index(name) for name in ("sex", "therapy", "condition")]

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "layout_diagnoses": np.asarray(self.diagnoses, np.int64),
            "layout_observations": np.asarray(self.observations, np.int64),
            "layout_sexes": np.asarray(self.sexes, dtype=str),
            "layout_n_factors": np.array([self.n_factors], np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays) -> FeatureLayout:
        return cls(
            diagnoses=np.asarray(arrays["layout_diagnoses"], np.int64),
            observations=np.asarray(arrays["layout_observations"], np.int64),
            sexes=[str(s) for s in np.asarray(arrays["layout_sexes"])],
            n_factors=int(np.asarray(arrays["layout_n_factors"])[0]),
        )


def choose_layout(
    dataset: Dataset, n_factors: int, max_diagnoses: int, max_observations: int
) -> FeatureLayout:
    """The most frequent diagnoses (by patients) and observation codes (by patients measured)."""
    pc = dataset.patient_conditions
    dx_counts = np.bincount(pc.indices, minlength=len(dataset.conditions))
    diagnoses = np.sort(np.argsort(-dx_counts, kind="stable")[:max_diagnoses])
    diagnoses = diagnoses[dx_counts[diagnoses] > 0]
    observations = np.zeros(0, np.int64)
    if dataset.latest_observations is not None and dataset.latest_observations.shape[1]:
        obs_counts = np.bincount(
            dataset.latest_observations.indices, minlength=dataset.latest_observations.shape[1]
        )
        observations = np.sort(np.argsort(-obs_counts, kind="stable")[:max_observations])
        observations = observations[obs_counts[observations] > 0]
    sexes = sorted({s for s in dataset.demographics.get("sex", []) if isinstance(s, str) and s})
    return FeatureLayout(diagnoses, observations, sexes, n_factors)


def patient_block(
    layout: FeatureLayout,
    covariates: Covariates,
    history: sp.csr_matrix | None,
    users: np.ndarray | None,
) -> np.ndarray:
    """Float64 (n, n_patient_columns) patient columns, plus the CF score filled later.

    ``history``: CSR (n, n_t) signed confidences of each patient's prior outcomes (for the
    count and the share that worked); ``users``: (n, n_factors) history factors.
    """
    n = len(covariates)
    if n == 1:
        return _one_patient_block(layout, covariates, history, users)
    block = np.full((n, layout.n_patient_columns), np.nan)
    block[:, 0] = covariates.age
    code = {s: i for i, s in enumerate(layout.sexes)}
    block[:, 1] = [code.get(s, np.nan) for s in covariates.sex]
    block[:, 2] = 0  # the line: set by the caller, who knows the episode
    k = 3
    if len(layout.diagnoses):
        dx = covariates.diagnoses
        block[:, k : k + len(layout.diagnoses)] = 0.0
        position = layout.diagnosis_position(dx.shape[1])[dx.indices]  # CSR arithmetic: fast
        rows = np.repeat(np.arange(n), np.diff(dx.indptr))
        keep = position >= 0
        block[rows[keep], k + position[keep]] = 1.0
    k += len(layout.diagnoses)
    block[:, k : k + len(layout.observations)] = covariates.observations
    k += len(layout.observations)
    if layout.n_factors:
        counts = np.diff(history.indptr) if history is not None else np.zeros(n)
        worked = (
            np.add.reduceat(np.r_[history.data > 0, False].astype(np.float64), history.indptr[:-1])
            * (counts > 0)
            if history is not None and n
            else np.zeros(n)
        )
        block[:, k] = counts
        block[:, k + 1] = np.where(counts > 0, worked / np.maximum(counts, 1), np.nan)
        block[:, k + 2 : k + 2 + layout.n_factors] = users
    return block


def _one_patient_block(
    layout: FeatureLayout,
    covariates: Covariates,
    history: sp.csr_matrix | None,
    users: np.ndarray | None,
) -> np.ndarray:
    """:func:`patient_block` of one patient (the service's path): the same values, with
    plain Python on the few entries instead of array arithmetic sized for many rows."""
    block = np.full((1, layout.n_patient_columns), np.nan)
    row = block[0]
    row[0] = covariates.age[0]
    row[1] = layout.sexes.index(covariates.sex[0]) if covariates.sex[0] in layout.sexes else np.nan
    row[2] = 0
    k = 3
    if len(layout.diagnoses):
        row[k : k + len(layout.diagnoses)] = 0.0
        position = layout.diagnosis_position(covariates.diagnoses.shape[1])
        for p in position[covariates.diagnoses.indices].tolist():
            if p >= 0:
                row[k + p] = 1.0
    k += len(layout.diagnoses)
    row[k : k + len(layout.observations)] = covariates.observations[0]
    k += len(layout.observations)
    if layout.n_factors:
        assert users is not None, "history columns need the patient's factors"
        count = len(history.indices) if history is not None else 0
        row[k] = count
        if history is not None and count:
            row[k + 1] = float(np.count_nonzero(history.data > 0)) / count
        row[k + 2 : k + 2 + layout.n_factors] = users[0]
    return block


def pair_rows(
    layout: FeatureLayout,
    block: np.ndarray,
    rows: np.ndarray,
    treatments: np.ndarray,
    conditions: np.ndarray,
    users: np.ndarray | None,
    item_factors: np.ndarray | None,
    pairs: np.ndarray | None = None,
) -> np.ndarray:
    """Float64 (m, n_columns): patient row ``rows[i]`` of ``block`` paired with therapy
    ``treatments[i]`` for condition ``conditions[i]`` (``users`` indexed like ``block``;
    ``pairs``: the candidates' association scores, :mod:`.associations`)."""
    m, d = len(rows), layout.n_factors
    out = np.empty((m, len(layout.columns)))
    out[:, : layout.n_patient_columns] = block[rows]
    t_col = layout.n_patient_columns
    out[:, t_col] = treatments
    out[:, t_col + 1] = conditions
    if d:
        assert users is not None and item_factors is not None, "history columns need factors"
        y = item_factors[treatments]  # (m, d + 1): factors, then the bias
        out[:, t_col + 2 :] = y[:, :d]
        out[:, t_col - 1] = np.einsum("ij,ij->i", users[rows], y[:, :d]) + y[:, d]  # cf_score
        out[:, t_col - 2] = pairs if pairs is not None else 0.0
    return out
