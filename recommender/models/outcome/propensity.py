"""Which therapy a clinician chooses: the propensity model behind the confounding adjustment.

For each decision, the *choice set* is the condition's candidate therapies (those recorded for it
in the training data, at most ``max_candidates`` of the best supported, the chosen one always
included) minus those already tried in the same episode. A binary booster learns the chosen
therapy against the others from the same feature rows as the outcome model, and its
probabilities are normalised over the choice set:

    e(t | x) = s(f(x, t)) / sum over the choice set of s(f(x, t'))   (s: the logistic)

The outcome model is trained with stabilised inverse-propensity weights,
``w = P(t | condition) / e(t | x)`` clipped to ``[1 / max_weight, max_weight]``, so that each
therapy's training rows stand for every patient of the condition rather than for those it was
usually given to. A therapy almost never given to patients like this one (small ``e``) is
reported as an overlap problem, with a wider interval.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...data.dataset import Dataset
from ...data.decisions import Decisions


def choice_sets(
    dataset: Dataset, decisions: Decisions, max_candidates: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(decision position, candidate treatment, chosen flag) of every pair of each decision's
    choice set, grouped by decision (the chosen pair is always present)."""
    by_condition = {}
    for c in np.unique(decisions.condition).tolist():
        candidates = dataset.candidates(c)
        if len(candidates) > max_candidates:
            support = dataset.treatment_support[candidates]
            candidates = np.sort(candidates[np.argsort(-support, kind="stable")[:max_candidates]])
        by_condition[c] = candidates
    sizes = np.array([len(by_condition[c]) for c in decisions.condition.tolist()], np.int64)
    position = np.repeat(np.arange(len(decisions)), sizes)
    parts = [by_condition[c] for c in decisions.condition.tolist()]
    treatment = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    # drop therapies tried at an earlier line of the same episode
    episode = pd.factorize(pd.MultiIndex.from_arrays([decisions.patient, decisions.condition]))[0]
    n_t = max(dataset.n_treatments, 1)
    tried_key = episode.astype(np.int64) * n_t + decisions.treatment
    first_line = pd.Series(decisions.line).groupby(tried_key).min()
    pair_key = episode[position].astype(np.int64) * n_t + treatment
    earlier = first_line.reindex(pair_key).to_numpy() < decisions.line[position]
    chosen = treatment == decisions.treatment[position]
    keep = ~earlier | chosen
    position, treatment, chosen = position[keep], treatment[keep], chosen[keep]
    missing = np.setdiff1d(np.arange(len(decisions)), position[chosen])
    if len(missing):  # the chosen therapy fell outside the capped set: add it
        position = np.concatenate([position, missing])
        treatment = np.concatenate([treatment, decisions.treatment[missing].astype(np.int64)])
        chosen = np.concatenate([chosen, np.ones(len(missing), bool)])
        order = np.argsort(position, kind="stable")
        position, treatment, chosen = position[order], treatment[order], chosen[order]
    return position, treatment, chosen


def normalise(logits: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Choice probabilities from the booster's log-odds: each candidate's P(chosen) from the
    binary model, divided by their sum within its group (``groups`` sorted, equal ids
    adjacent). (Normalising ``exp(logit)`` instead, as a conditional logit would, gave
    over-confident propensities: 0.03 where 0.06 was true, 0.77 where 0.66 was.)"""
    if not len(logits):
        return np.zeros(0)
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    sizes = np.diff(np.r_[starts, len(logits)])
    p = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))
    return p / np.repeat(np.add.reduceat(p, starts), sizes)


def stabilised_weights(
    propensity: np.ndarray, condition: np.ndarray, treatment: np.ndarray, max_weight: float
) -> np.ndarray:
    """``P(t | condition) / e`` per decision, clipped to [1 / max_weight, max_weight]."""
    key = pd.MultiIndex.from_arrays([condition, treatment])
    share = pd.Series(1.0, index=key).groupby(level=[0, 1]).transform("size").to_numpy()
    share = share / pd.Series(condition).map(pd.Series(condition).value_counts()).to_numpy()
    weight = share / np.maximum(propensity, 1e-12)
    return np.clip(weight, 1.0 / max_weight, max_weight)
