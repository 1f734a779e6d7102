"""Train/test splits of a cohort's outcomes, reproducible for a seed.

Every split returns a :class:`Split`, which unpacks as ``train, test = leave_last(tables)``:
``train`` is a :class:`~recommender.data.tables.CohortTables` with some outcome rows removed (every other
table is kept whole) and ``test`` a DataFrame of the held-out outcome rows, with the columns of
``tables.outcomes`` in file order.

Held-out units are (patient, treatment) *pairs*: when a pair is chosen every row of it leaves
the training data, so a held-out treatment is never in the patient's training history and the
ranker (which excludes tried treatments) can still rank it.

A held-out row is dropped from ``test`` (and counted in :attr:`Split.dropped`) when it cannot be
scored by a model trained on ``train``:

``unknown_treatment``  its treatment has no outcome left in ``train`` (no column to score);
``unknown_patient``    its patient appears in no table of ``train``;
``unknown_condition``  its condition is mentioned nowhere in ``train``;
``retried``            (temporal and episode splits) the patient already tried the treatment in
                       ``train``, so the ranker would exclude it by design.

implicit's ``leave_k_out_split`` ignores ``random_state`` for part of its shuffle; these splits
draw from one :func:`numpy.random.default_rng` ``seed``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..columns import Columns as C
from ..exceptions import DataValidationError, ParameterError
from .tables import CohortTables

log = logging.getLogger(__name__)

DROP_REASONS = ("unknown_treatment", "unknown_patient", "unknown_condition", "retried")


@dataclass(frozen=True)
class Split:
    """A train/test split; iterating yields ``train`` then ``test``.

    Attributes
    ----------
    train : CohortTables
        The cohort without the held-out outcome rows.
    test : DataFrame
        Held-out outcome rows (columns of ``tables.outcomes``), index reset.
    method : str
        Name and settings of the split, e.g. ``"leave-k-out(k=2, seed=0)"``.
    dropped : dict of str -> int
        Held-out rows removed from ``test`` per reason (see the module docstring).
    """

    train: CohortTables
    test: pd.DataFrame
    method: str
    dropped: dict[str, int] = field(default_factory=dict)

    def __iter__(self) -> Iterator:
        yield self.train
        yield self.test

    def summary(self) -> dict:
        """JSON-able description: method, row counts and drops."""
        return {
            "method": self.method,
            "n_train_rows": len(self.train.outcomes),
            "n_test_rows": len(self.test),
            "dropped": dict(self.dropped),
        }


# --- the splits ---------------------------------------------------------------------------------


def leave_last(tables: CohortTables) -> Split:
    """Hold out each patient's latest treatment (all rows of that patient-treatment pair).

    The latest outcome is the one with the greatest timestamp; rows without a timestamp count as
    earliest and ties go to the later row in the file. Patients who tried a single distinct
    treatment stay wholly in ``train`` so that they remain known to the model.

    Examples
    --------
    >>> from recommender.data.tables import validate_tables
    >>> outcomes = pd.DataFrame({"patient_id": ["a", "a", "b"], "treatment_id": ["x", "y", "x"],
    ...                          "outcome": [1, 0, 1], "timestamp": ["2020-02-01", "2020-01-01", ""]})
    >>> train, test = leave_last(validate_tables({"outcomes": outcomes}))
    >>> test[["patient_id", "treatment_id"]].values.tolist()
    [['a', 'x']]
    """
    outcomes = tables.outcomes
    pairs = _pair_codes(outcomes)
    latest = _latest_positions(outcomes)  # (n_patients,) row positions
    eligible = _distinct_per_patient(outcomes, pairs) > 1
    held = np.isin(pairs, pairs[latest[eligible]])
    return _finish(tables, held, "leave-last")


def leave_k_out(tables: CohortTables, k: int = 1, seed: int = 0) -> Split:
    """Hold out ``k`` random treatments of each patient who tried more than ``k`` distinct ones.

    Every row of a chosen patient-treatment pair is held out. The choice depends only on the
    rows' file order and ``seed``.

    Raises
    ------
    ParameterError
        If ``k`` is not a positive int.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ParameterError(f"leave_k_out: k must be a positive int; got {k!r}")
    outcomes = tables.outcomes
    pairs = _pair_codes(outcomes)
    first = np.unique(pairs, return_index=True)[1]  # one row per pair
    patient = _patient_codes(outcomes)[first]
    key = np.random.default_rng(seed).random(len(first))
    order = np.lexsort((key, patient))  # random order within each patient
    rank = np.empty(len(first), np.int64)
    rank[order] = np.arange(len(first)) - _group_starts(patient[order])
    chosen = (rank < k) & (np.bincount(patient)[patient] > k)
    held = np.isin(pairs, pairs[first[chosen]])
    return _finish(tables, held, f"leave-k-out(k={int(k)}, seed={seed})")


def temporal(
    tables: CohortTables, cutoff: str | pd.Timestamp | None = None, fraction: float = 0.2
) -> Split:
    """Hold out every outcome recorded after a global time ``cutoff``.

    Parameters
    ----------
    cutoff : str or Timestamp, optional
        Rows with a timestamp strictly after it are held out (naive times are read as UTC).
        By default the ``1 - fraction`` quantile of the timestamps, so that about ``fraction``
        of the timestamped rows are held out.
    fraction : float
        Share of rows to hold out when ``cutoff`` is None; in (0, 1).

    Rows without a timestamp stay in ``train``. Held-out rows of a treatment the patient
    already tried before the cutoff are dropped (reason ``retried``).

    Raises
    ------
    DataValidationError
        If no outcome has a timestamp.
    ParameterError
        If ``fraction`` is outside (0, 1).
    """
    times = tables.outcomes[C.timestamp]
    if not times.notna().any():
        raise DataValidationError(
            "a temporal split needs timestamps; no outcome row has one "
            "(use leave-last or leave-k-out)",
            file="outcomes",
            column=C.timestamp,
        )
    if cutoff is None:
        if not 0 < fraction < 1:
            raise ParameterError(f"temporal: fraction must be in (0, 1); got {fraction!r}")
        cutoff = times.dropna().quantile(1 - fraction, interpolation="lower")
    stamp = _utc(cutoff)
    held = (times > stamp).fillna(False).to_numpy(dtype=bool)
    return _finish(tables, held, f"temporal(cutoff={stamp.isoformat()})")


def leave_last_episode(tables: CohortTables) -> Split:
    """Hold out each patient's latest condition episode (all rows for that condition).

    An episode is a (patient, condition_id) group of outcome rows; the latest is the one whose
    latest row is latest (same ordering as :func:`leave_last`). Patients with fewer than two
    episodes, and rows without a condition, stay in ``train``. This mirrors a clinician asking
    "what now?" for a new problem of a known patient.
    """
    outcomes = tables.outcomes
    has_condition = outcomes[C.condition].notna().to_numpy()
    episode = pd.factorize(
        pd.MultiIndex.from_arrays([outcomes[C.patient], outcomes[C.condition].fillna("")])
    )[0]
    ordered = _chronological(outcomes)
    ordered = ordered[has_condition[ordered]]
    frame = pd.DataFrame(
        {"patient": _patient_codes(outcomes)[ordered], "episode": episode[ordered], "pos": ordered}
    )
    per_patient = frame.groupby("patient").agg(n=("episode", "nunique"), last=("pos", "last"))
    last = per_patient.loc[per_patient["n"] > 1, "last"].to_numpy()
    held = np.isin(episode, episode[last]) & has_condition
    return _finish(tables, held, "leave-last-episode")


SPLITS = {
    "leave-last": leave_last,
    "leave-k-out": leave_k_out,
    "temporal": temporal,
    "leave-last-episode": leave_last_episode,
}


# --- helpers ------------------------------------------------------------------------------------


def _finish(tables: CohortTables, held: np.ndarray, method: str) -> Split:
    """Cut ``tables.outcomes`` by the boolean mask ``held`` and drop unscorable test rows."""
    outcomes = tables.outcomes
    train_rows = outcomes[~held].reset_index(drop=True)
    train = tables.replace(outcomes=train_rows)
    test, dropped = _drop_unscorable(train, outcomes[held].reset_index(drop=True))
    if any(dropped.values()):
        log.info("%s: dropped held-out rows that cannot be scored: %s", method, dropped)
    return Split(train=train, test=test, method=method, dropped=dropped)


def _drop_unscorable(
    train: CohortTables, test: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, int]]:
    known_patients = set(train.outcomes[C.patient])
    known_conditions = set(train.outcomes[C.condition].dropna())
    for frame in (train.patients, train.patient_conditions):
        if frame is not None:
            known_patients |= set(frame[C.patient])
    for frame in (train.patient_conditions, train.contraindications):
        if frame is not None:
            known_conditions |= set(frame[C.condition])
    tried = pd.MultiIndex.from_frame(train.outcomes[[C.patient, C.treatment]])
    checks = {
        "unknown_treatment": ~test[C.treatment].isin(set(train.outcomes[C.treatment])),
        "unknown_patient": ~test[C.patient].isin(known_patients),
        "unknown_condition": test[C.condition].notna() & ~test[C.condition].isin(known_conditions),
        "retried": pd.MultiIndex.from_frame(test[[C.patient, C.treatment]]).isin(tried),
    }
    keep = np.ones(len(test), bool)
    dropped = {}
    for reason in DROP_REASONS:  # each row is counted under its first reason only
        bad = np.asarray(checks[reason], dtype=bool) & keep
        dropped[reason] = int(bad.sum())
        keep &= ~bad
    return test[keep].reset_index(drop=True), dropped


def _utc(value) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _patient_codes(outcomes: pd.DataFrame) -> np.ndarray:
    """Integer code (n_rows,) of each row's patient, in order of first appearance."""
    return pd.factorize(outcomes[C.patient])[0]


def _pair_codes(outcomes: pd.DataFrame) -> np.ndarray:
    """Integer code (n_rows,) of each row's (patient, treatment) pair."""
    return pd.factorize(pd.MultiIndex.from_arrays([outcomes[C.patient], outcomes[C.treatment]]))[0]


def _distinct_per_patient(outcomes: pd.DataFrame, pairs: np.ndarray) -> np.ndarray:
    """Number of distinct treatments (n_patients,) per patient code."""
    first = np.unique(pairs, return_index=True)[1]
    return np.bincount(_patient_codes(outcomes)[first])


def _chronological(outcomes: pd.DataFrame) -> np.ndarray:
    """Row positions oldest first: no timestamp counts as earliest, file order breaks ties."""
    position = np.arange(len(outcomes))
    times = outcomes[C.timestamp]
    if not times.notna().any():
        return position
    frame = pd.DataFrame({"t": times, "pos": position})
    return frame.sort_values(["t", "pos"], na_position="first", kind="stable")["pos"].to_numpy()


def _latest_positions(outcomes: pd.DataFrame) -> np.ndarray:
    """Position of each patient's latest row, indexed by patient code."""
    ordered = _chronological(outcomes)
    patient = _patient_codes(outcomes)
    return pd.Series(ordered).groupby(patient[ordered]).last().to_numpy()


def _group_starts(sorted_groups: np.ndarray) -> np.ndarray:
    """For each element of a sorted array, the position where its run of equal values starts."""
    if len(sorted_groups) == 0:
        return np.zeros(0, np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    return np.repeat(starts, np.diff(np.r_[starts, len(sorted_groups)]))
