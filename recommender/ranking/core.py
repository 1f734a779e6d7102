"""Ranking: model scores -> safety exclusions -> top-k (+ explanations), for one patient or many.

Exclusions are a guarantee, never a low score (rules and reasons: :mod:`recommender.ranking.safety`):
an excluded treatment is removed before the top-k is taken, so a list has fewer than ``k``
entries when fewer treatments are allowed. With a ``condition_id`` only treatments recorded for
that condition in the data are candidates.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
from tqdm.auto import tqdm

from . import safety
from ..utils import sparse_rows
from ..columns import Columns as C
from ..exceptions import ParameterError
from .explain import MAX_CONTRIBUTIONS, describe_strongest, evidence_many
from ..models.base import Query
from ..models.factorization import FactorModel
from ..utils.threads import single_threaded_blas

if TYPE_CHECKING:
    from ..data.dataset import Dataset, PatientRecord
    from ..models.base import Recommender

BATCH_SIZE = 4096
#: Threads of the factor-model fast path (BLAS runs single-threaded inside each).
THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
#: Treatments (highest factor norm first) scored for every patient before the norm bound
#: decides who needs more (see :func:`_rank_factors`).
PRUNE_FIRST = 1024
#: Scores (patients x allowed treatments) below which one thread is faster than a pool.
PARALLEL_CELLS = 1 << 20
DISCLAIMER = ("Decision support only: these suggestions rest on historical outcomes of similar "
              "patients and support, never replace, the clinician's judgment.")


@dataclass
class Recommendation:
    rank: int
    treatment_id: str
    score: float
    explanation: dict | None = None
    flags: list = field(default_factory=list)
    treatment_name: str | None = None


@dataclass
class Exclusion:
    treatment_id: str
    reason: str
    detail: str
    rule: str = ""
    treatment_name: str | None = None


@dataclass
class RecommendationList:
    """One answer: the ranked treatments, what was excluded and why, and the model's identity."""

    patient_id: str | None
    condition_id: str | None
    recommendations: list[Recommendation]
    excluded: list[Exclusion]
    model: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-able form; optional parts are omitted when empty."""
        recommendations = []
        for item in self.recommendations:
            entry = {"rank": item.rank, "treatment_id": item.treatment_id, "score": item.score}
            if item.treatment_name:
                entry["treatment_name"] = item.treatment_name
            if item.explanation is not None:
                entry["explanation"] = item.explanation
            if item.flags:
                entry["flags"] = item.flags
            recommendations.append(entry)
        result = {"patient_id": self.patient_id, "condition_id": self.condition_id,
                  "model": self.model, "recommendations": recommendations,
                  "excluded": [{k: v for k, v in vars(e).items() if v is not None}
                               for e in self.excluded]}
        if self.notes:
            result["notes"] = self.notes
        return result

    @property
    def treatment_ids(self) -> list[str]:
        return [r.treatment_id for r in self.recommendations]


# --- top-k --------------------------------------------------------------------------------------

#: Rows selected at a time: a (256, 10k) float32 block stays in cache while it is reduced.
SELECT_ROWS = 256
#: Column groups per row whose maxima bound the k-th best score (see :func:`top_k`).
SELECT_GROUPS = 128


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` columns per row of ``scores`` (n, m); -inf (and NaN, +inf) mean "not allowed".

    Returns indices int64 (n, k) and scores float32 (n, k), best first, ties by lower index
    (also at the cut); slots beyond the allowed columns hold index -1 and score -inf.

    Exact and fast for k << m: the columns are folded into about ``SELECT_GROUPS`` groups by
    pairwise maxima; the k-th largest group maximum ``t`` is a lower bound of the k-th best
    score (k groups each hold an entry >= t), so only entries >= t are sorted.
    """
    scores = np.asarray(scores)
    if scores.dtype.kind != "f":
        scores = scores.astype(np.float64)
    n, m = scores.shape
    idx = np.full((n, k), -1, np.int64)
    out = np.full((n, k), -np.inf, np.float32)
    if m == 0 or k == 0:
        return idx, out
    for start in range(0, n, SELECT_ROWS):
        stop = min(start + SELECT_ROWS, n)
        _select(np.ascontiguousarray(scores[start:stop]), k, idx[start:stop], out[start:stop])
    return idx, out


def _select(scores: np.ndarray, k: int, idx: np.ndarray, out: np.ndarray,
            labels: np.ndarray | None = None) -> None:
    """:func:`top_k` of one C-contiguous block of rows, written into ``idx`` and ``out``.

    With ``labels`` (m,) column ``j`` is reported as ``labels[j]`` and ties are broken by the
    lower label instead of the lower column.
    """
    r, m = scores.shape
    bound = _group_maxima(scores, max(SELECT_GROUPS, 2 * k))
    if np.isnan(bound).any() or np.isposinf(bound).any():  # maxima propagate NaN and +inf
        scores = np.where(np.isfinite(scores), scores, -np.inf).astype(scores.dtype)
        bound = _group_maxima(scores, max(SELECT_GROUPS, 2 * k))
    g = bound.shape[1]
    kk = min(k, g)
    threshold = np.partition(bound, g - kk, axis=1)[:, g - kk]
    np.maximum(threshold, -np.finfo(scores.dtype).max, out=threshold)  # -inf is never a candidate
    flat = np.flatnonzero(scores >= threshold[:, None])
    rows, cols = np.divmod(flat, m)
    values = scores.ravel()[flat]
    if labels is not None:
        cols = labels[cols]
    order = np.lexsort((cols, -values, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    counts = np.bincount(rows, minlength=r)
    rank = np.arange(len(rows)) - (np.cumsum(counts) - counts)[rows]
    keep = rank < k
    idx[rows[keep], rank[keep]] = cols[keep]
    out[rows[keep], rank[keep]] = values[keep]


def _group_maxima(scores: np.ndarray, groups: int) -> np.ndarray:
    """Maxima (r, g) of a partition of each row's columns into g groups, groups <= g < 2 * groups
    (the row itself when it is shorter than ``2 * groups``)."""
    width = scores.shape[1]
    if width < 2 * groups:
        return scores
    half = width // 2
    folded = np.maximum(scores[:, :half], scores[:, half:2 * half])
    if width % 2:
        np.maximum(folded[:, 0], scores[:, 2 * half], out=folded[:, 0])
    width = half
    while width >= 2 * groups:
        half = width // 2
        np.maximum(folded[:, :half], folded[:, half:2 * half], out=folded[:, :half])
        if width % 2:
            np.maximum(folded[:, 0], folded[:, 2 * half], out=folded[:, 0])
        width = half
    return folded[:, :width]


def mask_scores(dataset: "Dataset", scores: np.ndarray, codes: sp.csr_matrix,
                candidates: np.ndarray | None) -> np.ndarray:
    """Set excluded, under-evidenced, non-candidate and NaN entries of ``scores`` to -inf (in place)."""
    scores[~np.isfinite(scores)] = -np.inf
    rows = np.repeat(np.arange(codes.shape[0]), np.diff(codes.indptr))
    scores[rows, codes.indices] = -np.inf
    scores[:, ~allowed_columns(dataset, candidates)] = -np.inf
    return scores


def allowed_columns(dataset: "Dataset", candidates: np.ndarray | None) -> np.ndarray:
    """Boolean (n_t,): treatments anyone may be offered (enough evidence, among ``candidates``)."""
    allowed = ~safety.low_evidence(dataset)
    if candidates is not None:
        among = np.zeros(len(allowed), bool)
        among[candidates] = True
        allowed &= among
    return allowed


def check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ParameterError(f"k must be a positive int; got {k!r}")
    return int(k)


def _requested(dataset: "Dataset", treatment_ids: Iterable[str] | None) -> tuple[list[int], list[str]]:
    """Indices of the active treatments named in a request, and the ids the model does not know
    (ignored)."""
    if not treatment_ids:
        return [], []
    ids = [str(t) for t in treatment_ids]
    idx = dataset.treatments.to_internal(ids, strict=False).tolist()
    return [i for i in idx if i >= 0], [t for t, i in zip(ids, idx) if i < 0]


# --- one patient --------------------------------------------------------------------------------

def recommend_known(model: "Recommender", patient_id: str, k: int = 10,
                    condition_id: str | None = None, include_tried: bool = False,
                    active_treatments: Iterable[str] | None = None, explain: bool = True):
    """Top-k for a patient in the training data (see :meth:`Recommender.recommend`)."""
    return recommend_known_conditions(model, patient_id, [condition_id], k, include_tried,
                                      active_treatments, explain)[0]


def recommend_unknown(model: "Recommender", history: Sequence[Mapping], conditions: Iterable[str],
                      k: int = 10, condition_id: str | None = None, include_tried: bool = False,
                      sex: str | None = None, birth_year: int | None = None,
                      active_treatments: Iterable[str] | None = None, explain: bool = True):
    """Top-k for a patient outside the training data (see :meth:`Recommender.recommend_new`)."""
    return recommend_unknown_conditions(model, history, conditions, [condition_id], k,
                                        include_tried, sex, birth_year, active_treatments,
                                        explain)[0]


def recommend_known_conditions(model: "Recommender", patient_id: str,
                               condition_ids: Sequence[str | None], k: int = 10,
                               include_tried: bool = False,
                               active_treatments: Iterable[str] | None = None,
                               explain: bool = True) -> list[RecommendationList]:
    """:func:`recommend_known` for each of ``condition_ids``, one list per condition, in order.

    The patient's record, scores and exclusions are computed once; each condition then restricts
    the candidates. Each list equals what :func:`recommend_known` returns for that condition.

    Raises
    ------
    UnknownIdError
        For an unknown patient or condition id, before any ranking.
    """
    model.check_fitted()
    dataset, k = model.dataset_, check_k(k)
    p = np.array([dataset.patient_index(patient_id)])
    indices = [dataset.condition_index(c) for c in condition_ids]
    query = Query.known(dataset, p, np.array([-1]))
    return _rank_conditions(model, query, indices, list(condition_ids), k, patient_id,
                            include_tried, active_treatments, explain, [])


def recommend_unknown_conditions(model: "Recommender", history: Sequence[Mapping],
                                 conditions: Iterable[str], condition_ids: Sequence[str | None],
                                 k: int = 10, include_tried: bool = False,
                                 sex: str | None = None, birth_year: int | None = None,
                                 active_treatments: Iterable[str] | None = None,
                                 explain: bool = True) -> list[RecommendationList]:
    """:func:`recommend_unknown` for each of ``condition_ids``, one list per condition, in order.

    The patient is encoded, folded in and scored once; each condition then restricts the
    candidates. Each list equals what :func:`recommend_unknown` returns for that condition.

    Raises
    ------
    DataValidationError
        For a malformed history entry (as :meth:`Dataset.encode_patient`).
    UnknownIdError
        For an unknown condition id in ``condition_ids``, before any ranking.
    """
    model.check_fitted()
    dataset, k = model.dataset_, check_k(k)
    record = dataset.encode_patient(history, conditions, sex=sex, birth_year=birth_year)
    indices = [dataset.condition_index(c) for c in condition_ids]
    query = query_for_record(dataset, record, -1)
    notes = [f"ignored ids unknown to the model: {record.ignored}"] if record.ignored else []
    return _rank_conditions(model, query, indices, list(condition_ids), k, None, include_tried,
                            active_treatments, explain, notes)


def query_for_record(dataset: "Dataset", record: "PatientRecord", condition: int) -> Query:
    """Query for one patient outside the training data."""
    return Query(rows=record.row, patients=None, conditions=np.array([condition]),
                 patient_conditions=sparse_rows.pattern(record.conditions, len(dataset.conditions)),
                 history=record.history,
                 harmful=sparse_rows.pattern(record.harmful, dataset.n_treatments),
                 history_days=record.history_days)


def _rank_conditions(model, query: Query, conditions: list[int], condition_ids: list,
                     k: int, patient_id, include_tried: bool, active_treatments, explain: bool,
                     notes: list[str]) -> list[RecommendationList]:
    """One answer per condition for the single patient of ``query``.

    The active treatments and exclusion codes do not depend on the condition, and neither do the
    patient factors of a model whose :meth:`~Recommender.score` ignores ``query.conditions`` (the
    factor models): those are computed once, and each condition scores only its candidates.
    """
    dataset = model.dataset_
    requested, unknown_active = _requested(dataset, active_treatments)
    if unknown_active:
        notes = notes + [f"active treatments unknown to the model, not checked for interactions: "
                         f"{unknown_active}"]
    active = safety.patient_active(dataset, query)
    if requested:
        active = sorted(set(active).union(requested))
    codes = safety.patient_codes(dataset, query, include_tried, active)
    moderate = safety.moderate_partners(dataset, active)
    scorer = _scorer(model, query)
    return [_rank_condition(model, replace(query, conditions=np.array([condition])), k,
                            patient_id, condition_id, codes, active, moderate, explain,
                            notes, scorer)
            for condition, condition_id in zip(conditions, condition_ids)]


def _scorer(model: "Recommender", query: Query):
    """Function ``(query, treatments or None) -> scores (1, n)`` for the one patient of ``query``.

    For a factor model whose scores ignore the condition, the patient's factors are taken (or
    folded in) once and each call scores only the treatments asked for: a condition's few
    candidates rather than the whole catalogue. Otherwise :meth:`~Recommender.score` per call.
    """
    if _scores_ignore_condition(model):
        users = model.patient_factors(query)
        return lambda _query, treatments: model.factor_scores(users, treatments)
    return lambda query_, treatments: (model.score(query_) if treatments is None
                                       else model.score(query_)[:, treatments])


def _scores_ignore_condition(model: "Recommender") -> bool:
    """Whether ``model.score`` is the same whatever condition a query asks about."""
    return isinstance(model, FactorModel) and type(model)._score is FactorModel._score


def _rank_condition(model, query: Query, k: int, patient_id, condition_id, codes: Mapping[int, int],
                    active: list[int], moderate: Mapping, explain: bool, notes: list[str],
                    scorer) -> RecommendationList:
    """The answer for the condition ``query`` asks about (``scorer``: see :func:`_scorer`;
    ``codes``: the patient's :func:`safety.patient_codes` with the ``active`` treatments)."""
    dataset = model.dataset_
    condition = int(query.conditions[0])
    candidates = dataset.candidates(condition) if condition >= 0 else None
    if candidates is None:
        idx, values = top_k(mask_scores(dataset, scorer(query, None),
                                        safety.codes_row(codes, dataset.n_treatments), None), k)
        chosen = idx[0][idx[0] >= 0]
    else:
        chosen, values = _top_candidates(dataset, scorer(query, candidates)[0], codes, candidates, k)
    explanations = _explanations(model, query, chosen, condition) if explain else [None] * len(chosen)
    treatment_ids, names = dataset.treatments.external_ids, dataset.treatment_names
    recommendations = []
    for rank, (t, score, explanation) in enumerate(
            zip(chosen.tolist(), values[0].tolist(), explanations), start=1):
        flags = [{"type": "interaction", "severity": "moderate", "with": str(treatment_ids[partner])}
                 for partner in moderate.get(t, ())]
        treatment_id = str(treatment_ids[t])
        recommendations.append(Recommendation(rank, treatment_id, score, explanation, flags,
                                              names.get(treatment_id)))
    excluded = _exclusions(dataset, codes, candidates, query.patient_conditions.indices, active)
    notes = notes + _evidence_note(dataset, candidates)
    if not recommendations:
        notes = notes + ["no treatment is allowed for this request after the exclusions"]
    return RecommendationList(patient_id, condition_id, recommendations, excluded,
                              model=model_summary(model), notes=notes)


def _top_candidates(dataset: "Dataset", scores: np.ndarray, codes: Mapping[int, int],
                    candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The same top-k as :func:`mask_scores` + :func:`top_k` over all ``n_t`` scores, computed
    among the condition's few ``candidates`` (sorted indices) only.

    ``scores`` (len(candidates),) of one patient for the candidates, ``codes`` its excluded
    treatments (index -> rule bits). Returns the chosen treatment indices (best first, ties by
    lower index, at most ``k``) and their scores as a (1, k) array, like :func:`top_k`'s row.
    A condition has a few candidates, so this is plain Python over them.
    """
    minimum = dataset.safety.min_support
    support = dataset.treatment_support[candidates].tolist()
    kept = [(value, position) for position, (t, value, count) in enumerate(
                zip(candidates.tolist(), np.asarray(scores, np.float32).tolist(), support))
            if count >= minimum and t not in codes and math.isfinite(value)]
    kept.sort(key=_best_first)  # stable: ties keep the lower index first, as top_k orders them
    kept = kept[:k]
    top = np.full((1, k), -np.inf, np.float32)
    top[0, :len(kept)] = [value for value, _ in kept]
    return candidates[[position for _, position in kept]], top


def _best_first(pair: tuple[float, int]) -> float:
    return -pair[0]


def _explanations(model, query: Query, chosen: np.ndarray, condition: int) -> list[dict]:
    dataset = model.dataset_
    pairs = model.strongest_contributions(query, chosen, MAX_CONTRIBUTIONS)
    basis = ("the patient's own record, compared with patients with similar outcome histories"
             if model.personalised else
             "population outcome rates only; this model does not use the patient's own record")
    evidence = evidence_many(dataset, chosen, condition)
    described = describe_strongest(dataset, query, pairs)
    return [{"basis": basis, "contributions": contributions, "evidence": item_evidence}
            for contributions, item_evidence in zip(described, evidence)]


def _exclusions(dataset, codes: Mapping[int, int], candidates, own_conditions,
                active: list[int]) -> list[Exclusion]:
    """What ``codes`` excludes among ``candidates`` (every treatment when None), by id."""
    if candidates is None:
        coded = sorted(codes.items())
    else:
        coded = [(t, codes[t]) for t in candidates.tolist() if t in codes]
    treatment_ids, names = dataset.treatments.external_ids, dataset.treatment_names
    excluded = []
    for t, code in coded:
        reason = safety.primary_reason(code)
        treatment_id = str(treatment_ids[t])
        excluded.append(Exclusion(treatment_id, reason,
                                  safety.describe(dataset, t, code, own_conditions, active),
                                  rule=reason, treatment_name=names.get(treatment_id)))
    return sorted(excluded, key=lambda e: e.treatment_id)


def _evidence_note(dataset, candidates) -> list[str]:
    count = int(safety.low_evidence(dataset, candidates).sum())
    if not count:
        return []
    return [f"{count} treatment(s) received by fewer than {dataset.safety.min_support} patients "
            "were not considered (insufficient_evidence)"]


def model_summary(model: "Recommender") -> dict:
    """The model identity attached to every answer: kind, version and data fingerprint."""
    info = {"type": model.kind}
    manifest = getattr(model, "manifest_", None)
    if manifest:
        info.update(version=manifest.get("version"), data_fingerprint=manifest.get("data", {}).get("fingerprint"))
    info["disclaimer"] = DISCLAIMER
    return info


# --- many patients ------------------------------------------------------------------------------

def recommend_many(model: "Recommender", patient_ids: Sequence[str], k: int = 10,
                   condition_ids: Sequence[str | None] | None = None, include_tried: bool = False,
                   show_progress: bool = False, batch_size: int = BATCH_SIZE) -> pd.DataFrame:
    """Top-k for many known patients: DataFrame with patient_id, condition_id, rank, treatment_id, score.

    Requests are grouped by condition and scored in batches of ``batch_size`` patients. Every
    safety rule applies (active treatments come from each patient's record). Unknown patient or
    condition ids raise :class:`~recommender.exceptions.UnknownIdError` before any work is done.
    """
    model.check_fitted()
    patients = model.dataset_.patient_indices(patient_ids)
    return _rank_indices(model, patients, list(patient_ids), condition_ids, check_k(k),
                         include_tried, show_progress, batch_size)


def recommend_all(model: "Recommender", k: int = 10, condition_id: str | None = None,
                  include_tried: bool = False, show_progress: bool = False,
                  batch_size: int = BATCH_SIZE) -> pd.DataFrame:
    """Top-k for every patient in the model, labelled with the ids the model holds
    (pseudonyms for a keyed model); same columns as :func:`recommend_many`."""
    model.check_fitted()
    dataset = model.dataset_
    patients = np.arange(dataset.n_patients)
    return _rank_indices(model, patients, dataset.patients.external_ids,
                         [condition_id] * len(patients), check_k(k), include_tried,
                         show_progress, batch_size)


def _rank_indices(model, patients: np.ndarray, labels, condition_ids, k: int,
                  include_tried: bool, show_progress: bool, batch_size: int) -> pd.DataFrame:
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
            chunk = positions[start:start + batch_size]
            idx, values = rank_patients(model, patients[chunk], condition, candidates, k, include_tried)
            ranked.append((chunk, idx, values))
            progress.update(len(chunk))
    progress.close()
    return _frame(dataset, labels, condition_ids, ranked, k)


def _condition_indices(dataset: "Dataset", condition_ids) -> np.ndarray:
    """Condition index per request (-1 for none), looking each distinct id up once."""
    codes, uniques = pd.factorize(pd.Series(list(condition_ids), dtype=object), use_na_sentinel=True)
    lookup = np.array([dataset.condition_index(c) for c in uniques] + [-1], np.int64)
    return lookup[codes]


def rank_patients(model: "Recommender", patients: np.ndarray, condition: int,
                  candidates: np.ndarray | None, k: int, include_tried: bool):
    """Top-k indices and scores, (n, k) each, for known patient indices asking about one condition.

    Factor models (ALS, BPR, LMF) take :func:`_rank_factors`, which scores only the allowed
    treatments in cache-sized blocks on every core; it returns exactly what the generic path
    (dense scores, :func:`mask_scores`, :func:`top_k`) returns.
    """
    dataset = model.dataset_
    patients = np.asarray(patients, dtype=np.int64)
    query = Query.known(dataset, patients, np.full(len(patients), condition))
    codes = safety.exclusion_codes(dataset, query, include_tried,
                                   safety.active_treatments(dataset, query))
    if _factor_scoring(model, patients):
        return _rank_factors(model, patients, codes, allowed_columns(dataset, candidates), k)
    return top_k(mask_scores(dataset, model.score(query), codes, candidates), k)


def _factor_scoring(model: "Recommender", patients: np.ndarray) -> bool:
    """Whether ``model`` scores known patients as float32 user @ item factor products whose
    values are all finite (so the fast path needs no NaN or overflow handling)."""
    if not _scores_ignore_condition(model):  # not plain user @ item factor products
        return False
    users, items = model.user_factors_, model.item_factors_
    if users.dtype != np.float32 or items.dtype != np.float32 or not len(patients):
        return False
    items = items[: model.dataset_.n_treatments]
    chosen = users[patients]
    if not (np.isfinite(chosen).all() and np.isfinite(items).all()):
        return False
    largest = float(np.abs(chosen).max(initial=0)) * float(np.abs(items).max(initial=0))
    return largest * users.shape[1] < np.finfo(np.float32).max / 2  # no product can overflow


def _rank_factors(model, patients: np.ndarray, codes: sp.csr_matrix, allowed: np.ndarray,
                  k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of ``user_factors_[patients] @ item_factors_[allowed].T`` with ``codes`` excluded.

    Only allowed treatments are multiplied (a condition's candidates are a few of thousands),
    and of those only the ones that can matter: treatments are taken in decreasing factor norm,
    the first ``PRUNE_FIRST`` are scored for every patient, and a patient's k-th best score
    ``t`` among them bounds the rest (Cauchy-Schwarz: a treatment of norm ``n`` scores at most
    ``|u| n``); only patients for whom some later treatment could still reach ``t`` get a
    longer prefix scored (doubling). The result is exact, ties by lower treatment index.
    Blocks of ``SELECT_ROWS`` patients run on a thread pool (BLAS and numpy release the GIL).
    """
    n = len(patients)
    idx = np.full((n, k), -1, np.int64)
    out = np.full((n, k), -np.inf, np.float32)
    if not allowed.any():
        return idx, out
    items, norms, labels, position, prefixes = _norm_order(model, allowed, k)
    users = model.user_factors_

    def score(rows: np.ndarray, excluded_rows, excluded_at, width: int) -> np.ndarray:
        scores = users[patients[rows]] @ items[:width].T
        inside = excluded_at < width
        scores[excluded_rows[inside], excluded_at[inside]] = -np.inf
        return scores

    def block(start: int) -> None:
        stop = min(start + SELECT_ROWS, n)
        rows = np.arange(start, stop)
        lo, hi = codes.indptr[start], codes.indptr[stop]
        ex_rows = np.repeat(np.arange(stop - start), np.diff(codes.indptr[start:stop + 1]))
        ex_at = position[codes.indices[lo:hi]]
        ex_rows, ex_at = ex_rows[ex_at >= 0], ex_at[ex_at >= 0]
        width = prefixes[0]
        _select(score(rows, ex_rows, ex_at, width), k, idx[start:stop], out[start:stop], labels[:width])
        if width == len(labels):
            return
        # Treatments beyond the prefix can reach the k-th best only if |u| n >= t (with room for
        # float rounding); -inf (fewer than k allowed so far) or t <= 0 needs everything.
        kth = out[start:stop, k - 1].astype(np.float64)
        size = np.sqrt(np.einsum("ij,ij->i", users[patients[rows]], users[patients[rows]],
                                 dtype=np.float64)) * (1 + 1e-4) + 1e-30
        limit = np.where(kth > 0, kth / size, -np.inf)
        needed = np.searchsorted(-norms, -limit, side="right")  # treatments with norm >= limit
        for wider in prefixes[1:]:
            local = np.flatnonzero((needed > width) & (needed <= wider)
                                   | ((needed > width) & (wider == len(labels))))
            if len(local):
                keep = np.isin(ex_rows, local)
                remap = np.full(stop - start, -1, np.int64)
                remap[local] = np.arange(len(local))
                more_idx = np.full((len(local), k), -1, np.int64)
                more_out = np.full((len(local), k), -np.inf, np.float32)
                _select(score(rows[local], remap[ex_rows[keep]], ex_at[keep], wider), k,
                        more_idx, more_out, labels[:wider])
                idx[start + local], out[start + local] = more_idx, more_out
            width = wider

    starts = range(0, n, SELECT_ROWS)
    threads = min(THREADS, len(starts)) if n * len(labels) >= PARALLEL_CELLS else 1
    with single_threaded_blas():
        if threads == 1:
            for start in starts:
                block(start)
        else:
            list(_pool().map(block, starts))
    return idx, out


#: Prepared treatment orders kept per model (a condition's mask each; see :func:`_norm_order`).
ORDER_CACHE_ENTRIES = 256


def _norm_order(model, allowed: np.ndarray, k: int):
    """The allowed treatments in decreasing factor norm, as :func:`_rank_factors` scans them.

    Returns ``(items, norms, labels, position, prefixes)``: the factors (contiguous), norms and
    treatment indices in that order, each treatment's place in it (-1: not allowed) and the
    prefix widths scored in turn. Depends only on the factors, ``allowed`` and ``k``, so it is
    kept on the model (a batch job ranks thousands of blocks with the same few masks).
    """
    cache = vars(model).setdefault("_norm_orders", {})
    factors = model.item_factors_
    key = (id(factors), factors.shape, allowed.tobytes(), k)
    if key in cache:
        return cache[key][1:]
    columns = np.flatnonzero(allowed)
    items = factors[columns]
    norms = np.sqrt(np.einsum("ij,ij->i", items, items, dtype=np.float64))
    prefixes, width = [], max(PRUNE_FIRST, 4 * k)
    while 2 * width < len(columns) or (prefixes and width < len(columns)):
        prefixes.append(width)
        width *= 2
    prefixes.append(len(columns))  # a single prefix: no pruning (too few treatments to gain)
    order = np.argsort(-norms, kind="stable") if len(prefixes) > 1 else np.arange(len(columns))
    items, norms, labels = np.ascontiguousarray(items[order]), norms[order], columns[order]
    position = np.full(len(allowed), -1, np.int64)
    position[labels] = np.arange(len(labels))  # place of each treatment in norm order
    if len(cache) >= ORDER_CACHE_ENTRIES:
        cache.pop(next(iter(cache)))  # the oldest
    # the factors are held with the entry, so their id cannot be reused while it is cached
    cache[key] = (factors, items, norms, labels, position, prefixes)
    return items, norms, labels, position, prefixes


_POOL: list = []


def _pool() -> ThreadPoolExecutor:
    """The process's ranking threads (started once; a forked child starts its own)."""
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(THREADS, thread_name_prefix="recommender-rank"))
    return _POOL[0]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_POOL.clear)  # a parent's threads do not exist in a child


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
    return pd.DataFrame({
        C.patient: _string_column(labels, rows),
        C.condition: np.asarray(condition_ids, dtype=object)[rows],
        C.rank: ranks,
        C.treatment: _string_column(dataset.treatments.external_ids, idx),
        C.score: values,
    }, columns=columns)


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
