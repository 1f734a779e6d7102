"""Why a treatment is suggested: the patient's outcomes that drove it, and the evidence behind it.

Two parts go with every recommendation a clinician sees:

- ``contributions``: the entries of the patient's record (past outcomes, and side information
  such as diagnoses) that moved the score most. ALS uses implicit's exact decomposition of the
  score over the positive entries (Hu, Koren & Volinsky 2008, section 5); every other model uses
  leave-one-out: the score with the full record minus the score with that entry removed (for
  item-kNN, whose score is linear, this is exactly neighbour similarity x the entry's weight).
  Non-personalised models have none.
- ``evidence``: how many outcomes with this treatment are on record, for the condition asked
  about (or for every condition), their distribution over the outcome labels, and the response
  rate (responded or partial) with a Wilson 95% interval.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from ..data.dataset import FEATURE_AGE, FEATURE_CONDITION, FEATURE_SEX, OUTCOME_BUCKETS
from ..utils.sparse_rows import lookup, row_arrays

if TYPE_CHECKING:
    from ..data.dataset import Dataset
    from ..models.base import Query, Recommender

Z_95 = 1.959963984540054
MAX_CONTRIBUTIONS = 5
#: Contributions smaller than this in magnitude are not shown (float noise, not a reason).
MIN_CONTRIBUTION = 1e-6


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


def evidence(dataset: "Dataset", treatment: int, condition: int) -> dict:
    """Outcomes on record for ``treatment`` (for ``condition``, or all when it is -1)."""
    return evidence_many(dataset, np.array([treatment]), condition)[0]


#: Evidence entries remembered per dataset (they depend on the data only); beyond this many the
#: rest is computed on every call.
EVIDENCE_CACHE_ENTRIES = 1_000_000


def evidence_many(dataset: "Dataset", treatments: np.ndarray, condition: int) -> list[dict]:
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
            return [_copy_entry(e) for e in _evidence_entries(dataset, np.asarray(treatments, np.int64),
                                                               condition)]
    return [_copy_entry(cache[key]) for key in keys]


#: Entries :func:`warm_evidence` computes at most (about a kilobyte each).
EVIDENCE_WARM_ENTRIES = 200_000


def warm_evidence(dataset: "Dataset", max_entries: int = EVIDENCE_WARM_ENTRIES) -> int:
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
    return {**entry, "outcomes": dict(entry["outcomes"]),
            "response_rate_ci95": list(entry["response_rate_ci95"])}


def _evidence_entries(dataset: "Dataset", treatments: np.ndarray, condition: int) -> list[dict]:
    """The evidence entries of ``treatments`` for ``condition`` (-1: all), computed."""
    row = condition if condition >= 0 else len(dataset.conditions)
    width = len(OUTCOME_BUCKETS)
    columns, values = row_arrays(dataset.label_counts, row)
    wanted = (np.asarray(treatments, np.int64)[:, None] * width + np.arange(width)).ravel()
    table = np.zeros(len(wanted))
    positions, found = lookup(columns, wanted)
    table[found] = values[positions[found]]
    table = table.reshape(-1, width)  # (len(treatments), 5)
    scope = (f"condition {dataset.conditions.external_ids[condition]}" if condition >= 0
             else "all conditions")
    result = []
    for treatment, counts in zip(treatments, table.tolist()):
        total = float(sum(counts))
        responded = float(counts[0] + counts[1])
        low, high = wilson_interval(responded, total)
        result.append({
            "scope": scope,
            "outcomes_recorded": int(total),
            "patients_treated": int(dataset.treatment_support[int(treatment)]),
            "outcomes": {label: int(n) for label, n in zip(OUTCOME_BUCKETS, counts)},
            "response_rate": round(responded / total, 4) if total else None,
            "response_rate_ci95": [round(low, 4), round(high, 4)],
        })
    return result


def leave_one_out(model: "Recommender", query: "Query",
                  treatments: np.ndarray) -> list[list[tuple[int, float]]]:
    """Per treatment, (column, contribution) for each non-zero column of the single-row query."""
    from ..models.base import Query

    columns = query.rows.indices
    if not len(columns):
        return [[] for _ in treatments]
    n_t = model.dataset_.n_treatments
    variants = [query] + [_without(query, column, n_t) for column in columns]
    batch = Query(rows=sp.vstack([v.rows for v in variants], format="csr"), patients=None,
                  conditions=np.repeat(query.conditions, len(variants)),
                  patient_conditions=sp.vstack([v.patient_conditions for v in variants], format="csr"),
                  history=sp.vstack([v.history for v in variants], format="csr"),
                  harmful=sp.vstack([v.harmful for v in variants], format="csr"),
                  history_days=sp.vstack([v.history_days for v in variants], format="csr"))
    scores = model.score(batch)[:, treatments]
    deltas = scores[0][None, :] - scores[1:]  # (n_columns, n_treatments)
    return [[(int(c), float(d)) for c, d in zip(columns, deltas[:, i])] for i in range(len(treatments))]


def _without(query: "Query", column: int, n_t: int) -> "Query":
    """The single-row query with one matrix column (and its history entry) removed."""
    from ..models.base import Query

    def drop(matrix: sp.csr_matrix, col: int) -> sp.csr_matrix:
        keep = matrix.indices != col
        return sp.csr_matrix((matrix.data[keep], matrix.indices[keep], [0, int(keep.sum())]),
                             shape=matrix.shape)

    history_col = column if column < n_t else -1
    return Query(rows=drop(query.rows, column), patients=None, conditions=query.conditions,
                 patient_conditions=query.patient_conditions,
                 history=drop(query.history, history_col), harmful=drop(query.harmful, history_col),
                 history_days=drop(query.history_days, history_col))


def strongest(pairs: list[tuple[int, float]], limit: int) -> list[tuple[int, float]]:
    """The at most ``limit`` (column, contribution) pairs of magnitude >= ``MIN_CONTRIBUTION``,
    largest magnitude first (a stable sort: equal magnitudes keep their order in ``pairs``)."""
    kept = [cv for cv in pairs if abs(cv[1]) >= MIN_CONTRIBUTION]
    kept.sort(key=_largest_first)
    return kept[:limit]


def describe_contributions(dataset: "Dataset", query: "Query",
                           pairs: list[tuple[int, float]]) -> list[dict]:
    """Readable contributions, largest magnitude first, at most ``MAX_CONTRIBUTIONS``."""
    return describe_strongest(dataset, query, [strongest(pairs, MAX_CONTRIBUTIONS)])[0]


def describe_contributions_many(dataset: "Dataset", query: "Query",
                                pairs_per_treatment: list[list[tuple[int, float]]]) -> list[list[dict]]:
    """:func:`describe_contributions` for each treatment's pairs, reading the patient once."""
    return describe_strongest(dataset, query, [strongest(pairs, MAX_CONTRIBUTIONS)
                                               for pairs in pairs_per_treatment])


def describe_strongest(dataset: "Dataset", query: "Query",
                       strongest_per_treatment: list[list[tuple[int, float]]]) -> list[list[dict]]:
    """Each treatment's pairs, already chosen and ordered by :func:`strongest` (or
    :meth:`~recommender.models.base.Recommender.strongest_contributions`), in readable form."""
    columns = {column for pairs in strongest_per_treatment for column, _ in pairs}
    described = _describe_columns(dataset, query, columns)
    # every contribution rounded at once: numpy rounds x * 1e6 half to even, so on a value
    # within float error of a half (2.5e-06) it may differ from round() by 1e-06
    rounded = np.round([value for pairs in strongest_per_treatment for _, value in pairs],
                       6).tolist()
    result, start = [], 0
    for pairs in strongest_per_treatment:
        values = rounded[start:start + len(pairs)]
        start += len(pairs)
        result.append([dict(described[column], contribution=value)
                       for (column, _), value in zip(pairs, values)])
    return result


def _describe_columns(dataset: "Dataset", query: "Query", columns) -> dict[int, dict]:
    """Matrix column -> the parts of its readable entry that do not depend on the treatment."""
    n_t = dataset.n_treatments
    outcomes = dict(zip(query.history.indices.tolist(), query.history.data.tolist()))
    treatment_ids = dataset.treatments.external_ids
    features = vars(dataset).setdefault("_feature_descriptions", {})
    described = {}
    for column in columns:
        if column < n_t:
            described[column] = {"source": "outcome", "treatment_id": str(treatment_ids[column]),
                                 "outcome": round(outcomes.get(column, 0.0), 3)}
        else:
            entry = features.get(column)
            if entry is None:  # a side feature reads the same for everyone: described once
                entry = features[column] = _describe_feature(dataset, column - n_t)
            described[column] = entry
    return described


def _describe_feature(dataset: "Dataset", feature: int) -> dict:
    """The readable entry of side feature ``feature`` (a diagnosis, age band or sex)."""
    name = str(dataset.features.external_ids[feature])
    kind = next((kind for prefix, kind in ((FEATURE_CONDITION, "condition"),
                                           (FEATURE_AGE, "age_band"), (FEATURE_SEX, "sex"))
                 if name.startswith(prefix)), "feature")
    return {"source": kind, "id": name.split(":", 1)[1]}


def _largest_first(pair: tuple[int, float]) -> float:
    return -abs(pair[1])
