"""A synthetic cohort with planted truth, for demos, tests and benchmarks.

The story
---------
Every patient carries a hidden *trait* ``z`` (think of a disease subtype or a genotype) that no
table records. Traits are not equally common, and sex and age band shift the odds a little, so
demographics carry a weak signal; a patient's treatment history carries most of it.

There are ``n_conditions`` conditions (indications), each with its own ``treatments_per_condition``
candidate therapies (``RX0301`` is condition 03's therapy 01). For every condition and trait one
therapy is clearly best (it works about 80% of the time), and the best therapy differs between
traits, so personalisation pays. One *guideline* therapy per condition is the best therapy of the
most common trait and works moderately well for everyone else (about 60%): it is the most
prescribed and most often successful therapy, so per-condition popularity picks it and is right
for the most common trait. The other therapies work 10-35% of the time unless they are best for
the patient's trait. Any prescription can also cause an adverse event, with a small probability
that depends on the trait and the therapy.

Each patient lives through ``1 + Poisson(2)`` distinct conditions ("episodes") between 2012 and
2024, in time order and never overlapping. In an episode the clinician tries therapies one after
another, 45 days apart: the first line is the guideline therapy half the time and otherwise any of
the condition's therapies; later lines are any therapy not yet tried. The clinician stops at the
first response (``responded`` or ``partial``) or after three tries. A response is recorded as
``responded`` (70%) or ``partial`` (30%), a failure as ``no_response`` (75%) or ``worsened``
(25%), and an adverse event overrides either. Some patients have drug allergies (``ALG01`` ...);
each allergy contraindicates one therapy of one condition that is no trait's best (when
``treatments_per_condition > n_traits``), and clinicians never prescribe it to an allergic patient.

The last episode of every patient with two or more episodes is *held out*: its condition is among
the patient's diagnoses, but its prescriptions are not in the outcomes table. For each held-out
episode the generator records the true best therapy (argmax over therapies of the response
probability for the patient's trait) and what an oracle who knows the generative model could do
with what is observable. Because the clinicians' choices never depend on the trait, the posterior
over traits is ``P(z | sex, age band) * prod_i P(label_i | condition_i, z, therapy_i)``; the
Bayes-optimal guess is the therapy that is best for the most posterior mass, and its hit
probability is that mass. The popularity guess is the same rule under the population prior
``P(z)``: the best a non-personalised, per-condition rule can do.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ...columns import OUTCOME_LABELS, Columns, Tables
from ...exceptions import ParameterError
from ..tables import write_tables

log = logging.getLogger(__name__)

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
P_PARTIAL = 0.3          # P(partial | response)
P_WORSENED = 0.25        # P(worsened | no response)

BEST_RANGE, GUIDELINE_RANGE, OTHER_RANGE = (0.75, 0.85), (0.55, 0.65), (0.10, 0.35)
ADVERSE_RANGE = (0.005, 0.05)
DEMOGRAPHIC_TILT = 0.3   # standard deviation of the log-odds shift of traits by sex and age band

N_ALLERGIES = 3
ALLERGY_PREVALENCE = 0.06
SEXES = ("F", "M")
BIRTH_YEARS = np.arange(1935, 2006)
AGE_BAND_STARTS = (1960, 1985)   # birth years that start the 40-64 and the under-40 age bands
RACES = ("white", "black", "asian", "hispanic", "other")
RACE_SHARES = (0.60, 0.13, 0.06, 0.18, 0.03)
PAYERS = ("commercial", "medicare", "medicaid", "self_pay")
PAYER_SHARES = (0.50, 0.25, 0.20, 0.05)


@dataclass
class SyntheticCohort:
    """A generated cohort and its planted truth.

    Attributes
    ----------
    tables : dict of str -> DataFrame
        The canonical tables, keyed by :class:`~recommender.columns.Tables` names.
    held_out : DataFrame
        One row per held-out episode: patient_id, condition_id, timestamp, best_treatment_id,
        bayes_best_treatment_id, bayes_hit_probability, popularity_best_treatment_id and
        popularity_hit_probability (the posterior probability that the popularity guess is best).
    response_probability : ndarray of shape (n_conditions, n_traits, treatments_per_condition)
        P(response | condition, trait, therapy); therapy ``t`` of condition ``c`` is the treatment
        with id ``RX{c+1}{t+1}`` (zero-padded).
    traits : ndarray of shape (n_patients,)
        The hidden trait of each patient, in patient-id order.
    """

    tables: dict[str, pd.DataFrame]
    held_out: pd.DataFrame
    response_probability: np.ndarray
    traits: np.ndarray


@dataclass(frozen=True)
class _Truth:
    """The planted model. C conditions, Z traits, T therapies per condition."""

    response: np.ndarray              # (C, Z, T) P(response)
    adverse: np.ndarray               # (C, Z, T) P(adverse event)
    guideline: np.ndarray             # (C,) the guideline therapy: best for trait 0
    forbidden: np.ndarray             # (C,) the therapy an allergy to the condition's drug forbids
    best: np.ndarray                  # (C, Z) the best therapy per condition and trait
    log_trait_given_demo: np.ndarray  # (2, n_age_bands, Z) log P(z | sex, age band)
    trait_prior: np.ndarray           # (Z,) population P(z)
    prevalence: np.ndarray            # (C,) relative frequency of each condition
    allergy_condition: np.ndarray     # (N_ALLERGIES,) the condition whose ``forbidden`` each blocks
    interactions: np.ndarray          # (k, 2) interacting pairs of global therapy indices


@dataclass(frozen=True)
class _Episodes:
    """Episodes (E of them) in patient, then time, order."""

    patient: np.ndarray    # (E,) patient index
    condition: np.ndarray  # (E,) condition index
    start: np.ndarray      # (E,) start day, counted from FIRST_DAY
    held_out: np.ndarray   # (E,) bool: the last episode of a patient with two or more


def generate_cohort(n_patients: int = 2000, seed: int = 0, *, n_conditions: int = 10,
                    treatments_per_condition: int = 5, n_traits: int = 4,
                    show_progress: bool = False) -> SyntheticCohort:
    """Generate a cohort with planted truth (see the module docstring for the story).

    The planted model (response probabilities, guidelines, prevalences) depends only on ``seed``
    and the shape parameters, not on ``n_patients``.

    Parameters
    ----------
    n_patients : int, default 2000
    seed : int, default 0
        Seed of ``numpy.random.default_rng``; the same seed gives the same cohort.
    n_conditions : int, default 10
    treatments_per_condition : int, default 5
        At least 3: a guideline therapy and at least two different best therapies.
    n_traits : int, default 4
        Number of hidden patient traits, at least 2.
    show_progress : bool, default False
        Show a tqdm progress bar over the generation stages.

    Returns
    -------
    SyntheticCohort

    Raises
    ------
    ParameterError
        (a ``ValueError``) if a parameter is out of range; the message names it.
    """
    _check_int("n_patients", n_patients, 1)
    _check_int("seed", seed, 0)
    _check_int("n_conditions", n_conditions, 1)
    _check_int("treatments_per_condition", treatments_per_condition, 3)
    _check_int("n_traits", n_traits, 2)
    rng = np.random.default_rng(seed)
    with tqdm(total=5, desc="synthetic cohort", disable=not show_progress) as bar:
        truth = _plant_truth(rng, n_conditions, treatments_per_condition, n_traits)
        patients = _draw_patients(rng, n_patients, truth)
        episodes = _draw_episodes(rng, n_patients, truth.prevalence)
        bar.update(2)
        tries = _simulate_tries(rng, episodes, patients, truth)
        bar.update(1)
        log_post = _log_posterior(patients, episodes, tries, truth)
        held_out = _held_out_arrays(episodes, patients["trait"], log_post, truth)
        bar.update(1)
        names = _Names(n_patients, n_conditions, treatments_per_condition)
        cohort = SyntheticCohort(_build_tables(names, patients, episodes, tries, truth),
                                 _held_out_frame(names, held_out), truth.response,
                                 patients["trait"])
        bar.update(1)
    log.info("synthetic cohort: %d patients, %d outcomes, %d held-out episodes", n_patients,
             len(cohort.tables[Tables.outcomes]), len(cohort.held_out))
    return cohort


def write_cohort(cohort: SyntheticCohort, folder: str | Path, file_format: str = "csv") -> Path:
    """Write the canonical tables and ``held_out`` to ``folder`` in one atomic folder write.

    Parameters
    ----------
    cohort : SyntheticCohort
    folder : path
        Replaced whole if it exists.
    file_format : {"csv", "parquet"}

    Returns
    -------
    Path
        The folder written.
    """
    return write_tables({**cohort.tables, HELD_OUT: cohort.held_out}, folder, file_format)


def bayes_rate(held_out: pd.DataFrame) -> float:
    """Expected hit rate of the Bayes-optimal guess: the mean of ``bayes_hit_probability``.

    No recommender that sees only the canonical tables can beat this in expectation.
    """
    return _mean_column(held_out, "bayes_hit_probability")


def popularity_rate(held_out: pd.DataFrame) -> float:
    """Expected hit rate of the best per-condition popularity rule.

    The mean over held-out episodes of P(best therapy = popularity_best_treatment_id | observed).
    """
    return _mean_column(held_out, "popularity_hit_probability")


# --- parameters --------------------------------------------------------------------------------

def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ParameterError(f"The '{name}' parameter of generate_cohort must be an int in the "
                             f"range [{low}, inf). Got {value!r} instead.")


def _mean_column(held_out: pd.DataFrame, column: str) -> float:
    if column not in held_out:
        raise ValueError(f"held_out has no column '{column}'; pass SyntheticCohort.held_out "
                         "(or a held_out.csv written by write_cohort)")
    if len(held_out) == 0:
        raise ValueError("held_out has no rows; the rate of an empty cohort is undefined")
    return float(pd.to_numeric(held_out[column]).mean())


# --- the planted model -------------------------------------------------------------------------

def _plant_truth(rng: np.random.Generator, n_conditions: int, n_therapies: int,
                 n_traits: int) -> _Truth:
    c_idx, z_idx = np.ogrid[:n_conditions, :n_traits]
    guideline = rng.integers(n_therapies, size=n_conditions)
    keys = rng.random((n_conditions, n_therapies))
    keys[np.arange(n_conditions), guideline] = 2.0          # the guideline sorts last
    others = np.argsort(keys, axis=1)[:, :n_therapies - 1]  # the rest, in random order
    # trait 0 (the most common) is best served by the guideline; the others by other therapies
    best = np.concatenate([guideline[:, None],
                           others[:, np.arange(n_traits - 1) % (n_therapies - 1)]], axis=1)
    forbidden = others[:, -1]                               # no trait's best when T > Z
    response = rng.uniform(*OTHER_RANGE, (n_conditions, n_traits, n_therapies))
    response[c_idx, z_idx, guideline[:, None]] = rng.uniform(*GUIDELINE_RANGE, best.shape)
    response[c_idx, z_idx, best] = rng.uniform(*BEST_RANGE, best.shape)
    adverse = rng.uniform(*ADVERSE_RANGE, response.shape)
    log_trait_given_demo, trait_prior = _trait_model(rng, n_traits)
    prevalence = rng.permutation(1.0 / np.sqrt(np.arange(1, n_conditions + 1)))
    return _Truth(response, adverse, guideline, forbidden, best, log_trait_given_demo, trait_prior,
                  prevalence / prevalence.sum(), np.arange(N_ALLERGIES) % n_conditions,
                  _interacting_pairs(rng, n_conditions * n_therapies))


def _interacting_pairs(rng: np.random.Generator, n_treatments: int) -> np.ndarray:
    """(k, 2) a handful of disjoint pairs of global therapy indices, smaller index first."""
    n_pairs = min(5, n_treatments // 2)
    return np.sort(rng.permutation(n_treatments)[:2 * n_pairs].reshape(n_pairs, 2), axis=1)


def _trait_model(rng: np.random.Generator, n_traits: int) -> tuple[np.ndarray, np.ndarray]:
    """log P(z | sex, age band) of shape (2, n_bands, Z) and the population P(z) of shape (Z,)."""
    n_bands = len(AGE_BAND_STARTS) + 1
    logits = (-np.log1p(np.arange(n_traits))                 # base prior proportional to 1/(z+1)
              + rng.normal(0, DEMOGRAPHIC_TILT, (2, 1, n_traits))
              + rng.normal(0, DEMOGRAPHIC_TILT, (1, n_bands, n_traits)))
    log_given = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    band_share = np.bincount(_age_band(BIRTH_YEARS), minlength=n_bands) / len(BIRTH_YEARS)
    prior = 0.5 * (np.exp(log_given) * band_share[None, :, None]).sum(axis=(0, 1))
    return log_given, prior / prior.sum()


def _age_band(birth_year: np.ndarray) -> np.ndarray:
    """0 for the oldest band (65+ in 2024), then 40-64, then under 40."""
    return np.searchsorted(AGE_BAND_STARTS, birth_year, side="right")


# --- patients and episodes ---------------------------------------------------------------------

def _draw_patients(rng: np.random.Generator, n: int, truth: _Truth) -> dict[str, np.ndarray]:
    """Per-patient arrays of shape (n,) (allergies: (n, N_ALLERGIES) bool)."""
    sex = rng.integers(2, size=n)
    birth_year = rng.choice(BIRTH_YEARS, size=n)
    trait_p = np.exp(truth.log_trait_given_demo[sex, _age_band(birth_year)])   # (n, Z)
    trait = (rng.random((n, 1)) > np.cumsum(trait_p, axis=1)).sum(axis=1)
    return {"sex": sex, "birth_year": birth_year,
            "trait": np.minimum(trait, trait_p.shape[1] - 1),
            "race": rng.choice(len(RACES), size=n, p=RACE_SHARES),
            "payer": rng.choice(len(PAYERS), size=n, p=PAYER_SHARES),
            "allergies": rng.random((n, N_ALLERGIES)) < ALLERGY_PREVALENCE}


def _draw_episodes(rng: np.random.Generator, n: int, prevalence: np.ndarray) -> _Episodes:
    counts = 1 + rng.poisson(MEAN_EXTRA_EPISODES, size=n)
    counts = np.minimum(counts, min(len(prevalence), MAX_EPISODES))
    conditions = _distinct_conditions(rng, counts, prevalence)
    valid = conditions >= 0
    slot = np.broadcast_to(np.arange(conditions.shape[1]), conditions.shape)[valid]
    patient = np.repeat(np.arange(n), counts)
    held_out = (slot == counts[patient] - 1) & (counts[patient] >= 2)
    return _Episodes(patient, conditions[valid], _start_days(rng, counts, valid)[valid], held_out)


def _distinct_conditions(rng: np.random.Generator, counts: np.ndarray,
                         prevalence: np.ndarray) -> np.ndarray:
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
        valid.shape[1])


# --- prescribing -------------------------------------------------------------------------------

def _simulate_tries(rng: np.random.Generator, episodes: _Episodes, patients: dict,
                    truth: _Truth) -> dict[str, np.ndarray]:
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
    episode, line, therapy, label = (np.concatenate(column) for column in zip(*parts))
    order = np.lexsort((line, episode))
    return {"episode": episode[order], "line": line[order], "therapy": therapy[order],
            "label": label[order]}


def _blocked(condition: np.ndarray, allergies: np.ndarray, truth: _Truth) -> np.ndarray:
    """(E, T) bool: therapies contraindicated for the episode's patient."""
    blocked = np.zeros((len(condition), truth.response.shape[2]), dtype=bool)
    for allergy, forbidden_in in enumerate(truth.allergy_condition):
        rows = np.flatnonzero(allergies[:, allergy] & (condition == forbidden_in))
        blocked[rows, truth.forbidden[forbidden_in]] = True
    return blocked


def _choose(rng: np.random.Generator, open_: np.ndarray,
            guideline: np.ndarray | None) -> np.ndarray:
    """One therapy per row, uniform among ``open_``; the open guideline half the time if given."""
    pick = np.where(open_, rng.random(open_.shape), -1.0).argmax(axis=1)
    if guideline is None:
        return pick
    rows = np.arange(len(pick))
    use = (rng.random(len(pick)) < GUIDELINE_FIRST_LINE) & open_[rows, guideline]
    return np.where(use, guideline, pick)


def _observe(rng: np.random.Generator, condition: np.ndarray, trait: np.ndarray,
             therapy: np.ndarray, truth: _Truth) -> np.ndarray:
    """Outcome label indices (int8) of one try per row."""
    draw = rng.random((3, len(condition)))
    response = draw[0] < truth.response[condition, trait, therapy]
    label = np.where(response, np.where(draw[1] < P_PARTIAL, PARTIAL, RESPONDED),
                     np.where(draw[1] < P_WORSENED, WORSENED, NO_RESPONSE))
    return np.where(draw[2] < truth.adverse[condition, trait, therapy], ADVERSE,
                    label).astype(np.int8)


# --- the oracle --------------------------------------------------------------------------------

def _label_log_likelihood(truth: _Truth) -> np.ndarray:
    """log P(label | condition, trait, therapy), shape (C, Z, T, len(LABELS))."""
    p, a = truth.response, truth.adverse
    return np.log(np.stack([(1 - a) * p * (1 - P_PARTIAL), (1 - a) * p * P_PARTIAL,
                            (1 - a) * (1 - p) * (1 - P_WORSENED), (1 - a) * (1 - p) * P_WORSENED,
                            a], axis=-1))


def _log_posterior(patients: dict, episodes: _Episodes, tries: dict, truth: _Truth) -> np.ndarray:
    """Unnormalised log P(z | demographics, written outcomes), shape (n_patients, Z)."""
    log_post = truth.log_trait_given_demo[patients["sex"], _age_band(patients["birth_year"])]
    condition = episodes.condition[tries["episode"]]
    patient = episodes.patient[tries["episode"]]
    log_lik = _label_log_likelihood(truth)[condition, :, tries["therapy"], tries["label"]]
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


def _held_out_arrays(episodes: _Episodes, traits: np.ndarray, log_post: np.ndarray,
                     truth: _Truth) -> dict[str, np.ndarray]:
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
    return {"patient": patient, "condition": condition, "start": episodes.start[held],
            "best": truth.best[condition, traits[patient]], "bayes": bayes,
            "bayes_p": mass[rows, bayes], "popular": popular, "popular_p": mass[rows, popular]}


# --- tables ------------------------------------------------------------------------------------

class _Names:
    """External ids and names of patients, conditions, allergies and therapies."""

    def __init__(self, n_patients: int, n_conditions: int, n_therapies: int):
        width = max(6, len(str(n_patients)))
        c_width, t_width = max(2, len(str(n_conditions))), max(2, len(str(n_therapies)))
        self.n_therapies = n_therapies
        self.patients = np.array([f"P{i:0{width}d}" for i in range(1, n_patients + 1)], object)
        codes = [f"{c:0{c_width}d}" for c in range(1, n_conditions + 1)]
        self.conditions = np.array([f"C{code}" for code in codes], object)
        self.condition_names = [f"Condition {code}" for code in codes]
        self.allergies = np.array([f"ALG{a:02d}" for a in range(1, N_ALLERGIES + 1)], object)
        self.treatments = np.array([f"RX{code}{t:0{t_width}d}" for code in codes
                                    for t in range(1, n_therapies + 1)], object)
        letters = [chr(ord("A") + t) if n_therapies <= 26 else f"{t + 1:0{t_width}d}"
                   for t in range(n_therapies)]
        self.treatment_names = [f"{name} therapy {letter}" for name in self.condition_names
                                for letter in letters]

    def treatment(self, condition: np.ndarray, therapy: np.ndarray) -> np.ndarray:
        return self.treatments[condition * self.n_therapies + therapy]


def _timestamps(days: np.ndarray) -> pd.DatetimeIndex:
    """UTC midnight timestamps of day offsets from FIRST_DAY."""
    return pd.DatetimeIndex((FIRST_DAY + days).astype("datetime64[ns]")).tz_localize("UTC")


def _build_tables(names: _Names, patients: dict, episodes: _Episodes, tries: dict,
                  truth: _Truth) -> dict[str, pd.DataFrame]:
    condition = episodes.condition[tries["episode"]]
    outcomes = pd.DataFrame({
        C.patient: names.patients[episodes.patient[tries["episode"]]],
        C.treatment: names.treatment(condition, tries["therapy"]),
        C.outcome: np.array(LABELS, dtype=object)[tries["label"]],
        C.timestamp: _timestamps(episodes.start[tries["episode"]] + DAYS_PER_TRY * tries["line"]),
        C.condition: names.conditions[condition],
        C.adverse: (tries["label"] == ADVERSE).astype(np.int8),
    })
    n_conditions = len(names.conditions)
    therapy_condition = np.repeat(np.arange(n_conditions), names.n_therapies)
    return {
        Tables.outcomes: outcomes,
        Tables.patients: _patients_frame(names, patients),
        Tables.patient_conditions: _patient_conditions_frame(names, patients, episodes),
        Tables.contraindications: pd.DataFrame({
            C.treatment: names.treatment(truth.allergy_condition,
                                         truth.forbidden[truth.allergy_condition]),
            C.condition: names.allergies}),
        Tables.interactions: _interactions_frame(names, truth.interactions),
        Tables.treatments: pd.DataFrame({C.treatment: names.treatments,
                                         "name": names.treatment_names,
                                         C.condition: names.conditions[therapy_condition]}),
        Tables.conditions: pd.DataFrame({
            C.condition: np.concatenate([names.conditions, names.allergies]),
            "name": names.condition_names + [f"Allergy {a[3:]}" for a in names.allergies]}),
    }


def _patients_frame(names: _Names, patients: dict) -> pd.DataFrame:
    return pd.DataFrame({
        C.patient: names.patients,
        C.sex: np.array(SEXES, dtype=object)[patients["sex"]],
        C.birth_year: patients["birth_year"],
        "race": np.array(RACES, dtype=object)[patients["race"]],
        "payer": np.array(PAYERS, dtype=object)[patients["payer"]],
    })


def _patient_conditions_frame(names: _Names, patients: dict, episodes: _Episodes) -> pd.DataFrame:
    allergic, allergy = np.nonzero(patients["allergies"])
    patient = np.concatenate([episodes.patient, allergic])
    condition = np.concatenate([names.conditions[episodes.condition], names.allergies[allergy]])
    order = np.argsort(patient, kind="stable")
    return pd.DataFrame({C.patient: names.patients[patient[order]],
                         C.condition: condition[order]})


def _interactions_frame(names: _Names, pairs: np.ndarray) -> pd.DataFrame:
    """The interacting pairs, with severities cycling severe, moderate, minor."""
    n_pairs = len(pairs)
    severities = np.array(["severe", "moderate", "minor"], dtype=object)
    return pd.DataFrame({C.treatment_a: names.treatments[pairs[:, 0]],
                         C.treatment_b: names.treatments[pairs[:, 1]],
                         C.severity: severities[np.arange(n_pairs) % 3]})


def _held_out_frame(names: _Names, held: dict) -> pd.DataFrame:
    return pd.DataFrame({
        C.patient: names.patients[held["patient"]],
        C.condition: names.conditions[held["condition"]],
        C.timestamp: _timestamps(held["start"]),
        "best_treatment_id": names.treatment(held["condition"], held["best"]),
        "bayes_best_treatment_id": names.treatment(held["condition"], held["bayes"]),
        "bayes_hit_probability": held["bayes_p"],
        "popularity_best_treatment_id": names.treatment(held["condition"], held["popular"]),
        "popularity_hit_probability": held["popular_p"],
    })
