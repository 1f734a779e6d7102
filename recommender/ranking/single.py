"""Ranking for one patient: a known patient by id, or a new one from their record.

Exclusions are a guarantee, never a low score (rules and reasons: :mod:`recommender.ranking.safety`):
an excluded treatment is removed before the top-k is taken, so a list has fewer than ``k``
entries when fewer treatments are allowed. With a ``condition_id`` only treatments recorded for
that condition in the data are candidates. This is the service's path: the patient's few
entries are read with plain Python, and a condition's few candidates are scored alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

import numpy as np

from ..data.dataset import Dataset
from ..data.patient import Query, encode_patient
from . import safety
from .answer import Exclusion, Recommendation, RecommendationList, model_summary
from .evidence import evidence_many
from .protocols import ScoringModel, factor_model
from .topk import check_k, mask_scores, top_k


def recommend_known(
    model: ScoringModel,
    patient_id: str,
    k: int = 10,
    condition_id: str | None = None,
    include_tried: bool = False,
    active_treatments: Iterable[str] | None = None,
    explain: bool = True,
):
    """Top-k for a patient in the training data (see :meth:`Recommender.recommend`)."""
    return recommend_known_conditions(
        model, patient_id, [condition_id], k, include_tried, active_treatments, explain
    )[0]


def recommend_unknown(
    model: ScoringModel,
    history: Sequence[Mapping],
    conditions: Iterable[str],
    k: int = 10,
    condition_id: str | None = None,
    include_tried: bool = False,
    sex: str | None = None,
    birth_year: int | None = None,
    active_treatments: Iterable[str] | None = None,
    explain: bool = True,
    observations: Mapping[str, float] | None = None,
):
    """Top-k for a patient outside the training data (see :meth:`Recommender.recommend_new`)."""
    return recommend_unknown_conditions(
        model,
        history,
        conditions,
        [condition_id],
        k,
        include_tried,
        sex,
        birth_year,
        active_treatments,
        explain,
        observations,
    )[0]


def recommend_known_conditions(
    model: ScoringModel,
    patient_id: str,
    condition_ids: Sequence[str | None],
    k: int = 10,
    include_tried: bool = False,
    active_treatments: Iterable[str] | None = None,
    explain: bool = True,
) -> list[RecommendationList]:
    """:func:`recommend_known` for each of ``condition_ids``, one list per condition, in order.

    The patient's record, scores and exclusions are computed once; each condition then restricts
    the candidates. Each list equals what :func:`recommend_known` returns for that condition.

    Raises
    ------
    UnknownIdError
        For an unknown patient or condition id, before any ranking.
    """
    model.check_fitted()
    index = model.dataset_.patient_index(patient_id)
    return recommend_stored_conditions(
        model, index, patient_id, condition_ids, k, include_tried, active_treatments, explain
    )


def recommend_stored_conditions(
    model: ScoringModel,
    index: int,
    patient_id: str,
    condition_ids: Sequence[str | None],
    k: int = 10,
    include_tried: bool = False,
    active_treatments: Iterable[str] | None = None,
    explain: bool = True,
) -> list[RecommendationList]:
    """:func:`recommend_known_conditions` for the patient at dataset row ``index``, shown as
    ``patient_id`` (no key needed: what an artifact's self-check ranks with)."""
    model.check_fitted()
    dataset, k = model.dataset_, check_k(k)
    indices = [dataset.condition_index(c) for c in condition_ids]
    query = Query.known(dataset, np.array([index]), np.array([-1]))
    return _rank_conditions(
        model,
        query,
        indices,
        list(condition_ids),
        k,
        patient_id,
        include_tried,
        active_treatments,
        explain,
        [],
    )


def recommend_unknown_conditions(
    model: ScoringModel,
    history: Sequence[Mapping],
    conditions: Iterable[str],
    condition_ids: Sequence[str | None],
    k: int = 10,
    include_tried: bool = False,
    sex: str | None = None,
    birth_year: int | None = None,
    active_treatments: Iterable[str] | None = None,
    explain: bool = True,
    observations: Mapping[str, float] | None = None,
) -> list[RecommendationList]:
    """:func:`recommend_unknown` for each of ``condition_ids``, one list per condition, in order.

    The patient is encoded, folded in and scored once; each condition then restricts the
    candidates. Each list equals what :func:`recommend_unknown` returns for that condition.

    Raises
    ------
    DataValidationError
        For a malformed history entry (as :func:`~recommender.data.patient.encode_patient`).
    UnknownIdError
        For an unknown condition id in ``condition_ids``, before any ranking.
    """
    model.check_fitted()
    dataset, k = model.dataset_, check_k(k)
    record = encode_patient(
        dataset, history, conditions, sex=sex, birth_year=birth_year, observations=observations
    )
    indices = [dataset.condition_index(c) for c in condition_ids]
    query = Query.for_record(dataset, record, -1)
    notes = [f"ignored ids unknown to the model: {record.ignored}"] if record.ignored else []
    return _rank_conditions(
        model,
        query,
        indices,
        list(condition_ids),
        k,
        None,
        include_tried,
        active_treatments,
        explain,
        notes,
    )


def _rank_conditions(
    model,
    query: Query,
    conditions: list[int],
    condition_ids: list,
    k: int,
    patient_id,
    include_tried: bool,
    active_treatments,
    explain: bool,
    notes: list[str],
) -> list[RecommendationList]:
    """One answer per condition for the single patient of ``query``.

    The active treatments and exclusion codes do not depend on the condition, and neither do the
    patient factors of a model whose :meth:`~Recommender.score` ignores ``query.conditions`` (the
    factor models): those are computed once, and each condition scores only its candidates.
    """
    dataset = model.dataset_
    requested = safety.resolve_active(dataset, active_treatments)
    notes = notes + _active_notes(dataset, requested)
    active = safety.patient_active(dataset, query)
    if requested.treatments:
        active = sorted(set(active).union(requested.treatments))
    codes = safety.patient_codes(dataset, query, include_tried, active, requested.ingredients)
    flags = _flags(dataset, active, requested.ingredients)
    scorer = _scorer(model, query)
    return [
        _rank_condition(
            model,
            replace(query, conditions=np.array([condition])),
            k,
            patient_id,
            condition_id,
            codes,
            (active, requested.ingredients),
            flags,
            explain,
            notes,
            scorer,
        )
        for condition, condition_id in zip(conditions, condition_ids)
    ]


def _active_notes(dataset: Dataset, requested: safety.RequestedActive) -> list[str]:
    """What the answer says about the request's active ids that are not treatments."""
    notes = []
    if requested.ingredients:
        named = dataset.ingredients.to_external(requested.ingredients).tolist()
        notes.append(
            f"active ingredients checked for duplicate therapy only, not for interactions: {named}"
        )
    if requested.unknown:
        notes.append(
            "active treatments unknown to the model, not checked for interactions or duplicate "
            f"therapy: {requested.unknown}"
        )
    return notes


def _flags(
    dataset: Dataset, active: list[int], active_ingredients: list[int]
) -> dict[int, list[dict]]:
    """Treatment index -> the flags a recommendation of it carries: moderate interactions with
    active treatments, and shared ingredients when the policy flags duplicates."""
    flags: dict[int, list[dict]] = {}
    treatment_ids = dataset.treatments.external_ids
    for t, partners in safety.moderate_partners(dataset, active).items():
        flags[t] = [
            {"type": "interaction", "severity": "moderate", "with": str(treatment_ids[partner])}
            for partner in partners
        ]
    for t, duplicates in safety.duplicate_flags(dataset, active, active_ingredients).items():
        flags[t] = flags.get(t, []) + duplicates
    return flags


def _scorer(model: ScoringModel, query: Query):
    """Function ``(query, treatments or None) -> scores (1, n)`` for the one patient of ``query``.

    For a factor model whose scores ignore the condition, the patient's factors are taken (or
    folded in) once and each call scores only the treatments asked for: a condition's few
    candidates rather than the whole catalogue. Otherwise the model's ``score`` (every
    treatment) or ``score_treatments`` (the candidates asked for) per call.
    """
    factors = factor_model(model)
    if factors is not None:
        users = factors.patient_factors(query)
        return lambda _query, treatments: factors.factor_scores(users, treatments)
    return lambda query_, treatments: (
        model.score(query_) if treatments is None else model.score_treatments(query_, treatments)
    )


def _rank_condition(
    model,
    query: Query,
    k: int,
    patient_id,
    condition_id,
    codes: Mapping[int, int],
    active: tuple[list[int], list[int]],
    flags: Mapping[int, list[dict]],
    explain: bool,
    notes: list[str],
    scorer,
) -> RecommendationList:
    """The answer for the condition ``query`` asks about (``scorer``: see :func:`_scorer`;
    ``codes``: the patient's :func:`safety.patient_codes` with the ``active`` (treatment,
    ingredient) indices; ``flags``: :func:`_flags`)."""
    dataset = model.dataset_
    condition = int(query.conditions[0])
    candidates = dataset.candidates(condition) if condition >= 0 else None
    if candidates is None:
        idx, values = top_k(
            mask_scores(
                dataset, scorer(query, None), safety.codes_row(codes, dataset.n_treatments), None
            ),
            k,
        )
        chosen = idx[0][idx[0] >= 0]
    else:
        chosen, values = _top_candidates(
            dataset, scorer(query, candidates)[0], codes, candidates, k
        )
    explanations = (
        _explanations(model, query, chosen, condition) if explain else [None] * len(chosen)
    )
    treatment_ids, names = dataset.treatments.external_ids, dataset.treatment_names
    recommendations = []
    for rank, (t, score, explanation) in enumerate(
        zip(chosen.tolist(), values[0].tolist(), explanations), start=1
    ):
        treatment_id = str(treatment_ids[t])
        recommendations.append(
            Recommendation(
                rank,
                treatment_id,
                score,
                explanation,
                list(flags.get(t, ())),
                names.get(treatment_id),
            )
        )
    excluded = _exclusions(dataset, codes, candidates, query.patient_conditions.indices, active)
    notes = notes + _evidence_note(dataset, candidates)
    if not recommendations:
        notes = notes + ["no treatment is allowed for this request after the exclusions"]
    return RecommendationList(
        patient_id, condition_id, recommendations, excluded, model=model_summary(model), notes=notes
    )


def _top_candidates(
    dataset: Dataset, scores: np.ndarray, codes: Mapping[int, int], candidates: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The same top-k as :func:`mask_scores` + :func:`top_k` over all ``n_t`` scores, computed
    among the condition's few ``candidates`` (sorted indices) only.

    ``scores`` (len(candidates),) of one patient for the candidates, ``codes`` its excluded
    treatments (index -> rule bits). Returns the chosen treatment indices (best first, ties by
    lower index, at most ``k``) and their scores as a (1, k) array, like :func:`top_k`'s row.
    A condition has a few candidates, so this is plain Python over them.
    """
    minimum = dataset.safety.min_support
    support = dataset.treatment_support[candidates].tolist()
    kept = [
        (value, position)
        for position, (t, value, count) in enumerate(
            zip(candidates.tolist(), np.asarray(scores, np.float32).tolist(), support)
        )
        if count >= minimum and t not in codes and math.isfinite(value)
    ]
    kept.sort(key=_best_first)  # stable: ties keep the lower index first, as top_k orders them
    kept = kept[:k]
    top = np.full((1, k), -np.inf, np.float32)
    top[0, : len(kept)] = [value for value, _ in kept]
    return candidates[[position for _, position in kept]], top


def _best_first(pair: tuple[float, int]) -> float:
    return -pair[0]


def _explanations(model, query: Query, chosen: np.ndarray, condition: int) -> list[dict]:
    """The model's explanation of each chosen treatment, with the evidence on record."""
    evidence = evidence_many(model.dataset_, chosen, condition)
    return [
        {**described, "evidence": item_evidence}
        for described, item_evidence in zip(model.explanations(query, chosen, condition), evidence)
    ]


def _exclusions(
    dataset, codes: Mapping[int, int], candidates, own_conditions, active: tuple[list, list]
) -> list[Exclusion]:
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
        excluded.append(
            Exclusion(
                treatment_id,
                reason,
                safety.describe(dataset, t, code, own_conditions, *active),
                rule=reason,
                treatment_name=names.get(treatment_id),
            )
        )
    return sorted(excluded, key=lambda e: e.treatment_id)


def _evidence_note(dataset, candidates) -> list[str]:
    count = int(safety.low_evidence(dataset, candidates).sum())
    if not count:
        return []
    return [
        f"{count} treatment(s) received by fewer than {dataset.safety.min_support} patients "
        "were not considered (insufficient_evidence)"
    ]
