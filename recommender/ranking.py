"""Ranking: model scores -> safety exclusions -> top-k, for one patient or many.

Exclusions are a guarantee, never a low score: an excluded treatment is removed from the
candidates before the top-k is taken, so a list has fewer than ``k`` entries when fewer
treatments are allowed. Rules, in the order a reason is reported:

==================  =====================================================================
``previous_harm``   the patient had an adverse outcome (flag or outcome below the dataset's
                    ``harm_threshold``) with the treatment; applies even with include_tried
``contraindicated`` one of the patient's conditions or allergies contraindicates it
``already_tried``   the patient has an outcome recorded for it (unless ``include_tried``)
==================  =====================================================================

With a ``condition_id`` only treatments recorded for that condition in the data are candidates.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from .columns import Columns as C
from .exceptions import ParameterError, UnknownIdError
from .models.base import Query

if TYPE_CHECKING:
    from .dataset import Dataset, PatientRecord
    from .models.base import Recommender

TRIED, HARM, CONTRAINDICATED = 1, 2, 4
#: Bit -> reason code, in reporting priority.
REASONS = {HARM: "previous_harm", CONTRAINDICATED: "contraindicated", TRIED: "already_tried"}
BATCH_SIZE = 4096


@dataclass
class Recommendation:
    rank: int
    treatment_id: str
    score: float


@dataclass
class Exclusion:
    treatment_id: str
    reason: str
    detail: str


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
        result = {"patient_id": self.patient_id, "condition_id": self.condition_id,
                  "model": self.model,
                  "recommendations": [asdict(r) for r in self.recommendations],
                  "excluded": [asdict(e) for e in self.excluded]}
        if self.notes:
            result["notes"] = self.notes
        return result

    @property
    def treatment_ids(self) -> list[str]:
        return [r.treatment_id for r in self.recommendations]


# --- exclusions ---------------------------------------------------------------------------------

def exclusion_codes(dataset: "Dataset", history: sp.csr_matrix, harmful: sp.csr_matrix,
                    patient_conditions: sp.csr_matrix, include_tried: bool) -> sp.csr_matrix:
    """Bitmask CSR (n, n_t) int8 of the rules that exclude each treatment for each patient.

    ``history`` and ``harmful`` are (n, n_t) patterns, ``patient_conditions`` (n, n_c).
    """
    def bits(pattern: sp.csr_matrix, bit: int) -> sp.csr_matrix:
        pattern = sp.csr_matrix((np.full(pattern.nnz, bit, np.int8), pattern.indices,
                                 pattern.indptr), shape=pattern.shape)
        pattern.sum_duplicates()
        pattern.data[:] = bit
        return pattern

    contraindicated = (patient_conditions.astype(np.float32) @ dataset.contraindications.astype(np.float32)).tocsr()
    contraindicated.eliminate_zeros()
    codes = bits(harmful, HARM) + bits(contraindicated, CONTRAINDICATED)
    if not include_tried:
        codes = codes + bits(history, TRIED)
    return codes.astype(np.int8).tocsr()


def _primary_reason(code: int) -> str:
    return next(reason for bit, reason in REASONS.items() if code & bit)


def _describe(dataset: "Dataset", treatment: int, code: int, conditions: np.ndarray) -> str:
    if code & HARM:
        return "an adverse outcome with this treatment is on record for this patient"
    if code & CONTRAINDICATED:
        column = dataset.contraindications[:, treatment].toarray().ravel().astype(bool)
        culprits = dataset.conditions.to_external([c for c in conditions if column[c]])
        return "contraindicated by " + ", ".join(map(str, culprits))
    return "already tried by this patient (pass include_tried to rank it again)"


# --- top-k --------------------------------------------------------------------------------------

def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` columns per row of ``scores`` (n, m), -inf meaning "not allowed".

    Returns indices int64 (n, k) and scores float32 (n, k), best first (ties by lower index);
    slots beyond the allowed columns hold index -1 and score -inf.
    """
    n, m = scores.shape
    kk = min(k, m)
    idx = np.full((n, k), -1, np.int64)
    out = np.full((n, k), -np.inf, np.float32)
    if kk == 0 or n == 0:
        return idx, out
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if kk < m else np.tile(np.arange(m), (n, 1))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    part, part_scores = np.take_along_axis(part, order, 1), np.take_along_axis(part_scores, order, 1)
    allowed = np.isfinite(part_scores)
    idx[:, :kk] = np.where(allowed, part, -1)
    out[:, :kk] = np.where(allowed, part_scores, -np.inf)
    return idx, out


def _mask(scores: np.ndarray, codes: sp.csr_matrix, candidates: np.ndarray | None) -> np.ndarray:
    """Set excluded and non-candidate entries to -inf (in place) and NaN scores too."""
    scores[~np.isfinite(scores)] = -np.inf
    coo = codes.tocoo()
    scores[coo.row, coo.col] = -np.inf
    if candidates is not None:
        allowed = np.zeros(scores.shape[1], bool)
        allowed[candidates] = True
        scores[:, ~allowed] = -np.inf
    return scores


def check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ParameterError(f"k must be a positive int; got {k!r}")
    return int(k)


# --- one patient --------------------------------------------------------------------------------

def recommend_known(model: "Recommender", patient_id: str, k: int = 10,
                    condition_id: str | None = None, include_tried: bool = False):
    """Top-k for a patient in the training data (see :meth:`Recommender.recommend`)."""
    model.check_fitted()
    dataset, k = model.dataset_, check_k(k)
    p = np.array([dataset.patient_index(patient_id)])
    query = Query.known(dataset, p, np.array([dataset.condition_index(condition_id)]))
    codes = exclusion_codes(dataset, query.history, query.harmful, query.patient_conditions,
                            include_tried)
    return _rank_one(model, query, codes, k, patient_id, condition_id, [])


def recommend_unknown(model: "Recommender", history: Sequence[Mapping], conditions: Iterable[str],
                      k: int = 10, condition_id: str | None = None, include_tried: bool = False,
                      sex: str | None = None, birth_year: int | None = None):
    """Top-k for a patient outside the training data (see :meth:`Recommender.recommend_new`)."""
    model.check_fitted()
    dataset, k = model.dataset_, check_k(k)
    record = dataset.encode_patient(history, conditions, sex=sex, birth_year=birth_year)
    query = query_for_record(dataset, record, dataset.condition_index(condition_id))
    codes = exclusion_codes(dataset, query.history, query.harmful, query.patient_conditions,
                            include_tried)
    notes = [f"ignored ids unknown to the model: {record.ignored}"] if record.ignored else []
    return _rank_one(model, query, codes, k, None, condition_id, notes)


def query_for_record(dataset: "Dataset", record: "PatientRecord", condition: int) -> Query:
    """Query for one patient outside the training data."""
    def pattern(indices, width):
        return sp.csr_matrix((np.ones(len(indices), bool), indices, [0, len(indices)]),
                             shape=(1, width))
    return Query(rows=record.row, patients=None, conditions=np.array([condition]),
                 patient_conditions=pattern(record.conditions, len(dataset.conditions)),
                 history=record.history, harmful=pattern(record.harmful, dataset.n_treatments))


def _rank_one(model, query: Query, codes: sp.csr_matrix, k: int, patient_id, condition_id, notes):
    dataset = model.dataset_
    condition = int(query.conditions[0])
    candidates = dataset.candidates(condition) if condition >= 0 else None
    scores = _mask(model.score(query), codes, candidates)
    idx, values = top_k(scores, k)
    keep = idx[0] >= 0
    names = dataset.treatments.to_external(idx[0][keep])
    recommendations = [Recommendation(rank=i + 1, treatment_id=str(t), score=float(s))
                       for i, (t, s) in enumerate(zip(names, values[0][keep]))]
    excluded = []
    own_conditions = query.patient_conditions.indices
    relevant = set(candidates.tolist()) if candidates is not None else None
    for t, code in zip(codes.indices, codes.data):
        if relevant is None or t in relevant:
            excluded.append(Exclusion(str(dataset.treatments.to_external([t])[0]),
                                      _primary_reason(int(code)),
                                      _describe(dataset, int(t), int(code), own_conditions)))
    excluded.sort(key=lambda e: e.treatment_id)
    if not recommendations:
        notes = notes + ["no treatment is allowed for this request after the exclusions"]
    return RecommendationList(patient_id, condition_id, recommendations, excluded,
                              model=model_summary(model), notes=notes)


def model_summary(model: "Recommender") -> dict:
    """The model identity attached to every answer: kind, version and data fingerprint."""
    info = {"type": model.kind}
    manifest = getattr(model, "manifest_", None)
    if manifest:
        info.update(version=manifest.get("version"), data_fingerprint=manifest.get("data", {}).get("fingerprint"))
    return info


# --- many patients ------------------------------------------------------------------------------

def recommend_many(model: "Recommender", patient_ids: Sequence[str], k: int = 10,
                   condition_ids: Sequence[str | None] | None = None, include_tried: bool = False,
                   show_progress: bool = False, batch_size: int = BATCH_SIZE) -> pd.DataFrame:
    """Top-k for many known patients: DataFrame with patient_id, condition_id, rank, treatment_id, score.

    Requests are grouped by condition and scored in batches of ``batch_size`` patients.
    Unknown patient or condition ids raise :class:`UnknownIdError` before any work is done.
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
    parts = []
    progress = tqdm(total=len(patients), disable=not show_progress, unit="patient", desc="ranking")
    for condition in np.unique(conditions):
        positions = np.flatnonzero(conditions == condition)
        candidates = dataset.candidates(condition) if condition >= 0 else None
        for start in range(0, len(positions), batch_size):
            chunk = positions[start:start + batch_size]
            idx, values = rank_patients(model, patients[chunk], condition, candidates, k, include_tried)
            parts.append(_frame(dataset, labels, condition_ids, chunk, idx, values))
            progress.update(len(chunk))
    progress.close()
    columns = [C.patient, C.condition, C.rank, C.treatment, C.score]
    if not parts:
        return pd.DataFrame(columns=columns)
    frame = pd.concat(parts, ignore_index=True)
    order = np.argsort(frame.pop("_position").to_numpy(), kind="stable")
    return frame.iloc[order].reset_index(drop=True)[columns]


def _condition_indices(dataset: "Dataset", condition_ids) -> np.ndarray:
    """Condition index per request (-1 for none), looking each distinct id up once."""
    codes, uniques = pd.factorize(pd.Series(list(condition_ids), dtype=object), use_na_sentinel=True)
    lookup = np.array([dataset.condition_index(c) for c in uniques] + [-1], np.int64)
    return lookup[codes]


def rank_patients(model: "Recommender", patients: np.ndarray, condition: int,
                  candidates: np.ndarray | None, k: int, include_tried: bool):
    """Top-k indices and scores, (n, k) each, for known patient indices asking about one condition."""
    dataset = model.dataset_
    query = Query.known(dataset, patients, np.full(len(patients), condition))
    codes = exclusion_codes(dataset, query.history, query.harmful, query.patient_conditions,
                            include_tried)
    return top_k(_mask(model.score(query), codes, candidates), k)


def _frame(dataset, patient_ids, condition_ids, positions, idx, values) -> pd.DataFrame:
    n, k = idx.shape
    keep = (idx >= 0).ravel()
    rows = np.repeat(positions, k)[keep]
    return pd.DataFrame({
        "_position": rows,
        C.patient: np.asarray(patient_ids, dtype=object)[rows],
        C.condition: np.asarray(condition_ids, dtype=object)[rows],
        C.rank: np.tile(np.arange(1, k + 1), n)[keep],
        C.treatment: dataset.treatments.to_external(idx.ravel()[keep]),
        C.score: values.ravel()[keep],
    })
