"""Dataset: canonical tables -> id maps and sparse matrices the models and the ranker use.

External ids become indices here and nowhere else. Shapes used throughout the engine:

- ``n_p`` patients, ``n_t`` treatments, ``n_f`` side-information features, ``n_c`` conditions;
- ``matrix``: CSR (n_p, n_t + n_f) float32 signed confidences (:mod:`recommender.confidence`);
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

from .columns import Columns as C
from .confidence import ConfidencePolicy
from .exceptions import UnknownIdError
from .feedback import PREFERENCES
from .ids import IdMap
from .io import CohortTables, parse_outcomes
from .pseudonym import Pseudonymizer, check_key
from .safety import SEVERITY_CODES, SafetyPolicy

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
        """Build from validated tables (:func:`recommender.io.read_tables`).

        With a ``pseudonymizer`` every patient id is replaced by its keyed hash here, so the
        dataset (and any artifact saved from it) never holds a raw id. ``feedback``
        (:func:`recommender.feedback.read_feedback`, patient ids as the model holds them) adds
        clinicians' decisions as weak preferences of strength ``feedback_weight``.
        """
        policy, side_info = policy or ConfidencePolicy(), side_info or SideInfo()
        if pseudonymizer is not None:
            tables = _pseudonymise(tables, pseudonymizer)
        outcomes = tables.outcomes
        patient_conditions = _frame_or_empty(tables.patient_conditions, [C.patient, C.condition])
        contraindications = _frame_or_empty(tables.contraindications, [C.treatment, C.condition])
        patients_table = _frame_or_empty(tables.patients, [C.patient])

        patients = IdMap.from_values(pd.concat([outcomes[C.patient], patient_conditions[C.patient],
                                                patients_table[C.patient]]), "patient")
        treatments = IdMap(np.sort(outcomes[C.treatment].unique()), "treatment")
        conditions = IdMap(np.sort(pd.unique(pd.concat([
            outcomes[C.condition].dropna(), patient_conditions[C.condition],
            contraindications[C.condition]]))), "condition")
        timestamps = outcomes[C.timestamp]
        reference_year = int(timestamps.max().year) if timestamps.notna().any() else None
        demographics = _demographics(patients, patients_table, reference_year)

        p = patients.to_internal(outcomes[C.patient])
        t = treatments.to_internal(outcomes[C.treatment])
        n_p, n_t = len(patients), len(treatments)
        latest = _latest_rows(outcomes)
        history = _csr(p[latest], t[latest], outcomes[C.outcome].to_numpy()[latest], (n_p, n_t))
        history_days = _csr(p[latest], t[latest], _days(timestamps.iloc[latest]), (n_p, n_t))
        harm_rows = (outcomes[C.adverse].to_numpy() == 1) | (outcomes[C.outcome].to_numpy() < harm_threshold)
        harmful = _pattern(p[harm_rows], t[harm_rows], (n_p, n_t))

        pc = _pattern(patients.to_internal(patient_conditions[C.patient]),
                      conditions.to_internal(patient_conditions[C.condition]), (n_p, len(conditions)))
        known_t = contraindications[C.treatment].isin(set(treatments.external_ids)).to_numpy()
        ci = _pattern(conditions.to_internal(contraindications[C.condition][known_t]),
                      treatments.to_internal(contraindications[C.treatment][known_t]),
                      (len(conditions), n_t))
        has_c = outcomes[C.condition].notna().to_numpy()
        c = conditions.to_internal(outcomes[C.condition][has_c])
        worked = policy.worked(outcomes[C.outcome].to_numpy()[has_c]).astype(np.float32)
        shape_ct = (len(conditions), n_t)
        condition_outcomes = _csr(c, t[has_c], np.ones(len(c), np.float32), shape_ct, sum_dupes=True)
        condition_successes = _csr(c, t[has_c], worked, shape_ct, sum_dupes=True)
        support = np.asarray(_pattern(p, t, (n_p, n_t)).sum(axis=0)).ravel().astype(np.int64)
        labels = outcome_buckets(outcomes[C.outcome].to_numpy(), outcomes[C.adverse].to_numpy(),
                                 policy.positive_threshold)
        all_c = np.full(len(outcomes), len(conditions))
        label_counts = _csr(np.concatenate([c, all_c]),
                            np.concatenate([t[has_c], t]) * len(OUTCOME_BUCKETS)
                            + np.concatenate([labels[has_c], labels]),
                            np.ones(len(c) + len(outcomes), np.float32),
                            (len(conditions) + 1, n_t * len(OUTCOME_BUCKETS)), sum_dupes=True)

        features = _feature_ids(side_info, conditions, demographics)
        dataset = cls(patients=patients, treatments=treatments, features=features,
                      conditions=conditions, matrix=None, history=history, harmful=harmful,
                      patient_conditions=pc, contraindications=ci,
                      condition_outcomes=condition_outcomes,
                      condition_successes=condition_successes, treatment_support=support,
                      history_days=history_days, label_counts=label_counts,
                      interactions=_interaction_matrix(tables.interactions, treatments),
                      demographics=demographics, policy=policy, side_info=side_info,
                      safety=safety or SafetyPolicy(),
                      harm_threshold=harm_threshold, reference_year=reference_year,
                      fingerprint=tables.fingerprint,
                      pseudonym_fingerprint=pseudonymizer.fingerprint if pseudonymizer else "",
                      pseudonymizer=pseudonymizer,
                      treatment_names=_names(tables.treatments, C.treatment, treatments),
                      condition_names=_names(tables.conditions, C.condition, conditions))
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
        values = history.copy()
        values.data = self.policy.values(values.data)
        side = self._side_columns(patient_conditions, self.demographics)
        return sp.hstack([values, side], format="csr", dtype=np.float32)

    def _side_columns(self, patient_conditions: sp.csr_matrix, demographics: pd.DataFrame) -> sp.csr_matrix:
        """Side-feature block (n_rows, n_f) of the matrix, every set entry equal to ``side_value``."""
        n_rows = patient_conditions.shape[0]
        rows, cols = [], []
        if self.side_info.conditions:  # condition features come first, in condition index order
            coo = patient_conditions.tocoo()
            rows.append(coo.row)
            cols.append(coo.col)
        for enabled, column, prefix in ((self.side_info.age_band, "age_band", FEATURE_AGE),
                                        (self.side_info.sex, C.sex, FEATURE_SEX)):
            if enabled:
                labels = (prefix + demographics[column].fillna("").astype(str)).to_numpy()
                idx = self.features.to_internal(labels, strict=False)
                rows.append(np.flatnonzero(idx >= 0))
                cols.append(idx[idx >= 0])
        rows = np.concatenate(rows) if rows else np.array([], np.int64)
        cols = np.concatenate(cols) if cols else np.array([], np.int64)
        values = np.full(len(rows), self.policy.side_value, np.float32)
        return _csr(rows, cols, values, (n_rows, len(self.features)))

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
        start, stop = self.condition_outcomes.indptr[condition:condition + 2]
        indices = self.condition_outcomes.indices[start:stop]
        return np.sort(indices[self.condition_outcomes.data[start:stop] > 0])

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
        index = self.patients.index_of(key) if key in self.patients else -1
        if index < 0:
            raise UnknownIdError(f"unknown patient id {patient_id!r}: not in the model's training "
                                 "data (use recommend_new with the patient's history)")
        return index

    def condition_index(self, condition_id: str | None) -> int:
        """Index of a condition id, -1 for None. Raises UnknownIdError if unknown."""
        if condition_id is None:
            return -1
        if condition_id not in self.conditions:
            raise UnknownIdError(f"unknown condition id {condition_id!r}: no outcome, diagnosis or "
                                 "contraindication in the training data mentions it")
        return self.conditions.index_of(condition_id)

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


def _pseudonymise(tables: CohortTables, pseudonymizer: Pseudonymizer) -> CohortTables:
    """The same tables with every patient id replaced by its pseudonym."""
    frames = {}
    for name in ("outcomes", "patients", "patient_conditions"):
        frame = getattr(tables, name)
        if frame is not None:
            unique = frame[C.patient].unique()
            mapping = dict(zip(unique, pseudonymizer.many(unique)))
            frames[name] = frame.assign(**{C.patient: frame[C.patient].map(mapping)})
    keyed = tables.replace(**frames)
    keyed.fingerprint = tables.fingerprint  # the data's identity is that of the source files
    return keyed


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
    """Index into :data:`OUTCOME_BUCKETS` of each outcome (adverse flag wins)."""
    outcomes = np.asarray(outcomes, dtype=np.float32)
    bucket = np.select([outcomes >= 0.75, outcomes > positive_threshold, outcomes >= 0,
                        outcomes > -0.75], [0, 1, 2, 3], default=4)
    return np.where(np.asarray(adverse) == 1, 4, bucket).astype(np.int64)


def _days(timestamps: pd.Series) -> np.ndarray:
    """Days since 1970-01-01 (float32), -1 where the timestamp is unknown."""
    values = pd.to_datetime(pd.Series(timestamps).reset_index(drop=True), utc=True)
    days = (values - pd.Timestamp("1970-01-01", tz="UTC")) / pd.Timedelta(days=1)
    return days.fillna(-1).to_numpy(dtype=np.float32)


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
    indptr = np.zeros(shape[0] + 1, np.int64)
    np.add.at(indptr, rows + 1, 1)
    return sp.csr_matrix((values, cols.astype(np.int32), np.cumsum(indptr)), shape=shape)


def _pattern(rows, cols, shape) -> sp.csr_matrix:
    """Boolean CSR with True at each (row, col), duplicates merged."""
    matrix = _csr(rows, cols, np.ones(len(rows), np.float32), shape, sum_dupes=True)
    return sp.csr_matrix((np.ones(matrix.nnz, bool), matrix.indices, matrix.indptr), shape=shape)


def _demographics(patients: IdMap, table: pd.DataFrame, reference_year: int | None) -> pd.DataFrame:
    """Per patient index: sex and age band (strings, None when unknown)."""
    frame = pd.DataFrame({C.patient: patients.external_ids})
    if C.sex in table:
        frame = frame.merge(table[[C.patient, C.sex]], on=C.patient, how="left")
    else:
        frame[C.sex] = None
    years = (table.set_index(C.patient)[C.birth_year] if C.birth_year in table
             else pd.Series(dtype="Int64"))
    frame["age_band"] = [age_band(y, reference_year) if reference_year else None
                         for y in years.reindex(frame[C.patient]).to_numpy()]
    frame[C.sex] = frame[C.sex].replace("", None)
    return frame[[C.sex, "age_band"]].reset_index(drop=True)


def _feature_ids(side_info: SideInfo, conditions: IdMap, demographics: pd.DataFrame) -> IdMap:
    ids: list[str] = []
    if side_info.conditions:
        ids += [FEATURE_CONDITION + c for c in conditions.external_ids]
    if side_info.age_band:
        ids += sorted(FEATURE_AGE + b for b in demographics["age_band"].dropna().unique())
    if side_info.sex:
        ids += sorted(FEATURE_SEX + s for s in demographics[C.sex].dropna().unique())
    return IdMap(ids, "feature")
