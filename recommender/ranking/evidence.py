"""The evidence behind a suggestion: outcomes on record for a treatment, and their response rate.

For the condition asked about (or for every condition): how many outcomes with this treatment
are on record, their distribution over the outcome labels, and the response rate (responded or
partial) with a Wilson 95% interval. Evidence depends on the data only, never on the patient or
the model, so it is remembered per dataset.
"""

from __future__ import annotations

import math

import numpy as np

from ..data.dataset import Dataset
from ..data.matrices import OUTCOME_BUCKETS
from ..utils.sparse_rows import lookup, row_arrays

Z_95 = 1.959963984540054


def wilson_interval(successes: float, total: float, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; (0, 1) when ``total`` is 0.

    >>> [round(v, 3) for v in wilson_interval(8, 10)]
    [0.49, 0.943]
    """
    if total <= 0:
        return 0.0, 1.0
    p = successes / total
    centre = p + z * z / (2 * total)
    margin = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    denominator = 1 + z * z / total
    return max(0.0, (centre - margin) / denominator), min(1.0, (centre + margin) / denominator)


def wilson_intervals(
    successes: np.ndarray, totals: np.ndarray, z: float = Z_95
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`wilson_interval` of each (successes, total) pair: float64 arrays (low, high),
    (0, 1) where the total is 0, the same values as the scalar function."""
    successes, totals = np.asarray(successes, np.float64), np.asarray(totals, np.float64)
    low, high = np.zeros(len(totals)), np.ones(len(totals))
    at = totals > 0
    n = totals[at]
    p = successes[at] / n
    centre = p + z * z / (2 * n)
    margin = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denominator = 1 + z * z / n
    low[at] = np.maximum(0.0, (centre - margin) / denominator)
    high[at] = np.minimum(1.0, (centre + margin) / denominator)
    return low, high


def evidence(dataset: Dataset, treatment: int, condition: int) -> dict:
    """Outcomes on record for ``treatment`` (for ``condition``, or all when it is -1)."""
    return evidence_many(dataset, np.array([treatment]), condition)[0]


#: Evidence entries remembered per dataset (they depend on the data only); beyond this many the
#: rest is computed on every call.
EVIDENCE_CACHE_ENTRIES = 1_000_000


def evidence_many(dataset: Dataset, treatments: np.ndarray, condition: int) -> list[dict]:
    """:func:`evidence` for several treatments, reading the condition's counts once.

    Entries are computed once per (condition, treatment) and remembered on the dataset, which
    never changes after it is built; each call returns fresh copies, so callers may modify them.
    """
    cache = vars(dataset).setdefault("_evidence_cache", {})
    keys = [(condition, int(t)) for t in np.asarray(treatments).tolist()]
    missing = [t for (_, t) in keys if (condition, t) not in cache]
    if missing:
        computed = _evidence_entries(dataset, np.array(missing, np.int64), condition)
        if len(cache) < EVIDENCE_CACHE_ENTRIES:
            cache.update(zip(((condition, t) for t in missing), computed))
        else:
            return [
                _copy_entry(e)
                for e in _evidence_entries(dataset, np.asarray(treatments, np.int64), condition)
            ]
    return [_copy_entry(cache[key]) for key in keys]


#: Entries :func:`warm_evidence` computes at most (about a kilobyte each).
EVIDENCE_WARM_ENTRIES = 200_000


def warm_evidence(dataset: Dataset, max_entries: int = EVIDENCE_WARM_ENTRIES) -> int:
    """Remember the evidence of every treatment recorded for each condition, then of every
    treatment over all conditions, until ``max_entries``; returns how many are remembered.

    Run before a server forks its workers, so that they share these entries instead of each
    computing them on its first requests (a cold entry costs a request about 50 us).
    """
    total = 0
    for condition in range(len(dataset.conditions)):
        candidates = dataset.candidates(condition)
        if total + len(candidates) > max_entries:
            return total
        evidence_many(dataset, candidates, condition)
        total += len(candidates)
    if total + dataset.n_treatments <= max_entries:
        evidence_many(dataset, np.arange(dataset.n_treatments), -1)
        total += dataset.n_treatments
    return total


def _copy_entry(entry: dict) -> dict:
    return {
        **entry,
        "outcomes": dict(entry["outcomes"]),
        "response_rate_ci95": list(entry["response_rate_ci95"]),
    }


def _evidence_entries(dataset: Dataset, treatments: np.ndarray, condition: int) -> list[dict]:
    """The evidence entries of ``treatments`` for ``condition`` (-1: all), computed."""
    row = condition if condition >= 0 else len(dataset.conditions)
    width = len(OUTCOME_BUCKETS)
    columns, values = row_arrays(dataset.label_counts, row)
    wanted = (np.asarray(treatments, np.int64)[:, None] * width + np.arange(width)).ravel()
    flat = np.zeros(len(wanted))
    positions, found = lookup(columns, wanted)
    flat[found] = values[positions[found]]
    table = flat.reshape(-1, width)  # (len(treatments), 5)
    scope = (
        f"condition {dataset.conditions.external_ids[condition]}"
        if condition >= 0
        else "all conditions"
    )
    result = []
    for treatment, counts in zip(treatments, table.tolist()):
        total = float(sum(counts))
        responded = float(counts[0] + counts[1])
        low, high = wilson_interval(responded, total)
        result.append(
            {
                "scope": scope,
                "outcomes_recorded": int(total),
                "patients_treated": int(dataset.treatment_support[int(treatment)]),
                "outcomes": {label: int(n) for label, n in zip(OUTCOME_BUCKETS, counts)},
                "response_rate": round(responded / total, 4) if total else None,
                "response_rate_ci95": [round(low, 4), round(high, 4)],
            }
        )
    return result
