"""Exposure per group: what the artifact itself suggests to each group, as shares of top-k slots."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..columns import Columns as C
from ..data.pseudonym import Pseudonymizer
from ..data.tables import CohortTables
from ..evaluation.queries import condition_batches
from ..models.persistence import Artifact
from ..ranking import rank_patients
from .subgroups import ALL, UNKNOWN, match_patients

log = logging.getLogger(__name__)


def exposure_slots(
    artifact: Artifact,
    groups: pd.DataFrame,
    k: int,
    requests: str,
    pseudonymizer: Pseudonymizer | None,
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Rank the artifact's patients with its model and count top-k slots.

    Returns ``slots`` CSR (n_p, n_t) int64 (times each treatment filled a top-k slot of the
    patient's lists), ``n_requests`` (n_p,) int64 and ``matched`` (n_p,) int64: the row of
    ``groups`` of each artifact patient, -1 when the audit data does not have the patient.
    """
    dataset = artifact.dataset
    matched = match_patients(artifact, groups.index, pseudonymizer)
    if requests == "condition":
        pairs = dataset.patient_conditions.tocoo()
        has_candidates = np.asarray((dataset.condition_outcomes > 0).sum(axis=1)).ravel() > 0
        keep = has_candidates[pairs.col]
        patients, conditions = pairs.row[keep].astype(np.int64), pairs.col[keep].astype(np.int64)
    else:
        patients = np.arange(dataset.n_patients)
        conditions = np.full(dataset.n_patients, -1, np.int64)
    rows, cols = [], []
    for condition, candidates, chunk in condition_batches(dataset, conditions):
        idx, _ = rank_patients(
            artifact.model, patients[chunk], condition, candidates, k, include_tried=False
        )
        filled = idx >= 0
        rows.append(np.repeat(patients[chunk], k)[filled.ravel()])
        cols.append(idx[filled])
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    slots = sp.csr_matrix(
        (np.ones(len(rows), np.int64), (rows, cols)),
        shape=(dataset.n_patients, dataset.n_treatments),
    )
    slots.sum_duplicates()
    return slots, np.bincount(patients, minlength=dataset.n_patients), matched


def group_exposure(
    artifact: Artifact,
    groups: pd.DataFrame,
    slots: sp.csr_matrix,
    n_requests: np.ndarray,
    matched: np.ndarray,
    attributes: Sequence[str],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Exposure shares per (attribute, group, treatment) and request counts per group.

    Returns ``exposure`` (attribute, group, treatment_id, slots, share; treatments that fill no
    slot for the attribute are left out) and ``requests`` (attribute, group, n_ranked patients,
    n_requests, n_slots). Artifact patients absent from ``groups`` count as ``unknown``.
    """
    treatment_ids = artifact.dataset.treatments.external_ids
    parts, counts = [], []
    for attribute in (ALL, *attributes):
        if attribute == ALL:
            labels = np.full(len(matched), ALL, object)
        else:
            values = groups[attribute].to_numpy()
            labels = np.where(matched >= 0, values[np.maximum(matched, 0)], UNKNOWN).astype(object)
        codes, names = pd.factorize(labels)
        indicator = sp.csr_matrix(
            (np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(len(names), len(codes))
        )
        per_group = np.asarray((indicator @ slots).todense(), dtype=np.int64)  # (n_g, n_t)
        totals = per_group.sum(axis=1)
        shown = np.flatnonzero(per_group.sum(axis=0) > 0)
        share = per_group[:, shown] / np.maximum(totals, 1)[:, None]
        parts.append(
            pd.DataFrame(
                {
                    "attribute": attribute,
                    "group": np.repeat(np.asarray(names, object), len(shown)),
                    "treatment_id": np.tile(treatment_ids[shown], len(names)),
                    "slots": per_group[:, shown].ravel(),
                    "share": share.ravel(),
                }
            )
        )
        counts.append(
            pd.DataFrame(
                {
                    "attribute": attribute,
                    "group": np.asarray(names, object),
                    "n_ranked": np.bincount(
                        codes, weights=n_requests > 0, minlength=len(names)
                    ).astype(np.int64),
                    "n_requests": np.bincount(
                        codes, weights=n_requests, minlength=len(names)
                    ).astype(np.int64),
                    "n_slots": totals,
                }
            )
        )
    return pd.concat(parts, ignore_index=True), pd.concat(counts, ignore_index=True)


def exposure_gaps(
    exposure: pd.DataFrame, requests: pd.DataFrame, min_group_size: int
) -> pd.DataFrame:
    """Per (attribute, treatment): highest minus lowest share over known groups with at least
    ``min_group_size`` requests; largest first."""
    eligible = requests[
        (requests["attribute"] != ALL)
        & (requests["group"] != UNKNOWN)
        & (requests["n_requests"] >= min_group_size)
    ]
    frame = exposure.merge(eligible[["attribute", "group"]], on=["attribute", "group"])
    rows = []
    for (attribute, treatment), part in frame.groupby(["attribute", "treatment_id"], sort=False):
        if part["group"].nunique() < 2:
            continue
        high, low = part.loc[part["share"].idxmax()], part.loc[part["share"].idxmin()]
        rows.append(
            {
                "attribute": attribute,
                "treatment_id": treatment,
                "gap": float(high["share"] - low["share"]),
                "high_group": high["group"],
                "high": float(high["share"]),
                "low_group": low["group"],
                "low": float(low["share"]),
            }
        )
    columns = ["attribute", "treatment_id", "gap", "high_group", "high", "low_group", "low"]
    return pd.DataFrame(rows, columns=columns).sort_values(
        ["attribute", "gap"], ascending=[True, False], ignore_index=True
    )


def treatment_names(tables: CohortTables, exposure: pd.DataFrame) -> dict[str, str]:
    if tables.treatments is None:
        return {}
    names = tables.treatments.drop_duplicates(C.treatment).set_index(C.treatment)["name"]
    shown = pd.unique(exposure["treatment_id"])
    return {str(t): str(names[t]) for t in shown if t in names.index and str(names[t]).strip()}
