"""Patients, episodes, labs and the clinicians' prescriptions of the observational cohort.

Days count from :data:`FIRST_DAY`; observation times are seconds from its midnight (UTC). A
decision is taken at midnight of its day and sees every observation at or before that instant:
the baseline panel of an episode is stamped with the episode start itself, routine labs at noon
and post-treatment follow-ups 30 days after each try.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from .observational_model import (
    Observables,
    PlantedModel,
    class_terms,
    first_line_propensity,
    fixed_index,
    harm_probability,
    later_line_probability,
    u_mean,
)

FIRST_DAY, LAST_DAY = np.datetime64("2012-01-01"), np.datetime64("2024-12-31")
DAY = 86_400  # seconds
MAX_TRIES, DAYS_PER_TRY, FOLLOW_UP_DAYS = 3, 45, 30
EPISODE_GAP = MAX_TRIES * DAYS_PER_TRY  # an episode's last follow-up precedes the next episode
LATEST_START = (
    int((LAST_DAY - FIRST_DAY).astype(int)) - (MAX_TRIES - 1) * DAYS_PER_TRY - FOLLOW_UP_DAYS
)
MAX_EPISODES = LATEST_START // EPISODE_GAP + 1
MEAN_EXTRA_EPISODES = 2.0

LABELS = ("responded", "partial", "no_response", "worsened", "adverse")
RESPONDED, PARTIAL, NO_RESPONSE, WORSENED, ADVERSE = range(len(LABELS))
P_PARTIAL, P_WORSENED = 0.3, 0.25

SEXES = ("F", "M")
BIRTH_YEARS = np.arange(1935, 2006)
RACES = ("white", "black", "asian", "hispanic", "other")
RACE_SHARES = (0.60, 0.13, 0.06, 0.18, 0.03)
PAYERS = ("commercial", "medicare", "medicaid", "self_pay")
PAYER_SHARES = (0.50, 0.25, 0.20, 0.05)

COMORBIDITIES = ("CKD", "DM", "LIVER", "CHF")
COMORBIDITY_NAMES = (
    "Chronic kidney disease",
    "Diabetes mellitus",
    "Chronic liver disease",
    "Heart failure",
)
CKD, DM, LIVER, CHF = range(len(COMORBIDITIES))
#: Probit intercept at age 55 (in 2018) and slope per year of age, per comorbidity.
COMORBIDITY_INDEX = np.array([[-1.5, 0.03], [-1.1, 0.015], [-1.7, 0.0], [-1.9, 0.03]])
N_ALLERGIES, ALLERGY_PREVALENCE = 3, 0.05  # allergy a contraindicates mechanism class a

#: (code, unit) of the observations; the severity score is 10 + 3 * s_obs at diagnosis.
EGFR, ALT, CRP, SEVERITY = range(4)
CODES = ("loinc|33914-3", "loinc|1742-6", "loinc|1988-5", "local|severity-score")
UNITS = ("mL/min/1.73m2", "U/L", "mg/L", "{score}")
LAB_NOISE = (4.0, 0.2, 0.5)  # eGFR sd; log ALT sd; log CRP sd of one measurement
ROUTINE_VISITS = 1.5  # Poisson mean of routine eGFR + ALT draws per patient, at noon
FOLLOW_UP_EFFECT, FOLLOW_UP_NOISE = 1.2, 0.5  # follow-up score: 10 + 3 (s - 1.2 success + e)


@dataclass(frozen=True)
class Patients:
    """Per-patient arrays of shape (n,), in patient-id order (n, k for the bool matrices)."""

    sex: np.ndarray  # 0 F, 1 M
    birth_year: np.ndarray
    race: np.ndarray
    payer: np.ndarray
    cold: np.ndarray  # bool: a cold-start patient (one held-out episode, no outcomes)
    comorbid: np.ndarray  # (n, len(COMORBIDITIES)) bool
    allergies: np.ndarray  # (n, N_ALLERGIES) bool
    u: np.ndarray  # (n, D) the hidden trait
    egfr0: np.ndarray  # eGFR on FIRST_DAY, mL/min/1.73m2
    egfr_slope: np.ndarray  # decline per year
    log_alt: np.ndarray
    log_crp: np.ndarray


@dataclass(frozen=True)
class Episodes:
    """Episodes (E of them) in patient, then time, order."""

    patient: np.ndarray  # (E,)
    start: np.ndarray  # (E,) day of diagnosis and first-line decision
    held_out: np.ndarray  # (E,) bool
    obs: Observables
    severity: np.ndarray  # (E,) true severity s
    score: np.ndarray  # (E,) severity score written at diagnosis


def draw_patients(
    rng: np.random.Generator, n: int, model: PlantedModel, cold_start_share: float
) -> Patients:
    """Demographics, comorbidities (by age), allergies, the hidden trait and lab levels."""
    sex = rng.integers(2, size=n)
    birth_year = rng.choice(BIRTH_YEARS, size=n)
    age = (2018 - birth_year - 55)[:, None]
    comorbid = rng.random((n, len(COMORBIDITIES))) < ndtr(
        COMORBIDITY_INDEX[:, 0] + COMORBIDITY_INDEX[:, 1] * age
    )
    ckd, liver = comorbid[:, CKD], comorbid[:, LIVER]
    dim = model.weights.shape[1]
    u = u_mean(model, sex, birth_year) + model.u_sd * rng.normal(size=(n, dim))
    egfr0 = 100 - 0.8 * np.maximum(2012 - birth_year - 35, 0) - 30 * ckd + rng.normal(0, 12, n)
    return Patients(
        sex=sex,
        birth_year=birth_year,
        race=rng.choice(len(RACES), size=n, p=RACE_SHARES),
        payer=rng.choice(len(PAYERS), size=n, p=PAYER_SHARES),
        cold=rng.random(n) < cold_start_share,
        comorbid=comorbid,
        allergies=rng.random((n, N_ALLERGIES)) < ALLERGY_PREVALENCE,
        u=u,
        egfr0=np.clip(egfr0, 8, 140),
        egfr_slope=0.5 + 2.0 * ckd + np.abs(rng.normal(0, 0.5, n)),
        log_alt=np.log(22) + 1.0 * liver + rng.normal(0, 0.35, n),
        log_crp=np.log(4) + rng.normal(0, 0.9, n),
    )


def lab_values(
    rng: np.random.Generator, patients: Patients, patient: np.ndarray, day: np.ndarray, lab: int
) -> np.ndarray:
    """One measurement of eGFR, ALT or CRP per row, rounded as written."""
    noise = rng.normal(0, LAB_NOISE[lab], len(patient))
    if lab == EGFR:
        value = patients.egfr0[patient] - patients.egfr_slope[patient] * day / 365.25 + noise
        return np.round(np.clip(value, 5, 150))
    if lab == ALT:
        return np.round(np.maximum(np.exp(patients.log_alt[patient] + noise), 5))
    return np.round(np.maximum(np.exp(patients.log_crp[patient] + noise), 0.1), 1)


def draw_episodes(rng: np.random.Generator, patients: Patients, model: PlantedModel) -> Episodes:
    """Each cold-start patient gets one episode, the others ``1 + Poisson(2)`` distinct ones."""
    n = len(patients.sex)
    counts = np.where(patients.cold, 1, 1 + rng.poisson(MEAN_EXTRA_EPISODES, size=n))
    counts = np.minimum(counts, min(len(model.prevalence), MAX_EPISODES))
    conditions = _distinct_conditions(rng, counts, model.prevalence)
    valid = conditions >= 0
    slot = np.broadcast_to(np.arange(conditions.shape[1]), conditions.shape)[valid]
    patient = np.repeat(np.arange(n), counts)
    held_out = (slot == counts[patient] - 1) & ((counts[patient] >= 2) | patients.cold[patient])
    start = _start_days(rng, counts, valid)[valid]
    condition = conditions[valid]
    year = (FIRST_DAY + start).astype("datetime64[Y]").astype(int) + 1970
    mechanism = model.mechanism[condition]
    n_allergies = patients.allergies.shape[1]
    allergic = patients.allergies[patient[:, None], np.minimum(mechanism, n_allergies - 1)]
    score = np.round(10 + 3 * rng.normal(size=len(patient)), 1)
    s_obs = (score - 10) / 3
    rho = model.reliability
    obs = Observables(
        condition=condition,
        age=year - patients.birth_year[patient],
        dm=patients.comorbid[patient, DM],
        chf=patients.comorbid[patient, CHF],
        egfr=lab_values(rng, patients, patient, start, EGFR),
        alt=lab_values(rng, patients, patient, start, ALT),
        crp=lab_values(rng, patients, patient, start, CRP),
        s_obs=s_obs,
        blocked=allergic & (mechanism < n_allergies),
    )
    severity = rho * s_obs + np.sqrt(1 - rho**2) * rng.normal(size=len(patient))
    return Episodes(patient, start, held_out, obs, severity, score)


def _distinct_conditions(
    rng: np.random.Generator, counts: np.ndarray, prevalence: np.ndarray
) -> np.ndarray:
    """(n, max count) condition indices, distinct within a row, -1 beyond each row's count."""
    valid = np.arange(counts.max()) < counts[:, None]
    conditions = np.where(valid, rng.choice(len(prevalence), size=valid.shape, p=prevalence), -1)
    rows = np.arange(len(counts))
    while len(rows):
        repeat = _repeats(conditions[rows])
        keep = repeat.any(axis=1)
        rows, repeat = rows[keep], repeat[keep]
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
    """(n, max count) sorted episode start days, EPISODE_GAP apart at least, in the window."""
    room = LATEST_START - (counts - 1) * EPISODE_GAP + 1
    offsets = np.where(valid, rng.random(valid.shape) * room[:, None], np.inf)
    offsets.sort(axis=1)
    days = np.where(valid, np.floor(offsets), 0).astype(np.int64)
    return days + EPISODE_GAP * np.arange(valid.shape[1])


def simulate_tries(
    rng: np.random.Generator,
    episodes: Episodes,
    model: PlantedModel,
    u: np.ndarray,
    step_first_line: float,
    unobserved_confounding: float,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Prescriptions of every episode (held-out ones too, for their follow-up labs).

    Returns the tries, arrays of shape (R,) in episode then line order (``episode``, ``line``,
    ``therapy``, ``label``, ``success``), and the first-line propensity of shape (E, T).
    """
    obs = episodes.obs
    rho = model.reliability
    shift = unobserved_confounding * (episodes.severity - rho * obs.s_obs) / np.sqrt(1 - rho**2)
    propensity = first_line_propensity(model, obs, step_first_line, shift)
    index = fixed_index(model, obs) + class_terms(model, obs.condition, u[episodes.patient])
    response = ndtr(index - model.severity_slope[obs.condition] * episodes.severity[:, None])
    harm = harm_probability(model, obs)
    tried = np.zeros(obs.blocked.shape, dtype=bool)
    active = np.ones(len(tried), dtype=bool)
    parts = []
    for line in range(MAX_TRIES):
        open_ = ~(obs.blocked | tried)
        idx = np.flatnonzero(active & open_.any(axis=1))
        if line == 0:
            p = propensity[idx]
        else:
            p = later_line_probability(model, obs.take(idx), open_[idx])
        therapy = _draw_categorical(rng, p)
        draw = rng.random((3, len(idx)))
        responded = draw[0] < response[idx, therapy]
        adverse = draw[2] < harm[idx, therapy]
        label = np.where(
            responded,
            np.where(draw[1] < P_PARTIAL, PARTIAL, RESPONDED),
            np.where(draw[1] < P_WORSENED, WORSENED, NO_RESPONSE),
        )
        label = np.where(adverse, ADVERSE, label).astype(np.int8)
        tried[idx, therapy] = True
        active = np.zeros_like(active)
        active[idx] = ~(responded & ~adverse)
        parts.append((idx, np.full(len(idx), line), therapy, label, responded & ~adverse))
    episode, line_, therapy, label, success = (np.concatenate(column) for column in zip(*parts))
    order = np.lexsort((line_, episode))
    tries = {"episode": episode, "line": line_, "therapy": therapy, "label": label}
    tries["success"] = success
    return {key: value[order] for key, value in tries.items()}, propensity


def _draw_categorical(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    """One column index per row of the (unnormalised, non-negative) probabilities ``p``."""
    cumulative = np.cumsum(p, axis=1)
    draw = rng.random(len(p)) * cumulative[:, -1]
    pick = (draw[:, None] >= cumulative).sum(axis=1)
    return np.minimum(pick, p.shape[1] - 1 - np.argmax(p[:, ::-1] > 0, axis=1))


def draw_observations(
    rng: np.random.Generator, patients: Patients, episodes: Episodes, tries: dict
) -> dict[str, np.ndarray]:
    """Every observation: ``patient``, ``code`` (index into CODES), ``value``, ``time`` (s).

    Baseline panels at each episode start, a follow-up severity score 30 days after each try
    (lower after a success) and routine eGFR + ALT draws at noon on random days from a year
    before the first episode to the end of the window. Sorted by patient, time and code.
    """
    obs, n_e = episodes.obs, len(episodes.patient)
    panel = [obs.egfr, obs.alt, obs.crp, episodes.score]
    parts = [
        (episodes.patient, np.full(n_e, code), panel[code], episodes.start * DAY)
        for code in (EGFR, ALT, CRP, SEVERITY)
    ]
    episode = tries["episode"]
    follow_up = episodes.severity[episode] - FOLLOW_UP_EFFECT * tries["success"]
    follow_up = np.round(10 + 3 * (follow_up + rng.normal(0, FOLLOW_UP_NOISE, len(episode))), 1)
    day = episodes.start[episode] + DAYS_PER_TRY * tries["line"] + FOLLOW_UP_DAYS
    parts.append((episodes.patient[episode], np.full(len(episode), SEVERITY), follow_up, day * DAY))
    n = len(patients.sex)
    first_start = np.full(n, LATEST_START)
    np.minimum.at(first_start, episodes.patient, episodes.start)
    patient = np.repeat(np.arange(n), rng.poisson(ROUTINE_VISITS, size=n))
    low = first_start[patient] - 365
    day = low + np.floor(rng.random(len(patient)) * (int((LAST_DAY - FIRST_DAY).astype(int)) - low))
    day = day.astype(np.int64)
    for lab in (EGFR, ALT):
        values = lab_values(rng, patients, patient, day, lab)
        parts.append((patient, np.full(len(patient), lab), values, day * DAY + DAY // 2))
    patient, code, value, time = (np.concatenate(column) for column in zip(*parts))
    order = np.lexsort((code, time, patient))
    return {
        "patient": patient[order],
        "code": code[order],
        "value": value[order],
        "time": time[order].astype(np.int64),
    }


def onset_days(rng: np.random.Generator, episodes: Episodes, patients: Patients) -> np.ndarray:
    """(n, comorbidities + allergies) onset days, 30 to 2000 days before the first episode."""
    n = len(patients.sex)
    first_start = np.full(n, LATEST_START)
    np.minimum.at(first_start, episodes.patient, episodes.start)
    width = patients.comorbid.shape[1] + patients.allergies.shape[1]
    return first_start[:, None] - rng.integers(30, 2001, size=(n, width))
