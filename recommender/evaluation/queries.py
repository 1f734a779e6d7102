"""Held-out rows grouped into queries and encoded against a Dataset.

A *query* is a group of held-out outcome rows sharing (patient_id, condition_id): "what should
this patient try next for this condition?". With ``by_condition`` (the default) a query that
names a condition ranks only the treatments recorded for it in the training data, as the
service does; otherwise every query is one patient and ranks every treatment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..columns import Columns as C
from ..data.dataset import Dataset

#: Cells of one (queries x treatments) batch; bounds the memory of a full ranking.
BATCH_CELLS = 1 << 22


@dataclass
class Queries:
    """Held-out rows encoded against a Dataset.

    Attributes
    ----------
    frame : DataFrame
        One row per query: patient_id, condition_id (None when unrestricted), patient and
        condition (dataset indices; condition -1 for none).
    items : DataFrame
        One row per (query, treatment): query (row of ``frame``), treatment (index), outcome
        (latest held-out outcome), worked, harmful (any held-out row adverse or below the
        dataset's ``harm_threshold``).
    """

    frame: pd.DataFrame
    items: pd.DataFrame

    def __len__(self) -> int:
        return len(self.frame)


def build_queries(dataset: Dataset, test: pd.DataFrame, by_condition: bool = True) -> Queries:
    """Group held-out rows into queries and encode them (see :class:`Queries`)."""
    rows = _encode_rows(dataset, test, by_condition)
    items = (
        rows.sort_values(["time", "position"], na_position="first", kind="stable")
        .groupby(["query", "treatment"], sort=True)
        .agg(outcome=("outcome", "last"), harmful=("harm", "any"))
        .reset_index()
    )
    items["worked"] = dataset.policy.worked(items["outcome"].to_numpy())
    return Queries(frame=_query_frame(dataset, rows), items=items)


def _encode_rows(dataset: Dataset, test: pd.DataFrame, by_condition: bool) -> pd.DataFrame:
    """Held-out rows as indices, with their query number (first appearance order)."""
    rows = pd.DataFrame(
        {
            "patient": dataset.patients.to_internal(test[C.patient]),
            "condition": (
                condition_indices(dataset, test[C.condition])
                if by_condition
                else np.full(len(test), -1, np.int64)
            ),
            "treatment": dataset.treatments.to_internal(test[C.treatment]),
            "outcome": test[C.outcome].to_numpy(np.float32),
            "harm": (
                (test[C.adverse].to_numpy() == 1)
                | (test[C.outcome].to_numpy() < dataset.harm_threshold)
            ),
            "time": test[C.timestamp].reset_index(drop=True),
            "position": np.arange(len(test)),
        }
    )
    rows["query"] = pd.factorize(pd.MultiIndex.from_arrays([rows["patient"], rows["condition"]]))[0]
    return rows


def _query_frame(dataset: Dataset, rows: pd.DataFrame) -> pd.DataFrame:
    first = rows.drop_duplicates("query").sort_values("query")
    condition = first["condition"].to_numpy()
    condition_ids = np.full(len(first), None, dtype=object)
    condition_ids[condition >= 0] = dataset.conditions.to_external(condition[condition >= 0])
    return pd.DataFrame(
        {
            C.patient: dataset.patients.to_external(first["patient"]),
            C.condition: condition_ids,
            "patient": first["patient"].to_numpy(),
            "condition": condition,
        }
    )


def condition_indices(dataset: Dataset, condition_ids: pd.Series) -> np.ndarray:
    """Condition indices (n,) int64 of ids, -1 for missing ones; unknown ids raise UnknownIdError."""
    result = np.full(len(condition_ids), -1, np.int64)
    present = condition_ids.notna().to_numpy()
    result[present] = dataset.conditions.to_internal(condition_ids[present])
    return result


def condition_batches(dataset: Dataset, conditions: np.ndarray):
    """Yield (condition, candidates, positions) batches of requests that share a condition.

    ``conditions`` (n,) holds condition indices (-1: none); ``candidates`` is None or the
    condition's treatment indices. Batches are sized so a full (batch, n_t) ranking stays small.
    """
    batch = max(1, min(4096, BATCH_CELLS // max(dataset.n_treatments, 1)))
    for condition in np.unique(conditions):
        candidates = dataset.candidates(condition) if condition >= 0 else None
        positions = np.flatnonzero(conditions == condition)
        for start in range(0, len(positions), batch):
            yield int(condition), candidates, positions[start : start + batch]
