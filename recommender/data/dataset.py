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
- ``label_counts``: CSR (n_c + 1, n_t * 5) float32: outcomes recorded per (condition, treatment,
  label) with labels in :data:`OUTCOME_BUCKETS` order at column ``t * 5 + label``; the last row
  counts every condition together (the evidence shown with a recommendation).

Duplicate (patient, treatment) outcomes: the latest by timestamp wins for ``matrix`` and
``history`` (rows without a timestamp count as earliest; ties go to the later row in the file).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .codes import NAT, CohortCodes, group_edges, take_codes
from ..columns import Columns as C
from .policies import ConfidencePolicy
from ..exceptions import UnknownIdError
from .feedback import PREFERENCES
from .ids import IdMap
from .tables import CohortTables, parse_outcomes
from .pseudonym import Pseudonymizer, check_key
from ..ranking.safety import SEVERITY_CODES, SafetyPolicy
from ..utils.sparse_rows import row_arrays

FEATURE_CONDITION, FEATURE_AGE, FEATURE_SEX = "condition:", "age:", "sex:"
#: Outcome labels counted as evidence, in the column order of ``Dataset.label_counts``.
OUTCOME_BUCKETS = ("responded", "partial", "no_response", "worsened", "adverse")


@dataclass(frozen=True)
class SideInfo:
    """Which side-information columns enter the matrix (never recommended)."""

    conditions: bool = True
    age_band: bool = False
    sex: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def age_band(birth_year, reference_year: int) -> str | None:
    """Ten-year age band such as ``"40-49"`` at ``reference_year``; None when unknown."""
    if birth_year is None or pd.isna(birth_year):
        return None
    low = max(0, (reference_year - int(birth_year)) // 10 * 10)
    return f"{low}-{low + 9}"


@dataclass
class PatientRecord:
    """A patient encoded against a dataset: the input of scoring and of the safety rules.

    ``row`` is CSR (1, n_t + n_f), ``history`` CSR (1, n_t) of latest outcomes and
    ``history_days`` their days (see :class:`Dataset`); ``tried``,
    ``harmful`` hold treatment indices and ``conditions`` condition indices. ``ignored`` lists
    external ids the dataset does not know.
    """

    row: sp.csr_matrix
    history: sp.csr_matrix
    history_days: sp.csr_matrix
    tried: np.ndarray
    harmful: np.ndarray
    conditions: np.ndarray
    ignored: list[str] = field(default_factory=list)


@dataclass
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

    # --- building ------------------------------------------------------------------------------

    @classmethod
    def from_tables(cls, tables: CohortTables, policy: ConfidencePolicy | None = None,
                    side_info: SideInfo | None = None, harm_threshold: float = 0.0,
                    pseudonymizer: Pseudonymizer | None = None,
                    safety: SafetyPolicy | None = None, feedback: pd.DataFrame | None = None,
                    feedback_weight: float = 0.25) -> "Dataset":
        """Build from validated tables (:func:`recommender.data.tables.read_tables`).

        With a ``pseudonymizer`` every patient id is replaced by its keyed hash here, so the
        dataset (and any artifact saved from it) never holds a raw id. ``feedback``
        (:func:`recommender.data.feedback.read_feedback`, patient ids as the model holds them) adds
        clinicians' decisions as weak preferences of strength ``feedback_weight``.
        """
        return cls.from_codes(CohortCodes.from_tables(tables), policy=policy, side_info=side_info,
                              harm_threshold=harm_threshold, pseudonymizer=pseudonymizer,
                              safety=safety, feedback=feedback, feedback_weight=feedback_weight)

    @classmethod
    def from_codes(cls, codes: CohortCodes, policy: ConfidencePolicy | None = None,
                   side_info: SideInfo | None = None, harm_threshold: float = 0.0,
                   pseudonymizer: Pseudonymizer | None = None,
                   safety: SafetyPolicy | None = None, feedback: pd.DataFrame | None = None,
                   feedback_weight: float = 0.25) -> "Dataset":
        """Build from tables already turned into integer codes (:mod:`recommender.data.codes`).

        The options are those of :meth:`from_tables`. Every outcome matrix comes from one stable
        sort of the rows by (patient, treatment); the counts per condition from one pass over
        (condition, treatment, label) keys.
        """
        policy, side_info = policy or ConfidencePolicy(), side_info or SideInfo()
        if pseudonymizer is not None:
            codes = codes.pseudonymised(pseudonymizer)
        patients = IdMap.from_distinct(codes.patient_ids, "patient")
        treatments = IdMap(codes.treatment_ids, "treatment")
        conditions = IdMap(codes.condition_ids, "condition")
        n_p, n_t, n_c = len(patients), len(treatments), len(conditions)
        latest_time = codes.timestamp.max() if codes.n_rows else NAT  # NAT is the smallest int64
        reference_year = pd.Timestamp(int(latest_time), tz="UTC").year if latest_time != NAT else None
        demographics = _coded_demographics(n_p, codes.table_patients, codes.sex,
                                           codes.birth_year, reference_year)
        # counts per condition first: their temporaries are large, the results small
        condition_outcomes, condition_successes, label_counts = _condition_counts(
            codes, policy, n_c, n_t)
        history, history_days, harmful, support = _outcome_matrices(
            codes.patient, codes.treatment, codes.outcome, codes.timestamp,
            (codes.adverse == 1) | (codes.outcome < harm_threshold), (n_p, n_t), codes.pair_order)
        pc = _pattern_unique(codes.pc_patient, codes.pc_condition, (n_p, n_c))
        contraindications = _frame_or_empty(codes.contraindications, [C.treatment, C.condition])
        known_t = contraindications[C.treatment].isin(set(treatments.external_ids)).to_numpy()
        ci = _pattern(conditions.to_internal(contraindications[C.condition][known_t]),
                      treatments.to_internal(contraindications[C.treatment][known_t]), (n_c, n_t))
        dataset = cls(patients=patients, treatments=treatments,
                      features=_feature_ids(side_info, conditions, demographics),
                      conditions=conditions, matrix=None, history=history, harmful=harmful,
                      patient_conditions=pc, contraindications=ci,
                      condition_outcomes=condition_outcomes,
                      condition_successes=condition_successes, treatment_support=support,
                      history_days=history_days, label_counts=label_counts,
                      interactions=_interaction_matrix(codes.interactions, treatments),
                      demographics=demographics, policy=policy, side_info=side_info,
                      safety=safety or SafetyPolicy(),
                      harm_threshold=harm_threshold, reference_year=reference_year,
                      fingerprint=codes.fingerprint,
                      pseudonym_fingerprint=pseudonymizer.fingerprint if pseudonymizer else "",
                      pseudonymizer=pseudonymizer,
                      treatment_names=_names(codes.treatments, C.treatment, treatments),
                      condition_names=_names(codes.conditions, C.condition, conditions))
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
            ["patient", C.treatment], keep="last")
        p = self.patients.to_internal(latest["patient"], strict=False)
        t = self.treatments.to_internal(latest[C.treatment], strict=False)
        known = (p >= 0) & (t >= 0)
        p, t = p[known], t[known]
        untried = ~_has_entry(self.history, p, t)
        sign = np.where(latest["decision"].to_numpy()[known] == "accepted", 1.0, -1.0)
        values = sign * (1.0 + self.policy.alpha * weight)
        extra = _csr(p[untried], t[untried], values[untried], self.matrix.shape)
        return (self.matrix + extra).tocsr().astype(np.float32)

    def _build_matrix(self, history: sp.csr_matrix, patient_conditions: sp.csr_matrix) -> sp.csr_matrix:
        """Signed confidences (n_rows, n_t + n_f) from outcome history and side information."""
        values = sp.csr_matrix((self.policy.values(history.data), history.indices, history.indptr),
                               shape=history.shape)
        return _hstack([values, *self._side_blocks(patient_conditions, self.demographics)])

    def _side_columns(self, patient_conditions: sp.csr_matrix, demographics: pd.DataFrame) -> sp.csr_matrix:
        """Side-feature block (n_rows, n_f) of the matrix, every set entry equal to ``side_value``."""
        return _hstack(self._side_blocks(patient_conditions, demographics))

    def _side_blocks(self, patient_conditions: sp.csr_matrix,
                     demographics: pd.DataFrame) -> list[sp.csr_matrix]:
        """The side-feature columns as CSR blocks to stack side by side: the condition columns
        (when used; in condition index order), then the age band and sex columns."""
        side = np.float32(self.policy.side_value)
        blocks, first_demographic = [], 0
        if self.side_info.conditions:
            first_demographic = patient_conditions.shape[1]
            blocks.append(sp.csr_matrix((np.full(patient_conditions.nnz, side, np.float32),
                                         patient_conditions.indices, patient_conditions.indptr),
                                        shape=patient_conditions.shape))
        columns = []
        for enabled, column, prefix in ((self.side_info.age_band, "age_band", FEATURE_AGE),
                                        (self.side_info.sex, C.sex, FEATURE_SEX)):
            if enabled:
                codes, uniques = pd.factorize(demographics[column])
                labels = prefix + np.asarray(uniques, dtype=object).astype(str).astype(object)
                known = self.features.to_internal(labels, strict=False)
                columns.append(take_codes(known, codes, -1))
        blocks.append(_one_per_row(columns, first_demographic, patient_conditions.shape[0],
                                   len(self.features) - first_demographic, side))
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

    def with_policy(self, policy: ConfidencePolicy) -> "Dataset":
        """The same cohort with its matrix rebuilt under another confidence policy (for tuning)."""
        clone = Dataset(**{f: getattr(self, f) for f in self.__dataclass_fields__})
        clone.policy = policy
        clone.matrix = clone._build_matrix(self.history, self.patient_conditions)
        return clone

    def candidates(self, condition: int) -> np.ndarray:
        """Treatment indices (sorted) recorded for condition index ``condition`` in the data."""
        indices, counts = row_arrays(self.condition_outcomes, condition)
        return np.sort(indices[counts > 0])

    # --- patients outside the training data ----------------------------------------------------

    def encode_patient(self, history: Sequence[Mapping] = (), conditions: Iterable[str] = (),
                       sex: str | None = None, birth_year: int | None = None) -> PatientRecord:
        """Encode a patient who is not in the dataset.

        Parameters
        ----------
        history : sequence of mappings
            Each with ``treatment_id`` and ``outcome`` (number in [-1, 1] or a label), optional
            ``timestamp`` (ISO-8601) and ``adverse`` (0/1). The latest per treatment wins.
        conditions : iterable of str
            Condition ids (diagnoses and allergies).
        sex, birth_year : optional demographics for the age/sex side columns.

        Unknown treatment and condition ids cannot inform the factors; they are listed in
        ``ignored``. Raises :class:`~recommender.exceptions.DataValidationError` for a bad outcome.
        """
        frame = pd.DataFrame(list(history))
        for column, default in ((C.treatment, ""), (C.outcome, ""), (C.timestamp, None), (C.adverse, 0)):
            if column not in frame:
                frame[column] = default
        frame[C.outcome] = parse_outcomes(frame[C.outcome], "history")
        frame[C.timestamp] = pd.to_datetime(frame[C.timestamp], utc=True, errors="coerce",
                                            format="ISO8601")
        frame[C.adverse] = pd.to_numeric(frame[C.adverse], errors="coerce").fillna(0)
        frame[C.treatment] = frame[C.treatment].astype(str)
        t = self.treatments.to_internal(frame[C.treatment], strict=False)  # one hash lookup each
        known = t >= 0
        ignored: list[str] = frame.loc[~known, C.treatment].unique().tolist()
        frame, t = frame[known].reset_index(drop=True), t[known]
        latest = _latest_rows(frame)
        outcomes = frame[C.outcome].to_numpy()[latest]
        history_row = _csr(np.zeros(len(latest), np.int64), t[latest], outcomes, (1, self.n_treatments))
        days_row = _csr(np.zeros(len(latest), np.int64), t[latest],
                        _days(frame[C.timestamp].iloc[latest]), (1, self.n_treatments))
        harm = (frame[C.adverse].to_numpy() == 1) | (frame[C.outcome].to_numpy() < self.harm_threshold)
        condition_ids = [str(c) for c in conditions]
        c_idx = self.conditions.to_internal(condition_ids, strict=False)
        ignored += [c for c, i in zip(condition_ids, c_idx) if i < 0]
        c_idx = np.unique(c_idx[c_idx >= 0])
        pc = _pattern(np.zeros(len(c_idx), np.int64), c_idx, (1, len(self.conditions)))
        demo = pd.DataFrame({C.sex: [sex or ""], "age_band": [
            age_band(birth_year, self.reference_year) if self.reference_year else None]})
        values = history_row.copy()
        values.data = self.policy.values(values.data)
        row = sp.hstack([values, self._side_columns(pc, demo)], format="csr", dtype=np.float32)
        return PatientRecord(row=row, history=history_row, history_days=days_row,
                             tried=np.unique(t), harmful=np.unique(t[harm]),
                             conditions=c_idx, ignored=ignored)

    def attach_key(self, pseudonymizer: Pseudonymizer | None) -> None:
        """Provide the key of a keyed dataset (after loading); a wrong key raises ArtifactError."""
        check_key({"key_fingerprint": self.pseudonym_fingerprint or None}, pseudonymizer,
                  "this model")
        self.pseudonymizer = pseudonymizer

    def patient_indices(self, patient_ids, strict: bool = True) -> np.ndarray:
        """Indices of raw patient ids (pseudonymised first when the dataset is keyed)."""
        ids = list(patient_ids)
        if self.pseudonym_fingerprint:
            if self.pseudonymizer is None:
                raise UnknownIdError("this model's patient ids are pseudonymised: set "
                                     "RECOMMENDER_PSEUDONYM_KEY_FILE to the training key to look "
                                     "up a patient")
            ids = self.pseudonymizer.many(ids)
        return self.patients.to_internal(ids, strict=strict)

    def patient_index(self, patient_id: str) -> int:
        """Index of one raw patient id; UnknownIdError (naming the raw id) if not in the data."""
        key = patient_id
        if self.pseudonym_fingerprint:
            if self.pseudonymizer is None:
                self.patient_indices([patient_id])  # raises the "needs the key" error
            key = self.pseudonymizer(patient_id)
        try:
            return self.patients.index_of(key)
        except UnknownIdError:
            raise UnknownIdError(f"unknown patient id {patient_id!r}: not in the model's training "
                                 "data (use recommend_new with the patient's history)") from None

    def condition_index(self, condition_id: str | None) -> int:
        """Index of a condition id, -1 for None. Raises UnknownIdError if unknown."""
        if condition_id is None:
            return -1
        try:
            return self.conditions.index_of(condition_id)
        except UnknownIdError:
            raise UnknownIdError(f"unknown condition id {condition_id!r}: no outcome, diagnosis or "
                                 "contraindication in the training data mentions it") from None

    # --- persistence (arrays + JSON, no pickle) -------------------------------------------------

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict]:
        """Arrays and JSON-able metadata that :meth:`from_arrays` turns back into a Dataset."""
        arrays: dict[str, np.ndarray] = {
            "patient_ids": self.patients.external_ids.astype(str),
            "treatment_support": self.treatment_support,
            "demo_sex": self.demographics[C.sex].fillna("").to_numpy().astype(str),
            "demo_age_band": self.demographics["age_band"].fillna("").to_numpy().astype(str),
        }
        shapes = {}
        for name in SPARSE_FIELDS:
            matrix = getattr(self, name)
            shapes[name] = list(matrix.shape)
            for part in ("data", "indices", "indptr"):
                arrays[f"{name}.{part}"] = getattr(matrix, part)
        meta = {
            "treatment_ids": self.treatments.external_ids.tolist(),
            "feature_ids": self.features.external_ids.tolist(),
            "condition_ids": self.conditions.external_ids.tolist(),
            "shapes": shapes, "policy": self.policy.to_dict(), "side_info": self.side_info.to_dict(),
            "safety": self.safety.to_dict(),
            "harm_threshold": self.harm_threshold, "reference_year": self.reference_year,
            "fingerprint": self.fingerprint, "pseudonym_fingerprint": self.pseudonym_fingerprint,
            "treatment_names": self.treatment_names, "condition_names": self.condition_names,
        }
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], meta: Mapping) -> "Dataset":
        """Rebuild from :meth:`to_arrays` output (arrays may be memory-mapped)."""
        sparse = {name: sp.csr_matrix((arrays[f"{name}.data"], arrays[f"{name}.indices"],
                                       arrays[f"{name}.indptr"]), shape=tuple(meta["shapes"][name]))
                  for name in SPARSE_FIELDS}
        demographics = pd.DataFrame({C.sex: np.asarray(arrays["demo_sex"]).astype(object),
                                     "age_band": np.asarray(arrays["demo_age_band"]).astype(object)})
        return cls(patients=IdMap(np.asarray(arrays["patient_ids"]), "patient"),
                   treatments=IdMap(meta["treatment_ids"], "treatment"),
                   features=IdMap(meta["feature_ids"], "feature"),
                   conditions=IdMap(meta["condition_ids"], "condition"),
                   treatment_support=np.asarray(arrays["treatment_support"]),
                   demographics=demographics, policy=ConfidencePolicy(**meta["policy"]),
                   side_info=SideInfo(**meta["side_info"]), harm_threshold=meta["harm_threshold"],
                   safety=SafetyPolicy(**meta["safety"]),
                   reference_year=meta["reference_year"], fingerprint=meta["fingerprint"],
                   pseudonym_fingerprint=meta.get("pseudonym_fingerprint", ""),
                   treatment_names=meta.get("treatment_names", {}),
                   condition_names=meta.get("condition_names", {}), **sparse)


SPARSE_FIELDS = ("matrix", "history", "harmful", "patient_conditions", "contraindications",
                 "condition_outcomes", "condition_successes", "history_days", "interactions",
                 "label_counts")


# --- helpers ------------------------------------------------------------------------------------

def _frame_or_empty(frame: pd.DataFrame | None, columns: list[str]) -> pd.DataFrame:
    return frame if frame is not None else pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def _names(dictionary: pd.DataFrame | None, column: str, ids: IdMap) -> dict[str, str]:
    """id -> display name for the ids the dataset knows (empty without a dictionary)."""
    if dictionary is None or "name" not in dictionary:
        return {}
    names = dictionary.drop_duplicates(column).set_index(column)["name"].astype(str)
    known = names[names.index.isin(set(ids.external_ids))]
    return {str(k): v for k, v in known.items() if v}


def _has_entry(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Whether (row, col) is stored in ``matrix`` (explicit zeros count)."""
    pattern = sp.csr_matrix((np.ones(matrix.nnz, np.int8), matrix.indices, matrix.indptr),
                            shape=matrix.shape)
    return np.asarray(pattern[rows, cols]).ravel() > 0


def outcome_buckets(outcomes: np.ndarray, adverse: np.ndarray, positive_threshold: float) -> np.ndarray:
    """Index (int8) into :data:`OUTCOME_BUCKETS` of each outcome (adverse flag wins)."""
    outcomes = np.asarray(outcomes, dtype=np.float32)
    bucket = np.full(outcomes.shape, 4, np.int8)  # the first matching rule below wins
    for index, rule in ((3, outcomes > -0.75), (2, outcomes >= 0),
                        (1, outcomes > positive_threshold), (0, outcomes >= 0.75)):
        bucket[rule] = index
    bucket[np.asarray(adverse) == 1] = 4
    return bucket


def _days(timestamps: pd.Series) -> np.ndarray:
    """Days since 1970-01-01 (float32), -1 where the timestamp is unknown."""
    values = pd.to_datetime(pd.Series(timestamps).reset_index(drop=True), utc=True)
    days = (values - pd.Timestamp("1970-01-01", tz="UTC")) / pd.Timedelta(days=1)
    return days.fillna(-1).to_numpy(dtype=np.float32)


def _days_of(nanoseconds: np.ndarray) -> np.ndarray:
    """:func:`_days` of int64 nanoseconds since the epoch (:data:`NAT` unknown)."""
    days = nanoseconds.astype(np.float64)
    days /= 86_400_000_000_000.0
    days = days.astype(np.float32)
    days[nanoseconds == NAT] = -1.0
    return days


def _interaction_matrix(interactions: pd.DataFrame | None, treatments: IdMap) -> sp.csr_matrix:
    """Symmetric int8 CSR (n_t, n_t) of the worst severity per pair of known treatments."""
    n_t = len(treatments)
    if interactions is None or not len(interactions):
        return sp.csr_matrix((n_t, n_t), dtype=np.int8)
    a = treatments.to_internal(interactions[C.treatment_a], strict=False)
    b = treatments.to_internal(interactions[C.treatment_b], strict=False)
    severity = interactions[C.severity].map(SEVERITY_CODES).fillna(0).to_numpy()
    keep = (a >= 0) & (b >= 0) & (severity > 0) & (a != b)
    rows = np.concatenate([a[keep], b[keep]])
    cols = np.concatenate([b[keep], a[keep]])
    values = np.concatenate([severity[keep], severity[keep]]).astype(np.int8)
    order = np.lexsort((-values, cols, rows))  # per pair, the worst severity first
    rows, cols, values = rows[order], cols[order], values[order]
    first = np.ones(len(rows), bool)
    first[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
    return sp.csr_matrix((values[first], (rows[first], cols[first])), shape=(n_t, n_t), dtype=np.int8)


def _latest_rows(outcomes: pd.DataFrame) -> np.ndarray:
    """Positions of the latest row per (patient, treatment); NaT sorts first, file order breaks ties."""
    keys = [C.patient, C.treatment] if C.patient in outcomes else [C.treatment]
    order = outcomes.assign(_pos=np.arange(len(outcomes)))
    if C.timestamp in order and order[C.timestamp].notna().any():
        order = order.sort_values([C.timestamp, "_pos"], na_position="first", kind="stable")
    return order.drop_duplicates(keys, keep="last")["_pos"].sort_values().to_numpy()


def _csr(rows, cols, values, shape, sum_dupes: bool = False) -> sp.csr_matrix:
    """CSR float32 from coordinates; explicit zeros are kept (they mean "tried, no effect")."""
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    values = np.asarray(values, np.float32)
    order = np.lexsort((cols, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    if sum_dupes and len(rows):
        keys = rows * shape[1] + cols
        unique, start = np.unique(keys, return_index=True)
        values = np.add.reduceat(values, start)
        rows, cols = unique // shape[1], unique % shape[1]
    return sp.csr_matrix((values, cols.astype(np.int32), _indptr(rows, shape[0])), shape=shape)


def _indptr(rows: np.ndarray, n_rows: int) -> np.ndarray:
    """CSR row pointer (int64, n_rows + 1) of entries whose sorted row indices are ``rows``."""
    indptr = np.zeros(n_rows + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return indptr


def _pattern(rows, cols, shape) -> sp.csr_matrix:
    """Boolean CSR with True at each (row, col), duplicates merged."""
    matrix = _csr(rows, cols, np.ones(len(rows), np.float32), shape, sum_dupes=True)
    return sp.csr_matrix((np.ones(matrix.nnz, bool), matrix.indices, matrix.indptr), shape=shape)


def _demographics(patients: IdMap, table: pd.DataFrame, reference_year: int | None) -> pd.DataFrame:
    """Per patient index: sex and age band (strings, None when unknown)."""
    rows = patients.to_internal(table[C.patient], strict=False)
    known = rows >= 0
    return _coded_demographics(
        len(patients), rows[known],
        table[C.sex].to_numpy(object)[known] if C.sex in table else None,
        table[C.birth_year].astype("Int64").array[known] if C.birth_year in table else None,
        reference_year)


def _coded_demographics(n_patients: int, rows: np.ndarray | None, sex: np.ndarray | None,
                        birth_year, reference_year: int | None) -> pd.DataFrame:
    """Sex and age band per patient index from the patients-table rows ``rows`` (patient indices).

    Sex is None where blank and NaN for a patient without a row, as a left join leaves it; the
    age band is None where unknown.
    """
    if sex is None:
        sex_column = np.full(n_patients, None, dtype=object)
    else:
        sex_column = np.full(n_patients, np.nan, dtype=object)
        sex_column[rows] = np.where(sex == "", None, sex)
    bands = np.full(n_patients, None, dtype=object)
    if birth_year is not None and reference_year and len(rows):
        known = ~np.asarray(pd.isna(birth_year))
        years = np.asarray(birth_year[known], dtype=np.int64)
        low = np.maximum(0, (reference_year - years) // 10 * 10)
        lows, codes = np.unique(low, return_inverse=True)
        labels = np.array([f"{value}-{value + 9}" for value in lows.tolist()], dtype=object)
        bands[rows[known]] = labels[codes]
    frame = pd.DataFrame({C.sex: pd.Series(sex_column, dtype=object)})
    frame["age_band"] = bands
    return frame


def _outcome_matrices(p: np.ndarray, t: np.ndarray, outcome: np.ndarray, timestamp: np.ndarray,
                      harm: np.ndarray, shape: tuple[int, int], order: np.ndarray | None = None):
    """history, history_days, harmful (CSR ``shape``) and treatment_support from outcome rows.

    One stable sort of the rows by (patient, treatment) (``order``, computed when None) gives
    every matrix: the latest row of each pair (by timestamp, NaT first, then file order) fills
    ``history`` and ``history_days``; a pair is harmful if any of its rows is.
    """
    n_p, n_t = shape
    if order is None:
        key = p.astype(np.int64)
        key *= n_t
        key += t
        order = np.argsort(key, kind="stable")
        del key
    head, last = group_edges(p[order], t[order])  # first / last row of each pair, sorted
    latest = _latest_of_groups(order, head, last, timestamp)
    harmed = np.zeros(len(latest), bool)
    harmed[np.cumsum(head, dtype=_counter(len(head)))[harm[order]] - 1] = True
    del order, head, last
    rows, cols = p[latest], t[latest]
    indptr = _indptr(rows, n_p)
    history = sp.csr_matrix((outcome[latest], cols, indptr), shape=shape)
    history_days = sp.csr_matrix((_days_of(timestamp[latest]), cols.copy(), indptr), shape=shape)
    harmful = sp.csr_matrix((np.ones(int(harmed.sum()), bool), cols[harmed],
                             _indptr(rows[harmed], n_p)), shape=shape)
    support = np.bincount(cols, minlength=n_t).astype(np.int64)
    return history, history_days, harmful, support


def _counter(n: int) -> type:
    """The smallest integer dtype (int32 or int64) that counts to ``n``."""
    return np.int32 if n < 2**31 else np.int64


def _latest_of_groups(order: np.ndarray, head: np.ndarray, last: np.ndarray,
                      timestamp: np.ndarray) -> np.ndarray:
    """Row of each group of a stable sort (``order``; ``head`` / ``last`` mark where groups
    begin and end) with the latest timestamp (:data:`NAT` earliest), the later row in file
    order on a tie."""
    latest = order[last]
    members = np.flatnonzero(~(head & last))  # rows of groups with more than one row
    if len(members):
        group = np.cumsum(head[:members[-1] + 1], dtype=_counter(len(head)))[members] - 1
        rows = order[members]
        last_first = np.lexsort((timestamp[rows], group))  # stable: file order within a tie
        group, rows = group[last_first], rows[last_first]
        final = np.append(group[1:] != group[:-1], True)
        latest[group[final]] = rows[final]
    return latest


def _pattern_unique(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """:func:`_pattern` for many entries: scipy's counting sort by row (repeats are or-ed)."""
    pattern = sp.coo_matrix((np.ones(len(rows), bool), (rows, cols)), shape=shape).tocsr()
    pattern.sum_duplicates()
    return pattern


def _condition_counts(codes: CohortCodes, policy: ConfidencePolicy, n_c: int, n_t: int):
    """condition_outcomes, condition_successes (CSR (n_c, n_t)) and label_counts
    (CSR (n_c + 1, n_t * n_buckets)) from the outcome rows, by counting distinct
    (condition, treatment, label, worked) keys."""
    n_b = len(OUTCOME_BUCKETS)
    key = np.where(codes.condition >= 0, codes.condition, n_c).astype(np.int64)
    key *= n_t
    key += codes.treatment
    key *= n_b
    key += outcome_buckets(codes.outcome, codes.adverse, policy.positive_threshold)
    key *= 2
    key += policy.worked(codes.outcome)
    which, uniques = pd.factorize(key)
    del key
    counts = np.bincount(which, minlength=len(uniques))
    del which
    order = np.argsort(uniques)
    uniques, counts = uniques[order], counts[order]
    by_label, (n, n_worked) = _sum_sorted(uniques // 2, counts, counts * (uniques % 2))
    by_pair, (n_pair, worked_pair) = _sum_sorted(by_label // n_b, n, n_worked)
    with_c = by_pair < n_c * n_t
    pair_rows = by_pair[with_c] // n_t
    pair_cols = (by_pair[with_c] % n_t).astype(np.int32)
    shape_ct = (n_c, n_t)
    condition_outcomes = sp.csr_matrix((n_pair[with_c].astype(np.float32), pair_cols,
                                        _indptr(pair_rows, n_c)), shape=shape_ct)
    condition_successes = sp.csr_matrix((worked_pair[with_c].astype(np.float32), pair_cols.copy(),
                                         _indptr(pair_rows, n_c)), shape=shape_ct)
    width = n_t * n_b
    with_c = by_label < n_c * width
    every = np.bincount(by_label % width, weights=n, minlength=width)
    columns = np.flatnonzero(every)
    label_rows = np.concatenate([by_label[with_c] // width, np.full(len(columns), n_c)])
    label_counts = sp.csr_matrix((
        np.concatenate([n[with_c], every[columns]]).astype(np.float32),
        np.concatenate([by_label[with_c] % width, columns]).astype(np.int32),
        _indptr(label_rows, n_c + 1)), shape=(n_c + 1, width))
    return condition_outcomes, condition_successes, label_counts


def _sum_sorted(keys: np.ndarray, *values: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Distinct sorted ``keys`` and each of ``values`` summed over equal keys."""
    if not len(keys):
        return keys, [v for v in values]
    starts = np.flatnonzero(np.append(True, keys[1:] != keys[:-1]))
    return keys[starts], [np.add.reduceat(v, starts) for v in values]


def _hstack(blocks: list[sp.csr_matrix]) -> sp.csr_matrix:
    """``scipy.sparse.hstack(blocks, format="csr", dtype=float32)`` for canonical CSR blocks of
    the same rows, written straight into the result (no concatenated copies of the blocks)."""
    n_rows, n_cols = blocks[0].shape[0], sum(block.shape[1] for block in blocks)
    nnz = sum(block.nnz for block in blocks)
    index = np.int32 if max(nnz, n_cols) <= np.iinfo(np.int32).max else np.int64
    counts = [np.diff(block.indptr) for block in blocks]
    indptr = np.zeros(n_rows + 1, index)
    np.cumsum(sum(counts), out=indptr[1:])
    indices, data = np.empty(nnz, index), np.empty(nnz, np.float32)
    row_start, first_column = indptr[:-1].astype(np.int64), 0
    for block, count in zip(blocks, counts):  # each block's part of a row follows the last one's
        where = np.repeat((row_start - block.indptr[:-1]).astype(index), count)
        where += np.arange(block.nnz, dtype=index)
        indices[where] = block.indices + first_column if first_column else block.indices
        data[where] = block.data
        del where
        row_start += count
        first_column += block.shape[1]
    return sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols))


def _one_per_row(columns: list[np.ndarray], offset: int, n_rows: int, n_cols: int,
                 value: np.float32) -> sp.csr_matrix:
    """CSR (n_rows, n_cols) with ``value`` at column ``columns[k][r] - offset`` of row ``r`` for
    each k where that column is >= 0; later arrays of ``columns`` hold later columns."""
    if not columns:
        return sp.csr_matrix((n_rows, n_cols), dtype=np.float32)
    stacked = np.stack(columns, axis=1)
    present = stacked >= 0
    indices = (stacked[present] - offset).astype(np.int32)
    indptr = np.zeros(n_rows + 1, np.int64)
    np.cumsum(present.sum(axis=1), out=indptr[1:])
    return sp.csr_matrix((np.full(len(indices), value, np.float32), indices, indptr),
                         shape=(n_rows, n_cols))


def _feature_ids(side_info: SideInfo, conditions: IdMap, demographics: pd.DataFrame) -> IdMap:
    ids: list[str] = []
    if side_info.conditions:
        ids += [FEATURE_CONDITION + c for c in conditions.external_ids]
    if side_info.age_band:
        ids += sorted(FEATURE_AGE + b for b in demographics["age_band"].dropna().unique())
    if side_info.sex:
        ids += sorted(FEATURE_SEX + s for s in demographics[C.sex].dropna().unique())
    return IdMap(ids, "feature")
