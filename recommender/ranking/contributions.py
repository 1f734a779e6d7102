"""Why a treatment is suggested for this patient: the entries of their record that drove it.

``contributions`` are the entries of the patient's record (past outcomes, and side information
such as diagnoses) that moved the score most. ALS uses implicit's exact decomposition of the
score over the positive entries (Hu, Koren & Volinsky 2008, section 5); every other model uses
leave-one-out (:func:`leave_one_out`): the score with the full record minus the score with that
entry removed (for item-kNN, whose score is linear, this is exactly neighbour similarity x the
entry's weight). Non-personalised models have none.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..data.dataset import Dataset
from ..data.patient import Query
from ..data.side_info import FEATURE_AGE, FEATURE_CONDITION, FEATURE_SEX
from .protocols import ScoringModel

MAX_CONTRIBUTIONS = 5


#: Contributions smaller than this in magnitude are not shown (float noise, not a reason).
MIN_CONTRIBUTION = 1e-6


def leave_one_out(
    model: ScoringModel, query: Query, treatments: np.ndarray
) -> list[list[tuple[int, float]]]:
    """Per treatment, (column, contribution) for each non-zero column of the single-row query."""
    columns = query.rows.indices
    if not len(columns):
        return [[] for _ in treatments]
    n_t = model.dataset_.n_treatments
    variants = [query] + [_without(query, column, n_t) for column in columns]
    batch = Query(
        rows=sp.vstack([v.rows for v in variants], format="csr"),
        patients=None,
        conditions=np.repeat(query.conditions, len(variants)),
        patient_conditions=sp.vstack([v.patient_conditions for v in variants], format="csr"),
        history=sp.vstack([v.history for v in variants], format="csr"),
        harmful=sp.vstack([v.harmful for v in variants], format="csr"),
        history_days=sp.vstack([v.history_days for v in variants], format="csr"),
    )
    scores = model.score(batch)[:, treatments]
    deltas = scores[0][None, :] - scores[1:]  # (n_columns, n_treatments)
    return [
        [(int(c), float(d)) for c, d in zip(columns, deltas[:, i])] for i in range(len(treatments))
    ]


def _without(query: Query, column: int, n_t: int) -> Query:
    """The single-row query with one matrix column (and its history entry) removed."""

    def drop(matrix: sp.csr_matrix, col: int) -> sp.csr_matrix:
        keep = matrix.indices != col
        return sp.csr_matrix(
            (matrix.data[keep], matrix.indices[keep], [0, int(keep.sum())]), shape=matrix.shape
        )

    history_col = column if column < n_t else -1
    return Query(
        rows=drop(query.rows, column),
        patients=None,
        conditions=query.conditions,
        patient_conditions=query.patient_conditions,
        history=drop(query.history, history_col),
        harmful=drop(query.harmful, history_col),
        history_days=drop(query.history_days, history_col),
    )


def strongest(pairs: list[tuple[int, float]], limit: int) -> list[tuple[int, float]]:
    """The at most ``limit`` (column, contribution) pairs of magnitude >= ``MIN_CONTRIBUTION``,
    largest magnitude first (a stable sort: equal magnitudes keep their order in ``pairs``)."""
    kept = [cv for cv in pairs if abs(cv[1]) >= MIN_CONTRIBUTION]
    kept.sort(key=_largest_first)
    return kept[:limit]


def describe_contributions(
    dataset: Dataset, query: Query, pairs: list[tuple[int, float]]
) -> list[dict]:
    """Readable contributions, largest magnitude first, at most ``MAX_CONTRIBUTIONS``."""
    return describe_strongest(dataset, query, [strongest(pairs, MAX_CONTRIBUTIONS)])[0]


def describe_contributions_many(
    dataset: Dataset, query: Query, pairs_per_treatment: list[list[tuple[int, float]]]
) -> list[list[dict]]:
    """:func:`describe_contributions` for each treatment's pairs, reading the patient once."""
    return describe_strongest(
        dataset, query, [strongest(pairs, MAX_CONTRIBUTIONS) for pairs in pairs_per_treatment]
    )


def describe_strongest(
    dataset: Dataset, query: Query, strongest_per_treatment: list[list[tuple[int, float]]]
) -> list[list[dict]]:
    """Each treatment's pairs, already chosen and ordered by :func:`strongest` (or
    :meth:`~recommender.models.base.Recommender.strongest_contributions`), in readable form."""
    columns = {column for pairs in strongest_per_treatment for column, _ in pairs}
    described = _describe_columns(dataset, query, columns)
    # every contribution rounded at once: numpy rounds x * 1e6 half to even, so on a value
    # within float error of a half (2.5e-06) it may differ from round() by 1e-06
    rounded = np.round(
        [value for pairs in strongest_per_treatment for _, value in pairs], 6
    ).tolist()
    result, start = [], 0
    for pairs in strongest_per_treatment:
        values = rounded[start : start + len(pairs)]
        start += len(pairs)
        result.append(
            [
                dict(described[column], contribution=value)
                for (column, _), value in zip(pairs, values)
            ]
        )
    return result


def _describe_columns(dataset: Dataset, query: Query, columns) -> dict[int, dict]:
    """Matrix column -> the parts of its readable entry that do not depend on the treatment."""
    n_t = dataset.n_treatments
    outcomes = dict(zip(query.history.indices.tolist(), query.history.data.tolist()))
    treatment_ids = dataset.treatments.external_ids
    features = vars(dataset).setdefault("_feature_descriptions", {})
    described = {}
    for column in columns:
        if column < n_t:
            described[column] = {
                "source": "outcome",
                "treatment_id": str(treatment_ids[column]),
                "outcome": round(outcomes.get(column, 0.0), 3),
            }
        else:
            entry = features.get(column)
            if entry is None:  # a side feature reads the same for everyone: described once
                entry = features[column] = _describe_feature(dataset, column - n_t)
            described[column] = entry
    return described


def _describe_feature(dataset: Dataset, feature: int) -> dict:
    """The readable entry of side feature ``feature`` (a diagnosis, age band or sex)."""
    name = str(dataset.features.external_ids[feature])
    kind = next(
        (
            kind
            for prefix, kind in (
                (FEATURE_CONDITION, "condition"),
                (FEATURE_AGE, "age_band"),
                (FEATURE_SEX, "sex"),
            )
            if name.startswith(prefix)
        ),
        "feature",
    )
    return {"source": kind, "id": name.split(":", 1)[1]}


def _largest_first(pair: tuple[int, float]) -> float:
    return -abs(pair[1])
