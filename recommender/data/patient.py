"""One patient (or a batch of patients) as the engine sees them, in a dataset's indices.

- :class:`PatientRecord`: a patient outside the training data, encoded against a dataset
  (:func:`encode_patient`);
- :class:`Query`: the patients to score, known ones by index or an encoded record; what every
  model's ``score`` and every safety rule take.

Both hold indices of one :class:`~recommender.data.dataset.Dataset`; external ids are
converted on the way in (here) and on the way out (the ranking answers).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..columns import Columns as C
from ..exceptions import DataValidationError
from ..utils import sparse_rows
from .dataset import Dataset
from .matrices import csr_of, days_since_epoch, latest_rows, pattern_of
from .side_info import age_band
from .tables import parse_outcomes


@dataclass(frozen=True)
class NewPatient:
    """What a request tells of a patient outside the data beyond their outcomes and conditions
    (read by models that use covariates)."""

    sex: str | None = None
    birth_year: int | None = None
    #: Latest value per observation code (``observations.code`` ids).
    observations: dict = field(default_factory=dict)


@dataclass
class PatientRecord:
    """A patient encoded against a dataset: the input of scoring and of the safety rules.

    ``row`` is CSR (1, n_t + n_f), ``history`` CSR (1, n_t) of latest outcomes and
    ``history_days`` their days (see :class:`~recommender.data.dataset.Dataset`); ``tried``,
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
    new_patient: NewPatient = field(default_factory=NewPatient)


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
    new_patient : NewPatient or None
        For a patient outside the data: sex, birth year and observations from the request.
    times : ndarray of int64, shape (n,), or None
        For known patients, the time each decision is asked about (ns since the epoch): models
        of the patient's state then (the outcome model) read the record as it was at that time
        instead of now. None: now. Evaluation of past decisions sets it.
    """

    rows: sp.csr_matrix
    patients: np.ndarray | None
    conditions: np.ndarray
    patient_conditions: sp.csr_matrix
    history: sp.csr_matrix
    harmful: sp.csr_matrix
    history_days: sp.csr_matrix
    new_patient: NewPatient | None = None
    times: np.ndarray | None = None
    #: What a model derived from this query, kept while the query is answered (a model asked
    #: for scores, then for explanations, of the same patient reads their record once).
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def known(
        cls,
        dataset: Dataset,
        patients: np.ndarray,
        conditions: np.ndarray,
        times: np.ndarray | None = None,
    ) -> Query:
        """Query for patients in ``dataset`` (indices), each asking about ``conditions`` (-1: none)."""
        take = sparse_rows.take_rows
        return cls(
            rows=take(dataset.matrix, patients),
            patients=patients,
            conditions=conditions,
            patient_conditions=take(dataset.patient_conditions, patients),
            history=take(dataset.history, patients),
            harmful=take(dataset.harmful, patients),
            history_days=take(dataset.history_days, patients),
            times=times,
        )

    @classmethod
    def for_record(cls, dataset: Dataset, record: PatientRecord, condition: int) -> Query:
        """Query for one patient outside the training data, asking about ``condition``."""
        return cls(
            rows=record.row,
            patients=None,
            conditions=np.array([condition]),
            patient_conditions=sparse_rows.pattern(record.conditions, len(dataset.conditions)),
            history=record.history,
            harmful=sparse_rows.pattern(record.harmful, dataset.n_treatments),
            history_days=record.history_days,
            new_patient=record.new_patient,
        )

    def __len__(self) -> int:
        return self.rows.shape[0]


def encode_patient(
    dataset: Dataset,
    history: Sequence[Mapping] = (),
    conditions: Iterable[str] = (),
    sex: str | None = None,
    birth_year: int | None = None,
    observations: Mapping[str, float] | None = None,
) -> PatientRecord:
    """Encode a patient who is not in ``dataset``.

    Parameters
    ----------
    dataset : Dataset
    history : sequence of mappings
        Each with ``treatment_id`` and ``outcome`` (number in [-1, 1] or a label), optional
        ``timestamp`` (ISO-8601) and ``adverse`` (0/1). The latest per treatment wins.
    conditions : iterable of str
        Condition ids (diagnoses and allergies).
    sex, birth_year : optional demographics for the age/sex side columns.
    observations : mapping of observation code -> latest value, optional
        Labs and vitals (``loinc|33914-3`` ...), read by models that use covariates; a value
        that is not a finite number raises DataValidationError.

    Unknown treatment and condition ids cannot inform the factors; they are listed in
    ``ignored``. Raises :class:`~recommender.exceptions.DataValidationError` for a bad outcome.
    """
    frame = pd.DataFrame(list(history))
    for column, default in (
        (C.treatment, ""),
        (C.outcome, ""),
        (C.timestamp, None),
        (C.adverse, 0),
    ):
        if column not in frame:
            frame[column] = default
    frame[C.outcome] = parse_outcomes(frame[C.outcome], "history")
    frame[C.timestamp] = pd.to_datetime(
        frame[C.timestamp], utc=True, errors="coerce", format="ISO8601"
    )
    frame[C.adverse] = pd.to_numeric(frame[C.adverse], errors="coerce").fillna(0)
    frame[C.treatment] = frame[C.treatment].astype(str)
    n_t = dataset.n_treatments
    t = dataset.treatments.to_internal(frame[C.treatment], strict=False)  # one hash lookup each
    known = t >= 0
    ignored: list[str] = frame.loc[~known, C.treatment].unique().tolist()
    frame, t = frame[known].reset_index(drop=True), t[known]
    latest = latest_rows(frame)
    one_row = np.zeros(len(latest), np.int64)
    history_row = csr_of(one_row, t[latest], frame[C.outcome].to_numpy()[latest], (1, n_t))
    days_row = csr_of(
        one_row, t[latest], days_since_epoch(frame[C.timestamp].iloc[latest]), (1, n_t)
    )
    harm = (frame[C.adverse].to_numpy() == 1) | (
        frame[C.outcome].to_numpy() < dataset.harm_threshold
    )
    condition_ids = [str(c) for c in conditions]
    c_idx = dataset.conditions.to_internal(condition_ids, strict=False)
    ignored += [c for c, i in zip(condition_ids, c_idx) if i < 0]
    c_idx = np.unique(c_idx[c_idx >= 0])
    pc = pattern_of(np.zeros(len(c_idx), np.int64), c_idx, (1, len(dataset.conditions)))
    demo = pd.DataFrame(
        {
            C.sex: [sex or ""],
            "age_band": [
                age_band(birth_year, dataset.reference_year) if dataset.reference_year else None
            ],
        }
    )
    values = history_row.copy()
    values.data = dataset.policy.values(values.data)
    row = sp.hstack([values, dataset.side_columns(pc, demo)], format="csr", dtype=np.float32)
    return PatientRecord(
        new_patient=NewPatient(sex, birth_year, _observation_values(observations)),
        row=row,
        history=history_row,
        history_days=days_row,
        tried=np.unique(t),
        harmful=np.unique(t[harm]),
        conditions=c_idx,
        ignored=ignored,
    )


@dataclass
class StoredRecord:
    """What a dataset holds of one of its patients, in external ids (for callers that merge it
    with fresher data, such as a CDS Hooks prefetch).

    Attributes
    ----------
    history : list of dict
        One entry per treatment tried, in treatment-index order: ``treatment_id``,
        ``outcome`` (the latest, in [-1, 1]), ``adverse`` (1 if it ever harmed the patient) and
        ``timestamp`` (ISO date of that latest outcome; absent when unknown).
    conditions : list of str
        Diagnoses and allergies, in condition-index order.
    sex : str or None
    """

    history: list[dict]
    conditions: list[str]
    sex: str | None


_EPOCH = np.datetime64("1970-01-01", "D")


def stored_record(dataset: Dataset, patient: int) -> StoredRecord:
    """The :class:`StoredRecord` of the patient with index ``patient`` in ``dataset``."""
    columns, outcomes = sparse_rows.row_arrays(dataset.history, patient)
    day_columns, days = sparse_rows.row_arrays(dataset.history_days, patient)
    day_of = dict(zip(day_columns.tolist(), days.tolist()))
    harmed = set(sparse_rows.row_arrays(dataset.harmful, patient)[0].tolist())
    treatment_ids = dataset.treatments.external_ids
    history = []
    for column, outcome in zip(columns.tolist(), outcomes.tolist()):
        item = {
            "treatment_id": str(treatment_ids[column]),
            "outcome": float(outcome),
            "adverse": int(column in harmed),
        }
        day = day_of.get(column, -1)
        if day >= 0:
            item["timestamp"] = str(_EPOCH + int(day))
        history.append(item)
    condition_ids = dataset.conditions.external_ids
    conditions = [
        str(condition_ids[c])
        for c in sparse_rows.row_arrays(dataset.patient_conditions, patient)[0].tolist()
    ]
    sex = None
    if C.sex in dataset.demographics:
        value = dataset.demographics[C.sex].iloc[patient]
        sex = str(value) if isinstance(value, str) and value else None
    return StoredRecord(history=history, conditions=conditions, sex=sex)


def _observation_values(observations: Mapping[str, float] | None) -> dict[str, float]:
    """Observation code -> finite float (DataValidationError naming the code otherwise)."""
    values = {}
    for code, value in (observations or {}).items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if not np.isfinite(number):
            raise DataValidationError(
                f"observation {str(code)!r}: value {value!r} is not a finite number",
                file="observations",
                column=str(code),
            )
        values[str(code)] = number
    return values
