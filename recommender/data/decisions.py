"""Treatment decisions: each outcome row as the choice a clinician made at a point in time.

An *episode* is a patient's care for one condition; its *lines* are the distinct treatments
tried for it, in time order (line 0 is the first-line choice). A decision's *history* is what
the record held before it: the patient's outcomes of every treatment (for any condition) that
started strictly earlier. Rows without a condition are not decisions (nothing says what they
treated); rows without a time are decisions at an unknown time, with no history.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .codes import NAT
from .dataset import Dataset
from .events import CohortEvents


@dataclass
class Decisions:
    """Decisions of a cohort, sorted by patient, then time, then file order.

    Attributes
    ----------
    row : ndarray of int64, shape (n,)
        Index of the outcome row in the Dataset's events.
    patient, treatment, condition : ndarray of int32, shape (n,)
    time : ndarray of int64, shape (n,)
        Nanoseconds since the epoch, :data:`~recommender.data.codes.NAT` when unknown.
    line : ndarray of int32, shape (n,)
        Distinct treatments tried earlier in the same (patient, condition) episode.
    success : ndarray of bool, shape (n,)
        The treatment worked (``policy.worked``) and caused no adverse event.
    harm : ndarray of bool, shape (n,)
        Adverse flag, or an outcome below the dataset's ``harm_threshold``.
    """

    row: np.ndarray
    patient: np.ndarray
    treatment: np.ndarray
    condition: np.ndarray
    time: np.ndarray
    line: np.ndarray
    success: np.ndarray
    harm: np.ndarray

    def __len__(self) -> int:
        return len(self.row)

    def take(self, positions: np.ndarray) -> Decisions:
        """The decisions at ``positions`` (a subset, in the order given)."""
        return Decisions(**{name: getattr(self, name)[positions] for name in self.__annotations__})

    @property
    def first_line(self) -> np.ndarray:
        """Boolean (n,): the first-line decisions (line 0)."""
        return self.line == 0


def decisions(dataset: Dataset) -> Decisions:
    """The decisions of a Dataset built from tables (it needs ``dataset.events``)."""
    events = _events(dataset)
    named = np.flatnonzero(events.condition >= 0)
    order = named[np.lexsort((named, events.time[named], events.patient[named]))]
    patient, treatment = events.patient[order], events.treatment[order]
    condition, time = events.condition[order], events.time[order]
    outcome, adverse = events.outcome[order], events.adverse[order]
    harm = (adverse == 1) | (outcome < dataset.harm_threshold)
    return Decisions(
        row=order.astype(np.int64),
        patient=patient,
        treatment=treatment,
        condition=condition,
        time=time,
        line=_lines(patient, condition, treatment),
        success=dataset.policy.worked(outcome) & ~harm,
        harm=harm,
    )


def _lines(patient: np.ndarray, condition: np.ndarray, treatment: np.ndarray) -> np.ndarray:
    """For rows sorted by (patient, time): distinct treatments earlier in each (patient, condition)."""
    n = len(patient)
    episode = np.lexsort((np.arange(n), condition, patient))  # stable: time order within
    p, c, t = patient[episode], condition[episode], treatment[episode]
    start = np.ones(n, bool)
    start[1:] = (p[1:] != p[:-1]) | (c[1:] != c[:-1])
    # a treatment's first appearance in its episode starts a new line
    pair = np.lexsort((np.arange(n), t, np.cumsum(start)))
    first = np.ones(n, bool)
    ep = np.cumsum(start)[pair]
    first[1:] = (ep[1:] != ep[:-1]) | (t[pair][1:] != t[pair][:-1])
    new_line = np.zeros(n, bool)
    new_line[pair[first]] = True
    count = np.cumsum(new_line)
    episode_start = np.maximum.accumulate(np.where(start, np.arange(n), 0))
    before = count - new_line - (count[episode_start] - new_line[episode_start])
    lines = np.empty(n, np.int32)
    lines[episode] = before
    return lines


def prior_history(dataset: Dataset, decisions: Decisions) -> sp.csr_matrix:
    """CSR float32 (len(decisions), n_t): for each decision, the patient's latest outcome of each
    treatment that started strictly before it, as signed confidences (``dataset.policy``).

    The row of a decision with an unknown time is empty.
    """
    return history_at(dataset, decisions.patient, decisions.time)


def history_at(dataset: Dataset, patients: np.ndarray, at: np.ndarray) -> sp.csr_matrix:
    """CSR float32 (n, n_t): each of ``patients`` (indices) at time ``at`` (int64 ns; NAT gives
    an empty row): the latest outcome of each treatment started strictly earlier, as signed
    confidences."""
    events = _events(dataset)
    decisions = _At(np.asarray(patients, np.int64), np.asarray(at, np.int64))
    n_t = dataset.n_treatments
    # times as dense ranks, an unknown time after every known one (never "before" a decision)
    times, ranks = np.unique(np.concatenate([events.time, decisions.time]), return_inverse=True)
    ranks = ranks.astype(np.int64)
    ranks[np.concatenate([events.time, decisions.time]) == NAT] = len(times)
    ev_rank, dec_rank = ranks[: len(events.time)], ranks[len(events.time) :]
    width = len(times) + 1
    ev_key = events.patient.astype(np.int64) * width + ev_rank
    order = np.argsort(ev_key, kind="stable")
    sorted_keys = ev_key[order]
    seg_start = np.searchsorted(sorted_keys, decisions.patient.astype(np.int64) * width)
    # events of the decision's patient that started strictly earlier: a prefix of its segment
    stop = np.searchsorted(sorted_keys, decisions.patient.astype(np.int64) * width + dec_rank)
    prior = np.where(decisions.time != NAT, stop - seg_start, 0)
    total = int(prior.sum())
    row_of = np.repeat(np.arange(len(decisions)), prior)
    offset = np.arange(total) - np.repeat(np.cumsum(prior) - prior, prior)
    source = order[np.repeat(seg_start, prior) + offset]
    treatment = events.treatment[source]
    # latest per (decision, treatment): entries are in time order within a row, keep the last
    keep = np.ones(total, bool)
    if total:
        pair = np.lexsort((np.arange(total), treatment, row_of))
        last = np.ones(total, bool)
        last[:-1] = (row_of[pair][1:] != row_of[pair][:-1]) | (
            treatment[pair][1:] != treatment[pair][:-1]
        )
        keep = np.zeros(total, bool)
        keep[pair[last]] = True
    values = dataset.policy.values(events.outcome[source[keep]])
    matrix = sp.csr_matrix(
        (values, (row_of[keep], treatment[keep])), shape=(len(decisions), n_t), dtype=np.float32
    )
    matrix.sum_duplicates()
    return matrix


@dataclass
class _At:
    """(patient, time) pairs, read like decisions by :func:`history_at`."""

    patient: np.ndarray
    time: np.ndarray

    def __len__(self) -> int:
        return len(self.patient)


def _events(dataset: Dataset) -> CohortEvents:
    if dataset.events is None:
        raise ValueError(
            "this Dataset has no dated events (it was loaded from an artifact or built by the "
            "Spark encoder); build it with Dataset.from_tables to train a decision model"
        )
    return dataset.events
