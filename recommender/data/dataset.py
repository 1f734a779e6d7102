"""Dataset: canonical tables -> id maps and sparse matrices the models and the ranker use.

External ids become indices here and nowhere else. Shapes used throughout the engine:

- ``n_p`` patients, ``n_t`` treatments, ``n_f`` side-information features, ``n_c`` conditions;
- ``matrix``: CSR (n_p, n_t + n_f) float32 signed confidences (:mod:`recommender.data.policies`);
  the first ``n_t`` columns are treatments, the rest side features that inform the factors but
  are never recommended;
- ``history``: CSR (n_p, n_t) float32 latest outcome per (patient, treatment); its sparsity
  pattern (explicit zeros kept) is the set of treatments the patient has tried;
- ``harmful``: CSR (n_p, n_t) bool, treatments that harmed the patient (adverse flag, or an
  outcome below ``harm_threshold``) at any time, not only in the latest outcome;
- ``patient_conditions``: CSR (n_p, n_c) bool; ``contraindications``: CSR (n_c, n_t) bool;
- ``condition_outcomes`` / ``condition_successes``: CSR (n_c, n_t) float32 counts of outcomes
  recorded (and of those that worked) for a treatment given for a condition;
- ``treatment_support``: (n_t,) int64 number of distinct patients with an outcome;
- ``history_days``: CSR (n_p, n_t) float32 with ``history``'s pattern: day (since 1970-01-01)
  of that latest outcome, -1 when unknown;
- ``interactions``: CSR (n_t, n_t) int8, symmetric: 2 severe, 1 moderate (minor not kept);
- ``treatment_ingredients``: CSR (n_t, n_i) bool, the active ingredients of each treatment
  (``ingredients`` the id map of the ``n_i`` ingredient ids, :mod:`recommender.data.ingredients`);
  a treatment without listed ingredients is its own ingredient (its treatment id);
- ``label_counts``: CSR (n_c + 1, n_t * 5) float32: outcomes recorded per (condition, treatment,
  label) with labels in :data:`OUTCOME_BUCKETS` order at column ``t * 5 + label``; the last row
  counts every condition together (the evidence shown with a recommendation).

Duplicate (patient, treatment) outcomes: the latest by timestamp wins for ``matrix`` and
``history`` (rows without a timestamp count as earliest; ties go to the later row in the file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..columns import Columns as C
from ..exceptions import UnknownIdError
from ..utils.sparse_rows import row_arrays
from .codes import NAT, CohortCodes, take_codes
from .events import CohortEvents, cohort_events, latest_observations
from .feedback import PREFERENCES
from .ids import IdMap
from .ingredients import identity, incidence
from .matrices import (
    coded_birth_years,
    coded_demographics,
    condition_counts,
    csr_of,
    display_names,
    frame_or_empty,
    has_entry,
    hstack_csr,
    interaction_matrix,
    one_per_row,
    outcome_matrices,
    pattern_of,
    pattern_unique,
)
from .policies import ConfidencePolicy, SafetyPolicy
from .pseudonym import Pseudonymizer, check_key
from .side_info import FEATURE_AGE, FEATURE_SEX, SideInfo, feature_ids
from .tables import CohortTables


@dataclass(repr=False)
class Dataset:
    """Id maps and matrices of one cohort (see the module docstring for every shape)."""

    patients: IdMap
    treatments: IdMap
    features: IdMap
    conditions: IdMap
    matrix: sp.csr_matrix
    history: sp.csr_matrix
    harmful: sp.csr_matrix
    patient_conditions: sp.csr_matrix
    contraindications: sp.csr_matrix
    condition_outcomes: sp.csr_matrix
    condition_successes: sp.csr_matrix
    treatment_support: np.ndarray
    history_days: sp.csr_matrix
    interactions: sp.csr_matrix
    label_counts: sp.csr_matrix
    demographics: pd.DataFrame
    policy: ConfidencePolicy = field(default_factory=ConfidencePolicy)
    safety: SafetyPolicy = field(default_factory=SafetyPolicy)
    side_info: SideInfo = field(default_factory=SideInfo)
    harm_threshold: float = 0.0
    reference_year: int | None = None
    fingerprint: str = ""
    #: Fingerprint of the key that pseudonymised ``patients`` ("" when the ids are raw).
    pseudonym_fingerprint: str = ""
    #: Display names from the ``treatments`` / ``conditions`` dictionaries (id -> name).
    treatment_names: dict = field(default_factory=dict, repr=False)
    condition_names: dict = field(default_factory=dict, repr=False)
    #: The key itself: never saved; needed to look up a raw patient id in a keyed dataset.
    pseudonymizer: Pseudonymizer | None = field(default=None, repr=False, compare=False)
    # --- the patient's current state, for models of treatment decisions ----------------------
    #: The latest outcome time (int64 ns since the epoch; None without times): "now" for the
    #: current state.
    latest_time: int | None = None
    #: Birth year per patient, float32 (n_p,), NaN when unknown (None: not recorded).
    birth_year: np.ndarray | None = field(default=None, repr=False)
    #: Observation codes (``observations.code``), sorted.
    observation_ids: IdMap = field(default_factory=lambda: IdMap([], "observation"), repr=False)
    #: CSR float32 (n_p, n_o): the latest value of each observation code per patient.
    latest_observations: sp.csr_matrix | None = field(default=None, repr=False)
    #: Every dated event (:mod:`recommender.data.events`) of a Dataset built from tables; a
    #: training input, never saved (None after loading an artifact).
    events: CohortEvents | None = field(default=None, repr=False, compare=False)
    # --- active ingredients, for the duplicate_therapy rule ------------------------------------
    #: Ingredient ids (sorted). Left out (None), :meth:`__post_init__` makes each treatment its
    #: own ingredient, so after construction it is always set.
    ingredients: IdMap = field(default=None, repr=False)  # type: ignore[assignment]
    #: CSR bool (n_t, n_i): which treatment holds which ingredient (set as ``ingredients``).
    treatment_ingredients: sp.csr_matrix = field(default=None, repr=False)

    def __post_init__(self):
        if self.ingredients is None or self.treatment_ingredients is None:
            self.ingredients, self.treatment_ingredients = identity(self.treatments)

    def __repr__(self) -> str:
        """One line of sizes, as the other objects print (never an id or a table)."""
        observations = (
            f", observations={len(self.observation_ids)}" if len(self.observation_ids) else ""
        )
        keyed = ", pseudonymised" if self.pseudonym_fingerprint else ""
        return (
            f"Dataset(patients={len(self.patients)}, treatments={len(self.treatments)}, "
            f"conditions={len(self.conditions)}, features={len(self.features)}, "
            f"pairs={self.history.nnz}{observations}{keyed})"
        )

    # --- building ------------------------------------------------------------------------------

    @classmethod
    def from_tables(
        cls,
        tables: CohortTables,
        policy: ConfidencePolicy | None = None,
        side_info: SideInfo | None = None,
        harm_threshold: float = 0.0,
        pseudonymizer: Pseudonymizer | None = None,
        safety: SafetyPolicy | None = None,
        feedback: pd.DataFrame | None = None,
        feedback_weight: float = 0.25,
    ) -> Dataset:
        """Build from validated tables (:func:`recommender.data.tables.read_tables`).

        With a ``pseudonymizer`` every patient id is replaced by its keyed hash here, so the
        dataset (and any artifact saved from it) never holds a raw id. ``feedback``
        (:func:`recommender.data.feedback.read_feedback`, patient ids as the model holds them) adds
        clinicians' decisions as weak preferences of strength ``feedback_weight``.
        """
        return cls.from_codes(
            CohortCodes.from_tables(tables),
            policy=policy,
            side_info=side_info,
            harm_threshold=harm_threshold,
            pseudonymizer=pseudonymizer,
            safety=safety,
            feedback=feedback,
            feedback_weight=feedback_weight,
        )

    @classmethod
    def from_codes(
        cls,
        codes: CohortCodes,
        policy: ConfidencePolicy | None = None,
        side_info: SideInfo | None = None,
        harm_threshold: float = 0.0,
        pseudonymizer: Pseudonymizer | None = None,
        safety: SafetyPolicy | None = None,
        feedback: pd.DataFrame | None = None,
        feedback_weight: float = 0.25,
    ) -> Dataset:
        """Build from tables already turned into integer codes (:mod:`recommender.data.codes`).

        The options are those of :meth:`from_tables`. Every outcome matrix comes from one stable
        sort of the rows by (patient, treatment); the counts per condition from one pass over
        (condition, treatment, label) keys.
        """
        policy, side_info = policy or ConfidencePolicy(), side_info or SideInfo()
        events, observation_ids = cohort_events(codes)  # before pseudonyms: raw observation ids
        if pseudonymizer is not None:
            codes = codes.pseudonymised(pseudonymizer)
        patients = IdMap.from_distinct(codes.patient_ids, "patient")
        treatments = IdMap(codes.treatment_ids, "treatment")
        conditions = IdMap(codes.condition_ids, "condition")
        n_p, n_t, n_c = len(patients), len(treatments), len(conditions)
        latest_time = codes.timestamp.max() if codes.n_rows else NAT  # NAT is the smallest int64
        reference_year = (
            pd.Timestamp(int(latest_time), tz="UTC").year if latest_time != NAT else None
        )
        demographics = coded_demographics(
            n_p, codes.table_patients, codes.sex, codes.birth_year, reference_year
        )
        # counts per condition first: their temporaries are large, the results small
        condition_outcomes, condition_successes, label_counts = condition_counts(
            codes, policy, n_c, n_t
        )
        history, history_days, harmful, support = outcome_matrices(
            codes.patient,
            codes.treatment,
            codes.outcome,
            codes.timestamp,
            (codes.adverse == 1) | (codes.outcome < harm_threshold),
            (n_p, n_t),
            codes.pair_order,
        )
        pc = pattern_unique(codes.pc_patient, codes.pc_condition, (n_p, n_c))
        contraindications = frame_or_empty(codes.contraindications, [C.treatment, C.condition])
        known_t = contraindications[C.treatment].isin(set(treatments.external_ids)).to_numpy()
        ci = pattern_of(
            conditions.to_internal(contraindications[C.condition][known_t]),
            treatments.to_internal(contraindications[C.treatment][known_t]),
            (n_c, n_t),
        )
        ingredients, treatment_ingredients = incidence(treatments, codes.treatments, C.treatment)
        dataset = cls(
            patients=patients,
            treatments=treatments,
            features=feature_ids(side_info, conditions, demographics),
            conditions=conditions,
            matrix=None,
            history=history,
            harmful=harmful,
            patient_conditions=pc,
            contraindications=ci,
            condition_outcomes=condition_outcomes,
            condition_successes=condition_successes,
            treatment_support=support,
            history_days=history_days,
            label_counts=label_counts,
            interactions=interaction_matrix(codes.interactions, treatments),
            demographics=demographics,
            policy=policy,
            side_info=side_info,
            safety=safety or SafetyPolicy(),
            harm_threshold=harm_threshold,
            reference_year=reference_year,
            fingerprint=codes.fingerprint,
            pseudonym_fingerprint=pseudonymizer.fingerprint if pseudonymizer else "",
            pseudonymizer=pseudonymizer,
            treatment_names=display_names(codes.treatments, C.treatment, treatments),
            condition_names=display_names(codes.conditions, C.condition, conditions),
            latest_time=int(latest_time) if latest_time != NAT else None,
            birth_year=coded_birth_years(n_p, codes.table_patients, codes.birth_year),
            observation_ids=observation_ids,
            latest_observations=latest_observations(events, n_p, len(observation_ids)),
            events=events,
            ingredients=ingredients,
            treatment_ingredients=treatment_ingredients,
        )
        dataset.matrix = dataset._build_matrix(history, pc)
        if feedback is not None and len(feedback):
            dataset.matrix = dataset._with_feedback(feedback, feedback_weight)
        return dataset

    def _with_feedback(self, feedback: pd.DataFrame, weight: float) -> sp.csr_matrix:
        """The matrix plus +/-(1 + alpha * weight) for preferences on pairs with no outcome
        (other decisions, such as an overridden safety warning, are not preferences)."""
        feedback = feedback[feedback["decision"].isin(list(PREFERENCES))]
        if not len(feedback):
            return self.matrix
        latest = feedback.sort_values("time", kind="stable").drop_duplicates(
            ["patient", C.treatment], keep="last"
        )
        p = self.patients.to_internal(latest["patient"], strict=False)
        t = self.treatments.to_internal(latest[C.treatment], strict=False)
        known = (p >= 0) & (t >= 0)
        p, t = p[known], t[known]
        untried = ~has_entry(self.history, p, t)
        sign = np.where(latest["decision"].to_numpy()[known] == "accepted", 1.0, -1.0)
        values = sign * (1.0 + self.policy.alpha * weight)
        extra = csr_of(p[untried], t[untried], values[untried], self.matrix.shape)
        return (self.matrix + extra).tocsr().astype(np.float32)

    def _build_matrix(
        self, history: sp.csr_matrix, patient_conditions: sp.csr_matrix
    ) -> sp.csr_matrix:
        """Signed confidences (n_rows, n_t + n_f) from outcome history and side information."""
        values = sp.csr_matrix(
            (self.policy.values(history.data), history.indices, history.indptr), shape=history.shape
        )
        return hstack_csr([values, *self._side_blocks(patient_conditions, self.demographics)])

    def side_columns(
        self, patient_conditions: sp.csr_matrix, demographics: pd.DataFrame
    ) -> sp.csr_matrix:
        """Side-feature block (n_rows, n_f) of the matrix, every set entry equal to ``side_value``."""
        return hstack_csr(self._side_blocks(patient_conditions, demographics))

    def _side_blocks(
        self, patient_conditions: sp.csr_matrix, demographics: pd.DataFrame
    ) -> list[sp.csr_matrix]:
        """The side-feature columns as CSR blocks to stack side by side: the condition columns
        (when used; in condition index order), then the age band and sex columns."""
        side = np.float32(self.policy.side_value)
        blocks, first_demographic = [], 0
        if self.side_info.conditions:
            first_demographic = patient_conditions.shape[1]
            blocks.append(
                sp.csr_matrix(
                    (
                        np.full(patient_conditions.nnz, side, np.float32),
                        patient_conditions.indices,
                        patient_conditions.indptr,
                    ),
                    shape=patient_conditions.shape,
                )
            )
        columns = []
        for enabled, column, prefix in (
            (self.side_info.age_band, "age_band", FEATURE_AGE),
            (self.side_info.sex, C.sex, FEATURE_SEX),
        ):
            if enabled:
                codes, uniques = pd.factorize(demographics[column])
                labels = prefix + np.asarray(uniques, dtype=object).astype(str).astype(object)
                known = self.features.to_internal(labels, strict=False)
                columns.append(take_codes(known, codes, -1))
        blocks.append(
            one_per_row(
                columns,
                first_demographic,
                patient_conditions.shape[0],
                len(self.features) - first_demographic,
                side,
            )
        )
        return blocks

    # --- shapes and views ----------------------------------------------------------------------

    @property
    def n_patients(self) -> int:
        return len(self.patients)

    @property
    def n_treatments(self) -> int:
        return len(self.treatments)

    @property
    def n_columns(self) -> int:
        """Treatments plus side features: the number of matrix columns."""
        return self.matrix.shape[1]

    @cached_property
    def ingredient_treatments(self) -> sp.csr_matrix:
        """CSR bool (n_i, n_t): the treatments holding each ingredient (the transpose of
        ``treatment_ingredients``, built once)."""
        return self.treatment_ingredients.T.tocsr()

    @cached_property
    def shares_ingredients(self) -> bool:
        """Whether two treatments share an ingredient (else duplicate therapy is only the
        active treatment itself)."""
        return bool((np.diff(self.ingredient_treatments.indptr) > 1).any())

    def with_policy(self, policy: ConfidencePolicy) -> Dataset:
        """The same cohort with its matrix rebuilt under another confidence policy (for tuning)."""
        clone = Dataset(**{f: getattr(self, f) for f in self.__dataclass_fields__})
        clone.policy = policy
        clone.matrix = clone._build_matrix(self.history, self.patient_conditions)
        return clone

    def candidates(self, condition: int) -> np.ndarray:
        """Treatment indices (sorted) recorded for condition index ``condition`` in the data."""
        indices, counts = row_arrays(self.condition_outcomes, condition)
        return np.sort(indices[counts > 0])

    def attach_key(self, pseudonymizer: Pseudonymizer | None) -> None:
        """Provide the key of a keyed dataset (after loading); a wrong key raises ArtifactError."""
        check_key(
            {"key_fingerprint": self.pseudonym_fingerprint or None}, pseudonymizer, "this model"
        )
        self.pseudonymizer = pseudonymizer

    def patient_indices(self, patient_ids, strict: bool = True) -> np.ndarray:
        """Indices of raw patient ids (pseudonymised first when the dataset is keyed)."""
        ids = list(patient_ids)
        if not self.pseudonym_fingerprint:
            return self.patients.to_internal(ids, strict=strict)
        return self.patients.to_internal(self._keyed().many(ids), strict=strict)

    def _keyed(self) -> Pseudonymizer:
        """The key of this keyed dataset; UnknownIdError when it was not attached."""
        if self.pseudonymizer is None:
            raise UnknownIdError(
                "this model's patient ids are pseudonymised: set "
                "RECOMMENDER_PSEUDONYM_KEY_FILE to the training key to look "
                "up a patient"
            )
        return self.pseudonymizer

    def patient_index(self, patient_id: str) -> int:
        """Index of one raw patient id; UnknownIdError (naming the raw id) if not in the data."""
        key = self._keyed()(patient_id) if self.pseudonym_fingerprint else patient_id
        try:
            return self.patients.index_of(key)
        except UnknownIdError:
            raise UnknownIdError(
                f"unknown patient id {patient_id!r}: not in the model's training "
                "data (use recommend_new with the patient's history)"
            ) from None

    def condition_index(self, condition_id: str | None) -> int:
        """Index of a condition id, -1 for None. Raises UnknownIdError if unknown."""
        if condition_id is None:
            return -1
        try:
            return self.conditions.index_of(condition_id)
        except UnknownIdError:
            raise UnknownIdError(
                f"unknown condition id {condition_id!r}: no outcome, diagnosis or "
                "contraindication in the training data mentions it"
            ) from None
