"""The value of a model's policy: the success rate if clinicians had followed its first choice.

A model's *policy* at a decision is its rank-1 therapy for that patient and condition, asked as
of the decision's time (the record as it was then, safety rules applied). Two ways to value it:

- with the truth (a generated cohort): the mean true P(success) of the policy's choices
  (:func:`true_value`);
- from logged decisions only (real data): off-policy evaluation (:func:`off_policy_value`),
  using an outcome model's propensities and predictions (the *nuisance* model, fitted on the
  training part only) in the estimators of :mod:`recommender.evaluation.ope`.

The decisions valued off-policy are the *first-line* decisions of the test part of a time split:
for each (patient, condition) whose first try is after the cutoff, that try.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..columns import Columns as C
from ..data.dataset import Dataset
from ..data.patient import Query
from ..models.outcome import OutcomeRecommender
from ..models.outcome.propensity import normalise
from ..ranking import rank_patients
from .ope import Estimate, ope_estimates


@dataclass
class LoggedDecisions:
    """First-line decisions of a test period, encoded against the training Dataset.

    Attributes
    ----------
    frame : DataFrame
        patient_id, condition_id, treatment_id, timestamp, success (one row per decision).
    patient, condition, treatment : ndarray of int64, shape (n,)
        Indices in the training Dataset.
    time : ndarray of int64, shape (n,)
        Decision time (ns since the epoch).
    success : ndarray of float, shape (n,)
    """

    frame: pd.DataFrame
    patient: np.ndarray
    condition: np.ndarray
    treatment: np.ndarray
    time: np.ndarray
    success: np.ndarray

    def __len__(self) -> int:
        return len(self.patient)


def first_line_decisions(dataset: Dataset, test: pd.DataFrame) -> LoggedDecisions:
    """The test rows' first-line decisions that ``dataset`` can encode: the earliest row of each
    (patient, condition) with a time, when the patient had no try for that condition in the
    training data, and the patient, condition and therapy are known to it."""
    rows = test[test[C.condition].notna() & test[C.timestamp].notna()]
    rows = rows.sort_values(C.timestamp, kind="stable").drop_duplicates([C.patient, C.condition])
    patient = dataset.patient_indices(rows[C.patient], strict=False)
    condition = dataset.conditions.to_internal(rows[C.condition], strict=False)
    treatment = dataset.treatments.to_internal(rows[C.treatment], strict=False)
    known = (patient >= 0) & (condition >= 0) & (treatment >= 0)
    if dataset.events is not None:  # a try for the condition in training: not first line
        ev = dataset.events
        tried = set(
            zip(ev.patient[ev.condition >= 0].tolist(), ev.condition[ev.condition >= 0].tolist())
        )
        known &= np.array(
            [(p, c) not in tried for p, c in zip(patient.tolist(), condition.tolist())], bool
        )
    rows = rows[known]
    success = dataset.policy.worked(rows[C.outcome].to_numpy()) & ~(
        (rows[C.adverse].to_numpy() == 1) | (rows[C.outcome].to_numpy() < dataset.harm_threshold)
    )
    time = np.asarray(
        pd.to_datetime(rows[C.timestamp], utc=True).array.as_unit("ns").asi8, np.int64
    )
    frame = rows[[C.patient, C.condition, C.treatment, C.timestamp]].assign(
        success=success.astype(int)
    )
    return LoggedDecisions(
        frame=frame.reset_index(drop=True),
        patient=patient[known].astype(np.int64),
        condition=condition[known].astype(np.int64),
        treatment=treatment[known].astype(np.int64),
        time=time,
        success=success.astype(np.float64),
    )


def policy_choices(model, patients: np.ndarray, conditions: np.ndarray, times: np.ndarray | None):
    """The model's rank-1 treatment index per decision (-1 when nothing is allowed), each asked
    as of its time, safety rules applied."""
    dataset = model.dataset_
    first = np.full(len(patients), -1, np.int64)
    for c in np.unique(conditions).tolist():
        at = np.flatnonzero(conditions == c)
        for lo in range(0, len(at), 4096):
            chunk = at[lo : lo + 4096]
            idx, _ = rank_patients(
                model,
                patients[chunk],
                int(c),
                dataset.candidates(int(c)),
                1,
                False,
                None if times is None else times[chunk],
            )
            first[chunk] = idx[:, 0]
    return first


def true_value(choices: np.ndarray, truth: np.ndarray) -> float:
    """Mean true P(success) of the choices (``truth`` (n,) gives it per decision; a decision
    with no choice counts as a failure)."""
    return float(np.where(choices >= 0, truth, 0.0).mean())


def nuisance(
    model: OutcomeRecommender, decisions: LoggedDecisions, treatments: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(P(success), propensity) of ``treatments[i]`` at decision ``i`` from the outcome
    ``model`` (propensity normalised over the condition's candidates)."""
    dataset = model.dataset_
    q = np.zeros(len(decisions))
    e = np.zeros(len(decisions))
    for c in np.unique(decisions.condition).tolist():
        at = np.flatnonzero(decisions.condition == c)
        candidates = np.union1d(dataset.candidates(int(c)), treatments[at][treatments[at] >= 0])
        if not len(candidates):
            continue  # no therapy known for the condition, none chosen: q = e = 0
        query = Query.known(
            dataset, decisions.patient[at], np.full(len(at), int(c)), decisions.time[at]
        )
        rows = np.repeat(np.arange(len(at)), len(candidates))
        cands = np.tile(candidates, len(at))
        X = model._rows(query, rows, cands, np.full(len(rows), int(c)))
        forest = model.forest_
        success = 1.0 / (1.0 + np.exp(-model._mean_raw(X)))
        logits = forest.raw(X, "propensity")
        prop = normalise(logits, np.repeat(np.arange(len(at)), len(candidates))).reshape(
            len(at), len(candidates)
        )
        where = np.searchsorted(candidates, np.maximum(treatments[at], 0))
        q[at] = success.reshape(len(at), len(candidates))[np.arange(len(at)), where]
        e[at] = prop[np.arange(len(at)), where]
    return q, e


def off_policy_value(
    choices: np.ndarray,
    decisions: LoggedDecisions,
    model: OutcomeRecommender,
    *,
    min_propensity: float = 0.01,
    support: float = 0.05,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Estimate]:
    """IPS, SNIPS and DR estimates of the policy whose choices are ``choices`` (treatment
    indices per decision), with the outcome ``model`` as nuisance; decisions whose chosen
    therapy has an estimated propensity below ``support`` widen the intervals
    (:mod:`recommender.evaluation.ope`)."""
    q_logged, e_logged = nuisance(model, decisions, decisions.treatment)
    q_policy, e_policy = nuisance(model, decisions, choices)
    q_policy = np.where(choices >= 0, q_policy, 0.0)
    return ope_estimates(
        decisions.success,
        e_logged,
        choices == decisions.treatment,
        q_policy,
        q_logged,
        decisions.patient,
        min_propensity=min_propensity,
        unsupported=(choices >= 0) & (e_policy < support),
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
