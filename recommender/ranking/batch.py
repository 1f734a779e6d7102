"""Ranking for many known patients at once (evaluation, batch jobs, ``recommend --all``).

Requests are grouped by condition and ranked in blocks; every safety rule applies, with each
patient's active treatments taken from their record. Factor models take the exact fast path of
:mod:`recommender.ranking.factor_path`; every other model is scored densely and masked.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
from tqdm.auto import tqdm

from ..columns import Columns as C
from ..data.dataset import Dataset
from ..data.patient import Query
from ..exceptions import ParameterError
from . import safety
from .factor_path import rank_factors
from .protocols import FactorScoringModel, ScoringModel, factor_model
from .topk import allowed_columns, check_k, mask_scores, top_k

BATCH_SIZE = 4096


def recommend_many(
    model: ScoringModel,
    patient_ids: Sequence[str],
    k: int = 10,
    condition_ids: Sequence[str | None] | None = None,
    include_tried: bool = False,
    show_progress: bool = False,
    batch_size: int = BATCH_SIZE,
) -> pd.DataFrame:
    """Top-k for many known patients: DataFrame with patient_id, condition_id, rank, treatment_id, score.

    Requests are grouped by condition and scored in batches of ``batch_size`` patients. Every
    safety rule applies (active treatments come from each patient's record). Unknown patient or
    condition ids raise :class:`~recommender.exceptions.UnknownIdError` before any work is done.
    """
    model.check_fitted()
    patients = model.dataset_.patient_indices(patient_ids)
    return _rank_indices(
        model,
        patients,
        list(patient_ids),
        condition_ids,
        check_k(k),
        include_tried,
        show_progress,
        batch_size,
    )


def recommend_all(
    model: ScoringModel,
    k: int = 10,
    condition_id: str | None = None,
    include_tried: bool = False,
    show_progress: bool = False,
    batch_size: int = BATCH_SIZE,
) -> pd.DataFrame:
    """Top-k for every patient in the model, labelled with the ids the model holds
    (pseudonyms for a keyed model); same columns as :func:`recommend_many`."""
    model.check_fitted()
    dataset = model.dataset_
    patients = np.arange(dataset.n_patients)
    return _rank_indices(
        model,
        patients,
        dataset.patients.external_ids,
        [condition_id] * len(patients),
        check_k(k),
        include_tried,
        show_progress,
        batch_size,
    )


def _rank_indices(
    model,
    patients: np.ndarray,
    labels,
    condition_ids,
    k: int,
    include_tried: bool,
    show_progress: bool,
    batch_size: int,
) -> pd.DataFrame:
    dataset = model.dataset_
    if condition_ids is None:
        condition_ids = [None] * len(patients)
    if len(condition_ids) != len(patients):
        raise ParameterError("condition_ids must have one entry per patient id")
    conditions = _condition_indices(dataset, condition_ids)
    ranked = []  # (request positions, indices (n, k), scores (n, k)) per batch
    progress = tqdm(total=len(patients), disable=not show_progress, unit="patient", desc="ranking")
    for condition in np.unique(conditions):
        positions = np.flatnonzero(conditions == condition)
        candidates = dataset.candidates(condition) if condition >= 0 else None
        for start in range(0, len(positions), batch_size):
            chunk = positions[start : start + batch_size]
            idx, values = rank_patients(
                model, patients[chunk], condition, candidates, k, include_tried
            )
            ranked.append((chunk, idx, values))
            progress.update(len(chunk))
    progress.close()
    return _frame(dataset, labels, condition_ids, ranked, k)


def _condition_indices(dataset: Dataset, condition_ids) -> np.ndarray:
    """Condition index per request (-1 for none), looking each distinct id up once."""
    codes, uniques = pd.factorize(
        pd.Series(list(condition_ids), dtype=object), use_na_sentinel=True
    )
    lookup = np.array([dataset.condition_index(c) for c in uniques] + [-1], np.int64)
    return lookup[codes]


def rank_patients(
    model: ScoringModel,
    patients: np.ndarray,
    condition: int,
    candidates: np.ndarray | None,
    k: int,
    include_tried: bool,
    times: np.ndarray | None = None,
):
    """Top-k indices and scores, (n, k) each, for known patient indices asking about one condition.

    ``times`` (int64 ns per patient) asks about each patient's record as it was then (the
    outcome model reads its covariates and history at that time; the rules and the other
    models read the record as it is). Evaluation of past decisions passes it.

    Factor models (ALS, BPR, LMF) take :func:`rank_factors`, which scores only the allowed
    treatments in cache-sized blocks on every core; it returns exactly what the generic path
    (dense scores, :func:`mask_scores`, :func:`top_k`) returns.
    """
    dataset = model.dataset_
    patients = np.asarray(patients, dtype=np.int64)
    query = Query.known(dataset, patients, np.full(len(patients), condition), times)
    codes = safety.exclusion_codes(
        dataset, query, include_tried, safety.active_treatments(dataset, query)
    )
    factors = factor_model(model)
    if factors is not None and _factor_scoring(factors, patients):
        return rank_factors(factors, patients, codes, allowed_columns(dataset, candidates), k)
    return top_k(mask_scores(dataset, model.score(query), codes, candidates), k)


def _factor_scoring(model: FactorScoringModel, patients: np.ndarray) -> bool:
    """Whether the factor ``model`` scores known patients as float32 user @ item products whose
    values are all finite (so the fast path needs no NaN or overflow handling)."""
    users, items = model.user_factors_, model.item_factors_
    if users.dtype != np.float32 or items.dtype != np.float32 or not len(patients):
        return False
    items = items[: model.dataset_.n_treatments]
    chosen = users[patients]
    if not (np.isfinite(chosen).all() and np.isfinite(items).all()):
        return False
    largest = float(np.abs(chosen).max(initial=0)) * float(np.abs(items).max(initial=0))
    return largest * users.shape[1] < np.finfo(np.float32).max / 2  # no product can overflow


def _frame(dataset, labels, condition_ids, ranked, k: int) -> pd.DataFrame:
    """One DataFrame (request order, then rank) from the batches of :func:`_rank_indices`;
    ids are looked up once for all rows."""
    columns = [C.patient, C.condition, C.rank, C.treatment, C.score]
    if not ranked:
        return pd.DataFrame(columns=columns)
    positions = np.concatenate([chunk for chunk, _, _ in ranked])
    idx = np.concatenate([i for _, i, _ in ranked]).ravel()
    values = np.concatenate([v for _, _, v in ranked]).ravel()
    keep = idx >= 0
    rows = np.repeat(positions, k)[keep]
    ranks = np.tile(np.arange(1, k + 1), len(positions))[keep]
    idx, values = idx[keep], values[keep]
    if len(rows) and (np.diff(rows) < 0).any():  # batches were grouped by condition
        order = np.argsort(rows, kind="stable")
        rows, ranks, idx, values = rows[order], ranks[order], idx[order], values[order]
    return pd.DataFrame(
        {
            C.patient: _string_column(labels, rows),
            C.condition: np.asarray(condition_ids, dtype=object)[rows],
            C.rank: ranks,
            C.treatment: _string_column(dataset.treatments.external_ids, idx),
            C.score: values,
        },
        columns=columns,
    )


def _string_column(ids, positions: np.ndarray):
    """``ids[positions]`` as the column pandas infers for strings, gathered by Arrow when that
    is pandas' string storage (no Python object per row: 10M rows in a fraction of a second)."""
    dtype = pd.Series(["x"]).dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        try:
            strings = pa.array(np.asarray(ids, dtype=object), pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # not all strings: let pandas infer
            pass
        else:
            return pd.array(strings.take(pa.array(positions, pa.int64())), dtype=dtype)
    return np.asarray(ids, dtype=object)[positions]
