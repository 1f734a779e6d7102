"""The planted model of the synthetic cohort (see :mod:`recommender.data.synthetic.planted`):
its constants, the response and adverse-event probabilities per (condition, trait, therapy),
and the oracle that computes what is achievable from the observable record."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...columns import OUTCOME_LABELS, Columns

C = Columns


#: File stem of the extra table of held-out episodes.
HELD_OUT = "held_out"


LABELS = ("responded", "partial", "no_response", "worsened", "adverse")


RESPONDED, PARTIAL, NO_RESPONSE, WORSENED, ADVERSE = range(len(LABELS))


assert set(LABELS) <= set(OUTCOME_LABELS)


FIRST_DAY, LAST_DAY = np.datetime64("2012-01-01"), np.datetime64("2024-12-31")


MAX_TRIES = 3


DAYS_PER_TRY = 45


#: Days between episode starts, so that an episode ends before the next one begins.
EPISODE_GAP = MAX_TRIES * DAYS_PER_TRY


#: Latest day (since FIRST_DAY) an episode may start so that its last try is on or before LAST_DAY.
LATEST_START = int((LAST_DAY - FIRST_DAY).astype(int)) - (MAX_TRIES - 1) * DAYS_PER_TRY


MAX_EPISODES = LATEST_START // EPISODE_GAP + 1


MEAN_EXTRA_EPISODES = 2.0


GUIDELINE_FIRST_LINE = 0.5


P_PARTIAL = 0.3  # P(partial | response)


P_WORSENED = 0.25  # P(worsened | no response)


BEST_RANGE, GUIDELINE_RANGE, OTHER_RANGE = (0.75, 0.85), (0.55, 0.65), (0.10, 0.35)


ADVERSE_RANGE = (0.005, 0.05)


DEMOGRAPHIC_TILT = 0.3  # standard deviation of the log-odds shift of traits by sex and age band


N_ALLERGIES = 3


ALLERGY_PREVALENCE = 0.06


SEXES = ("F", "M")


BIRTH_YEARS = np.arange(1935, 2006)


AGE_BAND_STARTS = (1960, 1985)  # birth years that start the 40-64 and the under-40 age bands


RACES = ("white", "black", "asian", "hispanic", "other")


RACE_SHARES = (0.60, 0.13, 0.06, 0.18, 0.03)


PAYERS = ("commercial", "medicare", "medicaid", "self_pay")


PAYER_SHARES = (0.50, 0.25, 0.20, 0.05)


@dataclass(frozen=True)
class Truth:
    """The planted model. C conditions, Z traits, T therapies per condition."""

    response: np.ndarray  # (C, Z, T) P(response)
    adverse: np.ndarray  # (C, Z, T) P(adverse event)
    guideline: np.ndarray  # (C,) the guideline therapy: best for trait 0
    forbidden: np.ndarray  # (C,) the therapy an allergy to the condition's drug forbids
    best: np.ndarray  # (C, Z) the best therapy per condition and trait
    log_trait_given_demo: np.ndarray  # (2, n_age_bands, Z) log P(z | sex, age band)
    trait_prior: np.ndarray  # (Z,) population P(z)
    prevalence: np.ndarray  # (C,) relative frequency of each condition
    allergy_condition: np.ndarray  # (N_ALLERGIES,) the condition whose ``forbidden`` each blocks
    interactions: np.ndarray  # (k, 2) interacting pairs of global therapy indices


@dataclass(frozen=True)
class Episodes:
    """Episodes (E of them) in patient, then time, order."""

    patient: np.ndarray  # (E,) patient index
    condition: np.ndarray  # (E,) condition index
    start: np.ndarray  # (E,) start day, counted from FIRST_DAY
    held_out: np.ndarray  # (E,) bool: the last episode of a patient with two or more


def plant_truth(
    rng: np.random.Generator, n_conditions: int, n_therapies: int, n_traits: int
) -> Truth:
    c_idx, z_idx = np.ogrid[:n_conditions, :n_traits]
    guideline = rng.integers(n_therapies, size=n_conditions)
    keys = rng.random((n_conditions, n_therapies))
    keys[np.arange(n_conditions), guideline] = 2.0  # the guideline sorts last
    others = np.argsort(keys, axis=1)[:, : n_therapies - 1]  # the rest, in random order
    # trait 0 (the most common) is best served by the guideline; the others by other therapies
    best = np.concatenate(
        [guideline[:, None], others[:, np.arange(n_traits - 1) % (n_therapies - 1)]], axis=1
    )
    forbidden = others[:, -1]  # no trait's best when T > Z
    response = rng.uniform(*OTHER_RANGE, (n_conditions, n_traits, n_therapies))
    response[c_idx, z_idx, guideline[:, None]] = rng.uniform(*GUIDELINE_RANGE, best.shape)
    response[c_idx, z_idx, best] = rng.uniform(*BEST_RANGE, best.shape)
    adverse = rng.uniform(*ADVERSE_RANGE, response.shape)
    log_trait_given_demo, trait_prior = _trait_model(rng, n_traits)
    prevalence = rng.permutation(1.0 / np.sqrt(np.arange(1, n_conditions + 1)))
    return Truth(
        response,
        adverse,
        guideline,
        forbidden,
        best,
        log_trait_given_demo,
        trait_prior,
        prevalence / prevalence.sum(),
        np.arange(N_ALLERGIES) % n_conditions,
        _interacting_pairs(rng, n_conditions * n_therapies),
    )


def _interacting_pairs(rng: np.random.Generator, n_treatments: int) -> np.ndarray:
    """(k, 2) a handful of disjoint pairs of global therapy indices, smaller index first."""
    n_pairs = min(5, n_treatments // 2)
    return np.sort(rng.permutation(n_treatments)[: 2 * n_pairs].reshape(n_pairs, 2), axis=1)


def _trait_model(rng: np.random.Generator, n_traits: int) -> tuple[np.ndarray, np.ndarray]:
    """log P(z | sex, age band) of shape (2, n_bands, Z) and the population P(z) of shape (Z,)."""
    n_bands = len(AGE_BAND_STARTS) + 1
    logits = (
        -np.log1p(np.arange(n_traits))  # base prior proportional to 1/(z+1)
        + rng.normal(0, DEMOGRAPHIC_TILT, (2, 1, n_traits))
        + rng.normal(0, DEMOGRAPHIC_TILT, (1, n_bands, n_traits))
    )
    log_given = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    band_share = np.bincount(age_band_index(BIRTH_YEARS), minlength=n_bands) / len(BIRTH_YEARS)
    prior = 0.5 * (np.exp(log_given) * band_share[None, :, None]).sum(axis=(0, 1))
    return log_given, prior / prior.sum()


def age_band_index(birth_year: np.ndarray) -> np.ndarray:
    """0 for the oldest band (65+ in 2024), then 40-64, then under 40."""
    return np.searchsorted(AGE_BAND_STARTS, birth_year, side="right")


def label_log_likelihood(truth: Truth) -> np.ndarray:
    """log P(label | condition, trait, therapy), shape (C, Z, T, len(LABELS))."""
    p, a = truth.response, truth.adverse
    return np.log(
        np.stack(
            [
                (1 - a) * p * (1 - P_PARTIAL),
                (1 - a) * p * P_PARTIAL,
                (1 - a) * (1 - p) * (1 - P_WORSENED),
                (1 - a) * (1 - p) * P_WORSENED,
                a,
            ],
            axis=-1,
        )
    )


def log_posterior(patients: dict, episodes: Episodes, tries: dict, truth: Truth) -> np.ndarray:
    """Unnormalised log P(z | demographics, written outcomes), shape (n_patients, Z)."""
    log_post = truth.log_trait_given_demo[patients["sex"], age_band_index(patients["birth_year"])]
    condition = episodes.condition[tries["episode"]]
    patient = episodes.patient[tries["episode"]]
    log_lik = label_log_likelihood(truth)[condition, :, tries["therapy"], tries["label"]]
    for z in range(log_post.shape[1]):
        log_post[:, z] += np.bincount(patient, weights=log_lik[:, z], minlength=len(log_post))
    return log_post


def _hit_mass(trait_p: np.ndarray, best: np.ndarray, n_therapies: int) -> np.ndarray:
    """(H, T) probability that each therapy is the best, from P(z) (H, Z) and best (H, Z)."""
    mass = np.zeros((len(trait_p), n_therapies))
    rows = np.arange(len(trait_p))
    for z in range(trait_p.shape[1]):
        mass[rows, best[:, z]] += trait_p[:, z]
    return mass


def held_out_arrays(
    episodes: Episodes, traits: np.ndarray, log_post: np.ndarray, truth: Truth
) -> dict[str, np.ndarray]:
    n_therapies = truth.response.shape[2]
    held = np.flatnonzero(episodes.held_out)
    patient, condition = episodes.patient[held], episodes.condition[held]
    post = np.exp(log_post[patient] - log_post[patient].max(axis=1, keepdims=True))
    post /= post.sum(axis=1, keepdims=True)
    mass = _hit_mass(post, truth.best[condition], n_therapies)
    prior = np.broadcast_to(truth.trait_prior, truth.best.shape)
    popular = _hit_mass(prior, truth.best, n_therapies).argmax(axis=1)[condition]
    bayes = mass.argmax(axis=1)
    rows = np.arange(len(held))
    return {
        "patient": patient,
        "condition": condition,
        "start": episodes.start[held],
        "best": truth.best[condition, traits[patient]],
        "bayes": bayes,
        "bayes_p": mass[rows, bayes],
        "popular": popular,
        "popular_p": mass[rows, popular],
    }
