"""Patients, their condition episodes and the clinicians' prescriptions, drawn from the
planted model (:mod:`recommender.data.synthetic.planted_model`)."""

from __future__ import annotations

import numpy as np

from .planted_model import (
    ADVERSE,
    ALLERGY_PREVALENCE,
    BIRTH_YEARS,
    EPISODE_GAP,
    GUIDELINE_FIRST_LINE,
    LATEST_START,
    MAX_EPISODES,
    MAX_TRIES,
    MEAN_EXTRA_EPISODES,
    N_ALLERGIES,
    NO_RESPONSE,
    P_PARTIAL,
    P_WORSENED,
    PARTIAL,
    PAYER_SHARES,
    PAYERS,
    RACE_SHARES,
    RACES,
    RESPONDED,
    WORSENED,
    Episodes,
    Truth,
    age_band_index,
)


def draw_patients(rng: np.random.Generator, n: int, truth: Truth) -> dict[str, np.ndarray]:
    """Per-patient arrays of shape (n,) (allergies: (n, N_ALLERGIES) bool)."""
    sex = rng.integers(2, size=n)
    birth_year = rng.choice(BIRTH_YEARS, size=n)
    trait_p = np.exp(truth.log_trait_given_demo[sex, age_band_index(birth_year)])  # (n, Z)
    trait = (rng.random((n, 1)) > np.cumsum(trait_p, axis=1)).sum(axis=1)
    return {
        "sex": sex,
        "birth_year": birth_year,
        "trait": np.minimum(trait, trait_p.shape[1] - 1),
        "race": rng.choice(len(RACES), size=n, p=RACE_SHARES),
        "payer": rng.choice(len(PAYERS), size=n, p=PAYER_SHARES),
        "allergies": rng.random((n, N_ALLERGIES)) < ALLERGY_PREVALENCE,
    }


def draw_episodes(rng: np.random.Generator, n: int, prevalence: np.ndarray) -> Episodes:
    counts = 1 + rng.poisson(MEAN_EXTRA_EPISODES, size=n)
    counts = np.minimum(counts, min(len(prevalence), MAX_EPISODES))
    conditions = _distinct_conditions(rng, counts, prevalence)
    valid = conditions >= 0
    slot = np.broadcast_to(np.arange(conditions.shape[1]), conditions.shape)[valid]
    patient = np.repeat(np.arange(n), counts)
    held_out = (slot == counts[patient] - 1) & (counts[patient] >= 2)
    return Episodes(patient, conditions[valid], _start_days(rng, counts, valid)[valid], held_out)


def _distinct_conditions(
    rng: np.random.Generator, counts: np.ndarray, prevalence: np.ndarray
) -> np.ndarray:
    """(n, max count) condition indices, distinct within a row, -1 beyond each row's count.

    Draws by prevalence and redraws repeats until every row is distinct.
    """
    valid = np.arange(counts.max()) < counts[:, None]
    draws = rng.choice(len(prevalence), size=valid.shape, p=prevalence)
    conditions = np.where(valid, draws, -1)
    rows = np.arange(len(counts))
    while len(rows):
        repeat = _repeats(conditions[rows])
        rows = rows[repeat.any(axis=1)]
        repeat = repeat[repeat.any(axis=1)]
        sub = conditions[rows]
        sub[repeat] = rng.choice(len(prevalence), size=int(repeat.sum()), p=prevalence)
        conditions[rows] = sub
    return conditions


def _repeats(values: np.ndarray) -> np.ndarray:
    """Bool mask of entries equal to an earlier non-negative entry in the same row."""
    order = np.argsort(values, axis=1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=1)
    same = np.zeros(values.shape, dtype=bool)
    same[:, 1:] = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
    repeat = np.empty_like(same)
    np.put_along_axis(repeat, order, same, axis=1)
    return repeat


def _start_days(rng: np.random.Generator, counts: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(n, max count) sorted episode start days, at least EPISODE_GAP apart, within the window."""
    room = LATEST_START - (counts - 1) * EPISODE_GAP + 1
    offsets = np.where(valid, rng.random(valid.shape) * room[:, None], np.inf)
    offsets.sort(axis=1)
    return np.where(valid, np.floor(offsets), 0).astype(np.int64) + EPISODE_GAP * np.arange(
        valid.shape[1]
    )


def simulate_tries(
    rng: np.random.Generator, episodes: Episodes, patients: dict, truth: Truth
) -> dict[str, np.ndarray]:
    """Prescriptions of the written episodes, in episode then line order.

    Returns arrays of shape (R,): ``episode`` (index into ``episodes``), ``line`` (0-based try),
    ``therapy`` (index within the condition) and ``label`` (index into LABELS).
    """
    written = np.flatnonzero(~episodes.held_out)
    condition, patient = episodes.condition[written], episodes.patient[written]
    trait = patients["trait"][patient]
    blocked = _blocked(condition, patients["allergies"][patient], truth)
    tried = np.zeros_like(blocked)
    active = np.ones(len(written), dtype=bool)
    parts = []
    for line in range(MAX_TRIES):
        open_ = ~(blocked | tried)
        idx = np.flatnonzero(active & open_.any(axis=1))
        first_line = truth.guideline[condition[idx]] if line == 0 else None
        therapy = _choose(rng, open_[idx], first_line)
        label = _observe(rng, condition[idx], trait[idx], therapy, truth)
        tried[idx, therapy] = True
        active = np.zeros_like(active)
        active[idx] = label >= NO_RESPONSE
        parts.append((written[idx], np.full(len(idx), line), therapy, label))
    episodes_, lines, therapies, labels = (np.concatenate(column) for column in zip(*parts))
    order = np.lexsort((lines, episodes_))
    return {
        "episode": episodes_[order],
        "line": lines[order],
        "therapy": therapies[order],
        "label": labels[order],
    }


def _blocked(condition: np.ndarray, allergies: np.ndarray, truth: Truth) -> np.ndarray:
    """(E, T) bool: therapies contraindicated for the episode's patient."""
    blocked = np.zeros((len(condition), truth.response.shape[2]), dtype=bool)
    for allergy, forbidden_in in enumerate(truth.allergy_condition):
        rows = np.flatnonzero(allergies[:, allergy] & (condition == forbidden_in))
        blocked[rows, truth.forbidden[forbidden_in]] = True
    return blocked


def _choose(
    rng: np.random.Generator, open_: np.ndarray, guideline: np.ndarray | None
) -> np.ndarray:
    """One therapy per row, uniform among ``open_``; the open guideline half the time if given."""
    pick = np.where(open_, rng.random(open_.shape), -1.0).argmax(axis=1)
    if guideline is None:
        return pick
    rows = np.arange(len(pick))
    use = (rng.random(len(pick)) < GUIDELINE_FIRST_LINE) & open_[rows, guideline]
    return np.where(use, guideline, pick)


def _observe(
    rng: np.random.Generator,
    condition: np.ndarray,
    trait: np.ndarray,
    therapy: np.ndarray,
    truth: Truth,
) -> np.ndarray:
    """Outcome label indices (int8) of one try per row."""
    draw = rng.random((3, len(condition)))
    response = draw[0] < truth.response[condition, trait, therapy]
    label = np.where(
        response,
        np.where(draw[1] < P_PARTIAL, PARTIAL, RESPONDED),
        np.where(draw[1] < P_WORSENED, WORSENED, NO_RESPONSE),
    )
    return np.where(draw[2] < truth.adverse[condition, trait, therapy], ADVERSE, label).astype(
        np.int8
    )
