"""The cohort's dated events, kept beside the Dataset's matrices while a model trains.

The matrices of :class:`~recommender.data.dataset.Dataset` summarise each patient's *current*
state (the latest outcome per treatment, every diagnosis, the latest value of each lab). A model
of treatment decisions needs the state at each decision instead, so the Dataset built from tables
also carries :class:`CohortEvents`: every outcome row, diagnosis onset and observation, in the
Dataset's indices, with its time. Events are a training input only: artifacts do not store them.

Times are int64 nanoseconds since 1970-01-01 UTC, :data:`~recommender.data.codes.NAT` (the
smallest int64) where unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..columns import Columns as C
from .codes import NAT, CohortCodes
from .ids import IdMap
from .matrices import csr_of


@dataclass
class CohortEvents:
    """Dated events of one cohort, in a Dataset's indices.

    Attributes
    ----------
    patient, treatment, condition : ndarray of int32, shape (n_rows,)
        Each outcome row (condition -1 when the row names none), in file order.
    time : ndarray of int64, shape (n_rows,)
        Start of the treatment.
    outcome : ndarray of float32, shape (n_rows,)
    adverse : ndarray of int8, shape (n_rows,)
    dx_patient, dx_condition : ndarray of int32, shape (n_dx,)
        Diagnoses and allergies, one per (patient, condition).
    dx_time : ndarray of int64, shape (n_dx,)
        Earliest known onset; NAT: unknown (present at every decision).
    obs_patient, obs_code : ndarray of int32, shape (n_obs,)
        Observations; ``obs_code`` indexes the Dataset's ``observation_ids``.
    obs_time : ndarray of int64, shape (n_obs,)
    obs_value : ndarray of float32, shape (n_obs,)
    """

    patient: np.ndarray
    treatment: np.ndarray
    condition: np.ndarray
    time: np.ndarray
    outcome: np.ndarray
    adverse: np.ndarray
    dx_patient: np.ndarray
    dx_condition: np.ndarray
    dx_time: np.ndarray
    obs_patient: np.ndarray
    obs_code: np.ndarray
    obs_time: np.ndarray
    obs_value: np.ndarray


def cohort_events(codes: CohortCodes) -> tuple[CohortEvents, IdMap]:
    """The events of ``codes`` (before any pseudonymisation: observations name raw patient ids)
    and the id map of the observation codes (sorted)."""
    dx = pd.DataFrame(
        {
            "p": codes.pc_patient,
            "c": codes.pc_condition,
            "t": codes.pc_time
            if codes.pc_time is not None
            else np.full(len(codes.pc_patient), NAT),
        }
    )
    # the earliest known onset of each pair (NAT, the smallest int64, only when none is known)
    dx["known"] = np.where(dx["t"] == NAT, np.iinfo(np.int64).max, dx["t"])
    dx = dx.groupby(["p", "c"], sort=True, as_index=False)["known"].min()
    dx_time = np.where(dx["known"] == np.iinfo(np.int64).max, NAT, dx["known"]).astype(np.int64)
    obs = codes.observations
    if obs is not None and len(obs):
        patient = pd.Index(codes.patient_ids).get_indexer(obs[C.patient])
        keep = patient >= 0  # a patient the cohort has no other row for has no decision either
        code_ids = pd.Index(np.sort(obs[C.code][keep].unique()))
        obs_code = code_ids.get_indexer(obs[C.code][keep])
        obs_time = np.asarray(
            pd.to_datetime(obs[C.timestamp][keep], utc=True).array.as_unit("ns").asi8, np.int64
        )
        obs_arrays = (patient[keep], obs_code, obs_time, obs[C.value][keep].to_numpy(np.float32))
    else:
        code_ids = pd.Index([], dtype=object)
        obs_arrays = (np.zeros(0, np.int64),) * 3 + (np.zeros(0, np.float32),)
    events = CohortEvents(
        patient=np.asarray(codes.patient, np.int32),
        treatment=np.asarray(codes.treatment, np.int32),
        condition=np.asarray(codes.condition, np.int32),
        time=np.asarray(codes.timestamp, np.int64),
        outcome=np.asarray(codes.outcome, np.float32),
        adverse=np.asarray(codes.adverse, np.int8),
        dx_patient=dx["p"].to_numpy(np.int32),
        dx_condition=dx["c"].to_numpy(np.int32),
        dx_time=dx_time,
        obs_patient=obs_arrays[0].astype(np.int32),
        obs_code=obs_arrays[1].astype(np.int32),
        obs_time=obs_arrays[2].astype(np.int64),
        obs_value=obs_arrays[3],
    )
    return events, IdMap([str(c) for c in code_ids], "observation")


def latest_observations(events: CohortEvents, n_patients: int, n_codes: int) -> sp.csr_matrix:
    """CSR float32 (n_patients, n_codes): each patient's latest value of each code (a value
    without a time counts as the earliest; among equal times the later row wins)."""
    order = np.lexsort((np.arange(len(events.obs_time)), events.obs_time))
    p, c, v = events.obs_patient[order], events.obs_code[order], events.obs_value[order]
    key = p.astype(np.int64) * max(n_codes, 1) + c
    last = np.unique(key[::-1], return_index=True)[1]
    rows = len(key) - 1 - last  # the last row of each (patient, code) in time order
    return csr_of(p[rows], c[rows], v[rows], (n_patients, n_codes))  # explicit zeros kept
