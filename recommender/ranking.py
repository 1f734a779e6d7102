"""Ranking: model scores -> safety exclusions -> top-k (+ explanations), for one patient or many.

Exclusions are a guarantee, never a low score (rules and reasons: :mod:`recommender.safety`):
an excluded treatment is removed before the top-k is taken, so a list has fewer than ``k``
entries when fewer treatments are allowed. With a ``condition_id`` only treatments recorded for
that condition in the data are candidates.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from . import safety
from .columns import Columns as C
from .exceptions import ParameterError
from .explain import describe_contributions, evidence
from .models.base import Query

if TYPE_CHECKING:
    from .dataset import Dataset, PatientRecord
    from .models.base import Recommender

BATCH_SIZE = 4096
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
                  "excluded": [{k: v for k, v in asdict(e).items() if v is not None}
                               for e in self.excluded]}
        if self.notes:
            result["notes"] = self.notes
        return result

    @property
    def treatment_ids(self) -> list[str]:
        return [r.treatment_id for r in self.recommendations]


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


def mask_scores(dataset: "Dataset", scores: np.ndarray, codes: sp.csr_matrix,
                candidates: np.ndarray | None) -> np.ndarray:
    """Set excluded, under-evidenced, non-candidate and NaN entries of ``scores`` to -inf (in place)."""
    scores[~np.isfinite(scores)] = -np.inf
    coo = codes.tocoo()
    scores[coo.row, coo.col] = -np.inf
    banned = safety.low_evidence(dataset)
    if candidates is not None:
        allowed = np.zeros(scores.shape[1], bool)
        allowed[candidates] = True
        banned = banned | ~allowed
    scores[:, banned] = -np.inf
    return scores


def check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ParameterError(f"k must be a positive int; got {k!r}")
    return int(k)


def _requested(dataset: "Dataset", treatment_ids: Iterable[str] | None, n_rows: int = 1):
    """Pattern (n_rows, n_t) of the active treatments named in a request (unknown ids ignored)."""
    if not treatment_ids:
        return None, []
    ids = [str(t) for t in treatment_ids]
    idx = dataset.treatments.to_internal(ids, strict=False)
    known = np.unique(idx[idx >= 0])
    pattern = sp.csr_matrix((np.ones(len(known), bool), known, [0, len(known)]),
                            shape=(1, dataset.n_treatments))
    return sp.vstack([pattern] * n_rows, format="csr"), [t for t, i in zip(ids, idx) if i < 0]


# --- one patient --------------------------------------------------------------------------------

def recommend_known(model: "Recommender", patient_id: str, k: int = 10,
                    condition_id: str | None = None, include_tried: bool = False,
                    active_treatments: Iterable[str] | None = None, explain: bool = True):
    """Top-k for a patient in the training data (see :meth:`Recommender.recommend`)."""
    model.check_fitted()
    dataset, k = model.dataset_, check_k(k)
    p = np.array([dataset.patient_index(patient_id)])
    query = Query.known(dataset, p, np.array([dataset.condition_index(condition_id)]))
    return _rank_one(model, query, k, patient_id, condition_id, include_tried,
                     active_treatments, explain, [])


def recommend_unknown(model: "Recommender", history: Sequence[Mapping], conditions: Iterable[str],
                      k: int = 10, condition_id: str | None = None, include_tried: bool = False,
                      sex: str | None = None, birth_year: int | None = None,
                      active_treatments: Iterable[str] | None = None, explain: bool = True):
    """Top-k for a patient outside the training data (see :meth:`Recommender.recommend_new`)."""
    model.check_fitted()
    dataset, k = model.dataset_, check_k(k)
    record = dataset.encode_patient(history, conditions, sex=sex, birth_year=birth_year)
    query = query_for_record(dataset, record, dataset.condition_index(condition_id))
    notes = [f"ignored ids unknown to the model: {record.ignored}"] if record.ignored else []
    return _rank_one(model, query, k, None, condition_id, include_tried, active_treatments,
                     explain, notes)


def query_for_record(dataset: "Dataset", record: "PatientRecord", condition: int) -> Query:
    """Query for one patient outside the training data."""
    def pattern(indices, width):
        return sp.csr_matrix((np.ones(len(indices), bool), indices, [0, len(indices)]),
                             shape=(1, width))
    return Query(rows=record.row, patients=None, conditions=np.array([condition]),
                 patient_conditions=pattern(record.conditions, len(dataset.conditions)),
                 history=record.history, harmful=pattern(record.harmful, dataset.n_treatments),
                 history_days=record.history_days)


def _rank_one(model, query: Query, k: int, patient_id, condition_id, include_tried: bool,
              active_treatments, explain: bool, notes: list[str]):
    dataset = model.dataset_
    requested, unknown_active = _requested(dataset, active_treatments)
    if unknown_active:
        notes = notes + [f"active treatments unknown to the model, not checked for interactions: "
                         f"{unknown_active}"]
    active = safety.active_treatments(dataset, query, requested)
    codes = safety.exclusion_codes(dataset, query, include_tried, active)
    condition = int(query.conditions[0])
    candidates = dataset.candidates(condition) if condition >= 0 else None
    scores = mask_scores(dataset, model.score(query), codes, candidates)
    idx, values = top_k(scores, k)
    chosen = idx[0][idx[0] >= 0]
    active_idx = active.indices
    explanations = _explanations(model, query, chosen, condition) if explain else [None] * len(chosen)
    recommendations = []
    for rank, (t, score, explanation) in enumerate(zip(chosen, values[0], explanations), start=1):
        flags = [{"type": "interaction", "severity": "moderate", "with": str(partner)}
                 for partner in dataset.treatments.to_external(
                     safety.moderate_interactions(dataset, active_idx, int(t)))]
        treatment_id = str(dataset.treatments.to_external([t])[0])
        recommendations.append(Recommendation(rank, treatment_id, float(score), explanation, flags,
                                              dataset.treatment_names.get(treatment_id)))
    excluded = _exclusions(dataset, codes, candidates, query.patient_conditions.indices, active_idx)
    notes = notes + _evidence_note(dataset, candidates)
    if not recommendations:
        notes = notes + ["no treatment is allowed for this request after the exclusions"]
    return RecommendationList(patient_id, condition_id, recommendations, excluded,
                              model=model_summary(model), notes=notes)


def _explanations(model, query: Query, chosen: np.ndarray, condition: int) -> list[dict]:
    dataset = model.dataset_
    pairs = model.contributions(query, chosen)
    basis = ("the patient's own record, compared with patients with similar outcome histories"
             if model.personalised else
             "population outcome rates only; this model does not use the patient's own record")
    return [{"basis": basis,
             "contributions": describe_contributions(dataset, query, contributions),
             "evidence": evidence(dataset, int(t), condition)}
            for t, contributions in zip(chosen, pairs)]


def _exclusions(dataset, codes: sp.csr_matrix, candidates, own_conditions, active) -> list[Exclusion]:
    relevant = set(candidates.tolist()) if candidates is not None else None
    excluded = []
    for t, code in zip(codes.indices, codes.data):
        if relevant is None or t in relevant:
            reason = safety.primary_reason(int(code))
            treatment_id = str(dataset.treatments.to_external([t])[0])
            excluded.append(Exclusion(treatment_id, reason,
                                      safety.describe(dataset, int(t), int(code), own_conditions, active),
                                      rule=reason, treatment_name=dataset.treatment_names.get(treatment_id)))
    return sorted(excluded, key=lambda e: e.treatment_id)


def _evidence_note(dataset, candidates) -> list[str]:
    low = safety.low_evidence(dataset)
    if candidates is not None:
        low = low[candidates]
    count = int(low.sum())
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
    codes = safety.exclusion_codes(dataset, query, include_tried,
                                   safety.active_treatments(dataset, query))
    return top_k(mask_scores(dataset, model.score(query), codes, candidates), k)


def _frame(dataset, labels, condition_ids, positions, idx, values) -> pd.DataFrame:
    n, k = idx.shape
    keep = (idx >= 0).ravel()
    rows = np.repeat(positions, k)[keep]
    return pd.DataFrame({
        "_position": rows,
        C.patient: np.asarray(labels, dtype=object)[rows],
        C.condition: np.asarray(condition_ids, dtype=object)[rows],
        C.rank: np.tile(np.arange(1, k + 1), n)[keep],
        C.treatment: dataset.treatments.to_external(idx.ravel()[keep]),
        C.score: values.ravel()[keep],
    })
