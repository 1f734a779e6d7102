"""The planted model of the observational cohort: response, harm and the clinicians' policy.

Every therapy ``t`` of condition ``c`` has a *role* (guideline, strong, targeted, renal, step,
other) and a *mechanism class* shared across conditions. For an episode with observables ``x``
(age, diagnoses, the labs of the episode's baseline panel, the severity proxy ``s_obs``), the
hidden trait ``u`` of the patient and the episode's true severity ``s``:

    P(response) = Phi(fixed_index[c, t](x) + W[class[c, t]] . u - severity_slope[c, t] * s)
    P(adverse)  = Phi(harm_index[c, t](x))
    P(success)  = P(response) * (1 - P(adverse))

``Phi`` is the standard normal CDF: a probit link, so that the Gaussian uncertainty about ``s``
and ``u`` integrates in closed form. The clinicians' first-line choice is a softmax over
observables only (plus, for stress tests, ``unobserved_confounding`` times the standardised
residual of ``s``); step therapies get a fixed small first-line probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

GUIDELINE, STRONG, TARGETED, RENAL, STEP, OTHER = range(6)
ROLES = ("guideline", "strong", "targeted", "renal", "step", "other")
#: The guideline policy's order of preference when the guideline therapy is contraindicated.
GUIDELINE_ORDER = (GUIDELINE, STRONG, RENAL, TARGETED, OTHER, STEP)

#: Probit intercept, severity slope and baseline adverse-event probability of each role.
ROLE_RESPONSE = np.array([0.45, 0.75, -0.20, 0.15, 0.55, 0.10])
ROLE_SEVERITY = np.array([0.90, 0.45, 0.60, 0.60, 0.60, 0.60])
ROLE_HARM = np.array([0.02, 0.06, 0.03, 0.02, 0.04, 0.03])
JITTER = 0.05  # standard deviation of the per-therapy jitter of the intercepts

AGE_CENTRE = 55
AGE_RESPONSE = -0.008  # probit per year of age above AGE_CENTRE, every therapy
AGE_HARM = 0.006
DM_GUIDELINE = -0.30  # diabetes blunts the guideline therapy
CRP_POSITIVE = 10.0  # mg/L: the biomarker-positive subgroup
TARGETED_POSITIVE = 1.30  # the targeted therapy works in the biomarker-positive subgroup
RENAL_PER_EGFR, RENAL_EGFR_RANGE = 0.02, (15.0, 90.0)  # per mL/min/1.73m2 above 60, clipped
LOW_EGFR, RENAL_LOW_EGFR_HARM = 30.0, 1.20  # the renally cleared drug harms below eGFR 30
HIGH_ALT, TARGETED_ALT_HARM = 60.0, 0.90  # the targeted drug is hepatotoxic above ALT 60 U/L
STRONG_CHF_HARM = 0.60

#: Clinicians' first-line logits: intercept per role, then the observables they react to.
POLICY_INTERCEPT = np.array([1.2, -1.3, -1.0, 0.2, 0.0, -0.5])
POLICY_STRONG_SEVERITY = 3.0  # per unit of s_obs: the strong drug goes to the severe cases
POLICY_STRONG_CHF = -0.8
POLICY_TARGETED_POSITIVE = 1.8
POLICY_RENAL_EGFR, POLICY_RENAL_LOW = 45.0, -1.5
POLICY_STEP_LATER = 2.0  # logit of a step therapy on a later line (after a failure)

MECHANISM_STRENGTH = 1.0  # |W[k]|: probit effect of one standard deviation of u along W[k]
DEMOGRAPHIC_SHIFT = 0.25  # standard deviation of the effects of sex and birth year on E[u]
U_SD = 1.0  # conditional standard deviation of each coordinate of u given sex and birth year
SEVERITY_RELIABILITY = 0.8  # s = rho * s_obs + sqrt(1 - rho^2) * N(0, 1)


@dataclass(frozen=True)
class PlantedModel:
    """The planted parameters: C conditions, T therapies each, K mechanism classes, D = dim u.

    Attributes
    ----------
    role : ndarray of shape (C, T), int
        Index into :data:`ROLES` of each therapy; every condition has one of each of the first
        five roles, the rest are ``other``.
    mechanism : ndarray of shape (C, T), int
        Mechanism class of each therapy; every condition uses each class at least once when
        ``T >= K``.
    weights : ndarray of shape (K, D)
        ``W``: the response index of class ``k`` has the term ``W[k] . u``.
    response : ndarray of shape (C, T)
        Probit intercept of the response at age 55 and no covariate effect.
    severity_slope : ndarray of shape (C, T)
        Decrease of the response index per unit of true severity (all positive).
    harm : ndarray of shape (C, T)
        Probit intercept of the adverse-event probability.
    prevalence : ndarray of shape (C,)
        Relative frequency of each condition among episodes.
    demographic : ndarray of shape (D, 2)
        ``E[u | sex, birth_year] = demographic @ [sex - 0.5, (birth_year - 1970) / 20]``.
    u_sd : float
        Conditional standard deviation of each coordinate of ``u``.
    reliability : float
        ``rho``: ``s | s_obs ~ N(rho * s_obs, 1 - rho^2)``.
    """

    role: np.ndarray
    mechanism: np.ndarray
    weights: np.ndarray
    response: np.ndarray
    severity_slope: np.ndarray
    harm: np.ndarray
    prevalence: np.ndarray
    demographic: np.ndarray
    u_sd: float = U_SD
    reliability: float = SEVERITY_RELIABILITY


@dataclass(frozen=True)
class Observables:
    """What the record shows at one decision, one entry per episode (E of them).

    Attributes
    ----------
    condition : ndarray of shape (E,), int
    age : ndarray of shape (E,), int
        Calendar year of the decision minus birth year.
    dm, chf : ndarray of shape (E,), bool
        Diabetes and heart failure, diagnosed before the first episode.
    egfr, alt, crp : ndarray of shape (E,), float
        The baseline panel of the episode (mL/min/1.73m2, U/L, mg/L), as written.
    s_obs : ndarray of shape (E,), float
        The severity proxy: (severity score at diagnosis - 10) / 3.
    blocked : ndarray of shape (E, T), bool
        Therapies contraindicated by the patient's allergies.
    """

    condition: np.ndarray
    age: np.ndarray
    dm: np.ndarray
    chf: np.ndarray
    egfr: np.ndarray
    alt: np.ndarray
    crp: np.ndarray
    s_obs: np.ndarray
    blocked: np.ndarray

    def take(self, rows: np.ndarray) -> Observables:
        """The observables of a subset of the episodes."""
        return Observables(*(getattr(self, name)[rows] for name in self.__dataclass_fields__))


def plant_model(
    rng: np.random.Generator,
    n_conditions: int,
    n_therapies: int,
    n_mechanisms: int,
    latent_dim: int,
) -> PlantedModel:
    """Draw the planted parameters (depends only on ``rng`` and the shape arguments)."""
    roles = np.concatenate([np.arange(OTHER), np.full(n_therapies - OTHER, OTHER)])
    role = np.stack([rng.permutation(roles) for _ in range(n_conditions)])
    classes = np.resize(np.arange(n_mechanisms), max(n_therapies, n_mechanisms))
    mechanism = np.stack([rng.permutation(classes)[:n_therapies] for _ in range(n_conditions)])
    directions = rng.normal(size=(n_mechanisms, latent_dim))
    if latent_dim == 2:  # spread the classes evenly around the circle
        angle = 2 * np.pi * np.arange(n_mechanisms) / n_mechanisms + rng.uniform(-0.3, 0.3)
        directions = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    weights = MECHANISM_STRENGTH * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    jitter = rng.normal(0, JITTER, (3, n_conditions, n_therapies))
    prevalence = rng.permutation(1.0 / np.sqrt(np.arange(1, n_conditions + 1)))
    return PlantedModel(
        role=role,
        mechanism=mechanism,
        weights=weights,
        response=ROLE_RESPONSE[role] + jitter[0],
        severity_slope=ROLE_SEVERITY[role] * np.exp(jitter[1]),
        harm=ndtri(ROLE_HARM[role]) + jitter[2],
        prevalence=prevalence / prevalence.sum(),
        demographic=rng.normal(0, DEMOGRAPHIC_SHIFT, (latent_dim, 2)),
    )


def u_mean(model: PlantedModel, sex: np.ndarray, birth_year: np.ndarray) -> np.ndarray:
    """E[u | sex, birth_year], shape (n, D); ``sex`` is 0 (F) or 1 (M)."""
    demo = np.stack([np.asarray(sex) - 0.5, (np.asarray(birth_year) - 1970) / 20.0], axis=1)
    return demo @ model.demographic.T


def fixed_index(model: PlantedModel, obs: Observables) -> np.ndarray:
    """The part of the response index that depends on observables only, shape (E, T)."""
    role = model.role[obs.condition]
    index = model.response[obs.condition] + AGE_RESPONSE * (obs.age - AGE_CENTRE)[:, None]
    index = index + np.where(role == GUIDELINE, DM_GUIDELINE * obs.dm[:, None], 0.0)
    positive = (obs.crp >= CRP_POSITIVE)[:, None]
    index = index + np.where(role == TARGETED, TARGETED_POSITIVE * positive, 0.0)
    renal = RENAL_PER_EGFR * (np.clip(obs.egfr, *RENAL_EGFR_RANGE) - 60.0)
    return index + np.where(role == RENAL, renal[:, None], 0.0)


def harm_probability(model: PlantedModel, obs: Observables) -> np.ndarray:
    """P(adverse event), shape (E, T): depends on observables only."""
    role = model.role[obs.condition]
    index = model.harm[obs.condition] + AGE_HARM * (obs.age - AGE_CENTRE)[:, None]
    low_egfr = RENAL_LOW_EGFR_HARM * (obs.egfr < LOW_EGFR)[:, None]
    index = index + np.where(role == RENAL, low_egfr, 0.0)
    high_alt = TARGETED_ALT_HARM * (obs.alt > HIGH_ALT)[:, None]
    index = index + np.where(role == TARGETED, high_alt, 0.0)
    index = index + np.where(role == STRONG, STRONG_CHF_HARM * obs.chf[:, None], 0.0)
    return np.asarray(ndtr(index))


def class_terms(model: PlantedModel, condition: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``W[class[c, t]] . u`` of shape (E, T) for ``u`` of shape (E, D)."""
    return np.take_along_axis(u @ model.weights.T, model.mechanism[condition], axis=1)


def success_probability(
    model: PlantedModel, obs: Observables, u: np.ndarray, severity: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """True (P(success), P(adverse)) of every therapy, each of shape (E, T).

    ``u`` has shape (E, D) (the trait of the episode's patient) and ``severity`` shape (E,).
    """
    index = fixed_index(model, obs) + class_terms(model, obs.condition, u)
    index = index - model.severity_slope[obs.condition] * severity[:, None]
    harm = harm_probability(model, obs)
    return ndtr(index) * (1 - harm), harm


def policy_logits(model: PlantedModel, obs: Observables) -> np.ndarray:
    """The clinicians' first-line logits from observables, shape (E, T) (before blocking)."""
    role = model.role[obs.condition]
    logits = POLICY_INTERCEPT[role]
    strong = POLICY_STRONG_SEVERITY * obs.s_obs + POLICY_STRONG_CHF * obs.chf
    logits = logits + np.where(role == STRONG, strong[:, None], 0.0)
    positive = (obs.crp >= CRP_POSITIVE)[:, None]
    logits = logits + np.where(role == TARGETED, POLICY_TARGETED_POSITIVE * positive, 0.0)
    low = (obs.egfr < POLICY_RENAL_EGFR)[:, None]
    return logits + np.where(role == RENAL, POLICY_RENAL_LOW * low, 0.0)


def first_line_propensity(
    model: PlantedModel,
    obs: Observables,
    step_first_line: float,
    strong_shift: np.ndarray | None = None,
) -> np.ndarray:
    """P(first-line therapy = t), shape (E, T), or (E, Q, T) if ``strong_shift`` is (E, Q).

    Allowed step therapies share ``step_first_line`` equally; the other allowed therapies share
    the rest by a softmax of :func:`policy_logits` (all of it if no step therapy is allowed, none
    of it if only step therapies are). ``strong_shift`` (shape (E,) or (E, Q)) is added to the
    strong drug's logit: the unobserved-confounding term. Contraindicated therapies get 0.
    """
    role = model.role[obs.condition]
    shift = np.zeros((len(role), 1)) if strong_shift is None else np.asarray(strong_shift, float)
    shift = shift.reshape(len(role), -1)
    logits = policy_logits(model, obs)[:, None, :] + shift[:, :, None] * (role == STRONG)[:, None]
    step, blocked = (role == STEP)[:, None, :], obs.blocked[:, None, :]
    weights = np.where(~blocked & ~step, np.exp(logits - logits.max(axis=-1, keepdims=True)), 0.0)
    total = weights.sum(axis=-1, keepdims=True)
    steps = (~blocked & step).sum(axis=-1, keepdims=True)
    step_share = np.where(total > 0, np.where(steps > 0, step_first_line, 0.0), 1.0)
    regular = weights / np.where(total > 0, total, 1.0) * (1 - step_share)
    result = np.where(~blocked & step, step_share / np.maximum(steps, 1), regular)
    return result if strong_shift is not None and np.ndim(strong_shift) == 2 else result[:, 0]


def later_line_probability(model: PlantedModel, obs: Observables, open_: np.ndarray) -> np.ndarray:
    """P(therapy) on a later line among the ``open_`` (E, T) therapies (not tried, allowed)."""
    role = model.role[obs.condition]
    logits = np.where(role == STEP, POLICY_STEP_LATER, policy_logits(model, obs))
    weights = np.where(open_, np.exp(logits - logits.max(axis=1, keepdims=True)), 0.0)
    return weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-300)


def guideline_key(model: PlantedModel) -> np.ndarray:
    """(C, T) preference of the guideline policy: role in GUIDELINE_ORDER, then index."""
    n_therapies = model.role.shape[1]
    return np.argsort(GUIDELINE_ORDER)[model.role] * n_therapies + np.arange(n_therapies)


def guideline_choice(model: PlantedModel, obs: Observables) -> np.ndarray:
    """(E,) the guideline policy: the most preferred therapy that is not contraindicated."""
    key = np.where(obs.blocked, np.inf, guideline_key(model)[obs.condition])
    return np.argmin(key, axis=1)
