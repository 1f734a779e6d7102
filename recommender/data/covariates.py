"""Patient covariates at a point in time: age, sex, diagnoses and the latest observations.

Three sources give the same :class:`Covariates`:

- :func:`covariates_at`: each patient as they were at a given time, from the Dataset's dated
  events (training). A diagnosis counts once its onset is on or before the time (an unknown
  onset counts always); an observation counts only when it was measured on or before the time
  (never a later one, and never one without a time);
- :func:`current_covariates`: known patients as they are now, from the state an artifact saves
  (serving);
- :func:`new_patient_covariates`: a patient outside the data, from what a request says.

Ages are in years at the time (for the current state: at the data's latest date).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..columns import Columns as C
from ..utils.sparse_rows import take_rows
from .codes import NAT
from .dataset import Dataset

NS_PER_YEAR = 365.2425 * 86_400 * 1e9


@dataclass
class Covariates:
    """Covariates of ``n`` (patient, time) pairs.

    Attributes
    ----------
    age : ndarray of float32, shape (n,)
        Years, NaN when the birth year or the time is unknown.
    sex : ndarray of object, shape (n,)
        As recorded ("" when unknown).
    diagnoses : CSR bool, shape (n, n_c)
        Diagnoses and allergies present at the time.
    observations : ndarray of float32, shape (n, len(codes))
        Latest value of each requested observation code, NaN when none was measured.
    """

    age: np.ndarray
    sex: np.ndarray
    diagnoses: sp.csr_matrix
    observations: np.ndarray

    def __len__(self) -> int:
        return len(self.age)


def covariates_at(
    dataset: Dataset, patients: np.ndarray, times: np.ndarray, codes: np.ndarray
) -> Covariates:
    """Each of ``patients`` (indices) as at ``times`` (int64 ns; NAT: the latest date) for the
    observation codes ``codes`` (indices into ``dataset.observation_ids``)."""
    events = dataset.events
    if events is None:
        raise ValueError("covariates at past times need a Dataset built from tables (events)")
    patients = np.asarray(patients, np.int64)
    times = np.where(np.asarray(times) == NAT, _now(dataset), np.asarray(times, np.int64))
    # diagnoses: the patient's rows with onset <= time (or unknown)
    dx_order = np.lexsort((events.dx_condition, events.dx_patient))
    dx_p, dx_c, dx_t = (
        a[dx_order] for a in (events.dx_patient, events.dx_condition, events.dx_time)
    )
    start = np.searchsorted(dx_p, patients)
    count = np.searchsorted(dx_p, patients, side="right") - start
    rows = np.repeat(np.arange(len(patients)), count)
    at = (
        np.repeat(start, count)
        + np.arange(count.sum())
        - np.repeat(np.cumsum(count) - count, count)
    )
    present = (dx_t[at] == NAT) | (dx_t[at] <= times[rows])
    diagnoses = sp.csr_matrix(
        (np.ones(int(present.sum()), bool), (rows[present], dx_c[at][present])),
        shape=(len(patients), len(dataset.conditions)),
    )
    values = np.full((len(patients), len(codes)), np.nan, np.float32)
    timed = events.obs_time != NAT
    for j, code in enumerate(np.asarray(codes).tolist()):
        values[:, j] = _latest_before(
            events.obs_patient[timed & (events.obs_code == code)],
            events.obs_time[timed & (events.obs_code == code)],
            events.obs_value[timed & (events.obs_code == code)],
            patients,
            times,
        )
    return Covariates(
        age=_age(dataset, patients, times),
        sex=_sex(dataset, patients),
        diagnoses=diagnoses,
        observations=values,
    )


def current_covariates(dataset: Dataset, patients: np.ndarray, codes: np.ndarray) -> Covariates:
    """Known ``patients`` (indices) as the saved state holds them now."""
    patients = np.asarray(patients, np.int64)
    values = np.full((len(patients), len(codes)), np.nan, np.float32)
    if dataset.latest_observations is not None and len(codes):
        latest = take_rows(dataset.latest_observations, patients)
        position = np.full(latest.shape[1], -1, np.int64)
        position[np.asarray(codes, np.int64)] = np.arange(len(codes))
        column = position[latest.indices]
        rows = np.repeat(np.arange(len(patients)), np.diff(latest.indptr))
        keep = column >= 0
        values[rows[keep], column[keep]] = latest.data[keep]  # stored entries: a zero is a value
    times = np.full(len(patients), _now(dataset), np.int64)
    return Covariates(
        age=_age(dataset, patients, times),
        sex=_sex(dataset, patients),
        diagnoses=take_rows(dataset.patient_conditions, patients),
        observations=values,
    )


def new_patient_covariates(
    dataset: Dataset,
    conditions: Iterable[str],
    codes: np.ndarray,
    sex: str | None = None,
    birth_year: int | None = None,
    observations: Mapping[str, float] | None = None,
) -> Covariates:
    """One patient outside the data: their condition ids, sex, birth year and latest observation
    values by code (``observations.code`` ids; unknown ids are ignored)."""
    c_idx = dataset.conditions.to_internal([str(c) for c in conditions], strict=False)
    c_idx = np.unique(c_idx[c_idx >= 0])
    diagnoses = sp.csr_matrix(
        (np.ones(len(c_idx), bool), (np.zeros(len(c_idx), np.int64), c_idx)),
        shape=(1, len(dataset.conditions)),
    )
    values = np.full((1, len(codes)), np.nan, np.float32)
    observation_ids = dataset.observation_ids.external_ids
    for j, code in enumerate(np.asarray(codes).tolist()):
        value = (observations or {}).get(str(observation_ids[code]))
        if value is not None:
            values[0, j] = float(value)
    year = np.nan if birth_year is None else float(birth_year)
    return Covariates(
        age=np.array([_now_year(dataset) - year], np.float32),
        sex=np.array([sex or ""], dtype=object),
        diagnoses=diagnoses,
        observations=values,
    )


def _latest_before(patient, time, value, patients, times) -> np.ndarray:
    """For each (patients[i], times[i]): the value of the latest row of that patient with
    time <= times[i] (ties: the later row), NaN when there is none."""
    out = np.full(len(patients), np.nan, np.float32)
    if not len(patient):
        return out
    _, ranks = np.unique(np.concatenate([time, times]), return_inverse=True)
    width = int(ranks.max()) + 1
    key = patient.astype(np.int64) * width + ranks[: len(time)]
    order = np.argsort(key, kind="stable")  # stable: the later row last among equal times
    sorted_key = key[order]
    wanted = patients.astype(np.int64) * width + ranks[len(time) :]
    at = np.searchsorted(sorted_key, wanted, side="right") - 1
    hit = (at >= 0) & (patient[order][np.maximum(at, 0)] == patients)
    out[hit] = value[order][at[hit]]
    return out


def _age(dataset: Dataset, patients: np.ndarray, times: np.ndarray) -> np.ndarray:
    if dataset.birth_year is None:
        return np.full(len(patients), np.nan, np.float32)
    years = 1970 + times / NS_PER_YEAR
    return (years - dataset.birth_year[patients]).astype(np.float32)


def _sex(dataset: Dataset, patients: np.ndarray) -> np.ndarray:
    if C.sex not in dataset.demographics:
        return np.full(len(patients), "", dtype=object)
    values = vars(dataset).get("_sex_values")  # the column as strings, made once per dataset
    if values is None:
        raw = dataset.demographics[C.sex].to_numpy(object)
        values = np.array([s if isinstance(s, str) else "" for s in raw], dtype=object)
        vars(dataset)["_sex_values"] = values
    return values[patients]


def _now(dataset: Dataset) -> int:
    """The data's latest date (ns), the time of the current state; mid-year of the reference
    year for an artifact saved before the Dataset kept it, 2000-01-01 for data without times."""
    if dataset.latest_time is not None:
        return int(dataset.latest_time)
    if dataset.reference_year is None:
        return int(pd.Timestamp("2000-01-01", tz="UTC").value)
    return int(pd.Timestamp(f"{dataset.reference_year}-07-01", tz="UTC").value)


def _now_year(dataset: Dataset) -> float:
    return 1970 + _now(dataset) / NS_PER_YEAR
