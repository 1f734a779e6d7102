"""A synthetic *observational* cohort with known truth, for outcome models and off-policy evaluation.

The story
---------
Patients have observed covariates: sex, birth year, chronic comorbidities (``CKD``, ``DM``,
``LIVER``, ``CHF``, diagnosed before their first episode), drug allergies (``ALG01`` ...; allergy
``a`` contraindicates every therapy of mechanism class ``M{a+1}``) and labs in the
``observations`` table (eGFR ``loinc|33914-3``, ALT ``loinc|1742-6``, the disease biomarker CRP
``loinc|1988-5`` and a severity score ``local|severity-score``), measured at each episode start,
30 days after each try and at routine visits, so the latest value before a decision differs from
later ones. Every patient also carries a hidden continuous trait ``u`` (``latent_dim``-dimensional,
``N(m(sex, birth_year), I)`` with a weak demographic mean) that no table records.

Each patient lives through distinct condition episodes between 2012 and 2024 (one for a
*cold-start* patient, ``1 + Poisson(2)`` otherwise), each with up to three tries 45 days apart
that stop at the first success. Every therapy belongs to a mechanism class shared across
conditions whose response depends on ``W[class] . u``, so outcomes of earlier episodes reveal
``u``. The response also depends on the covariates (the renally cleared drug works worse and
harms below eGFR 30, the targeted drug works in the CRP >= 10 mg/L subgroup and harms above ALT
60 U/L, diabetes blunts the guideline drug, the strong drug harms in heart failure, age) and
falls with the episode's true severity ``s``; the record holds only the noisy proxy ``s_obs``
(severity score at diagnosis) with ``s | s_obs ~ N(0.8 s_obs, 0.36)``. A try succeeds when the
patient responds without an adverse event: ``P(success) = P(response) (1 - P(adverse))``; see
:mod:`.observational_model` for the exact model (probit links, so that the Gaussian ``u`` and
``s`` integrate in closed form). A decision sees the observations stamped at or before it; the
baseline panel of an episode is stamped with the decision itself.

Clinicians choose the first line by a softmax over observables only (``s_obs``, labs, diagnoses,
allergies; never ``u`` or ``s``), and give the strong drug to severe cases: its naive success
rate is below the guideline drug's although its true average effect is higher (confounding by
indication). Since the logging policy depends only on recorded observables, propensity
adjustment on observables is valid (no unmeasured confounding) unless
``unobserved_confounding`` is set, which adds that multiple of the standardised residual
``(s - 0.8 s_obs) / 0.6`` to the strong drug's logit. Step therapies are given first line with
the small probability ``step_first_line`` and mostly after a failure: poor overlap.

The last episode of every patient with two or more episodes, and the only episode of every
cold-start patient, is *held out*: its condition, diagnoses and observations are written (its
follow-up labs too, a trap for leaky feature builders), its prescriptions are not.
:mod:`.observational_truth` computes the true and the Bayes-posterior success probabilities and
the reference policies ``guideline``, ``logging``, ``observables``, ``bound`` and ``oracle``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ...columns import Tables
from ...exceptions import ParameterError
from ..tables import write_tables
from .observational_model import PlantedModel, plant_model
from .observational_sim import (
    N_ALLERGIES,
    Episodes,
    Patients,
    draw_episodes,
    draw_observations,
    draw_patients,
    onset_days,
    simulate_tries,
)
from .observational_tables import (
    HELD_OUT,
    REFERENCE_POLICIES,
    TRUTH_HELD_OUT,
    TRUTH_LOGGED,
    TRUTH_TREATMENTS,
    Names,
    canonical_tables,
    truth_tables,
)
from .observational_truth import HeldOutTruth, held_out_truth, logged_truth

log = logging.getLogger(__name__)

__all__ = [
    "HELD_OUT",
    "REFERENCE_POLICIES",
    "TRUTH_HELD_OUT",
    "TRUTH_LOGGED",
    "TRUTH_TREATMENTS",
    "ObservationalCohort",
    "generate_observational",
    "write_observational",
]


@dataclass
class ObservationalCohort:
    """A generated observational cohort, its planted truth and the raw arrays behind it.

    Attributes
    ----------
    tables : dict of str -> DataFrame
        The canonical tables (``outcomes``, ``patients``, ``patient_conditions``,
        ``contraindications``, ``treatments``, ``conditions``, ``observations``).
    held_out, truth_held_out, truth_logged, reference_policies, truth_treatments : DataFrame
        The truth tables (schemas in ``observational_tables``).
    model : PlantedModel
    patients : Patients
        Per-patient arrays, including the hidden trait ``u`` of shape (n_patients, latent_dim).
    episodes : Episodes
        Per-episode arrays, including the observables and the true severity.
    tries : dict of str -> ndarray
        Every try, held-out episodes' hidden ones too: ``episode``, ``line``, ``therapy``,
        ``label``, ``success`` of shape (R,).
    truth : HeldOutTruth
        The held-out truth as arrays of shape (H, T).
    """

    tables: dict[str, pd.DataFrame]
    held_out: pd.DataFrame
    truth_held_out: pd.DataFrame
    truth_logged: pd.DataFrame
    reference_policies: pd.DataFrame
    truth_treatments: pd.DataFrame
    model: PlantedModel
    patients: Patients
    episodes: Episodes
    tries: dict[str, np.ndarray]
    truth: HeldOutTruth

    def extra_tables(self) -> dict[str, pd.DataFrame]:
        """The truth tables, keyed by file stem."""
        return {
            HELD_OUT: self.held_out,
            TRUTH_HELD_OUT: self.truth_held_out,
            TRUTH_LOGGED: self.truth_logged,
            REFERENCE_POLICIES: self.reference_policies,
            TRUTH_TREATMENTS: self.truth_treatments,
        }


def generate_observational(
    n_patients: int = 20_000,
    seed: int = 0,
    *,
    n_conditions: int = 10,
    treatments_per_condition: int = 5,
    n_mechanisms: int = 4,
    latent_dim: int = 2,
    cold_start_share: float = 0.2,
    step_first_line: float = 0.015,
    unobserved_confounding: float = 0.0,
    quadrature_nodes: int = 7,
    chunk_size: int = 4096,
    show_progress: bool = False,
) -> ObservationalCohort:
    """Generate an observational cohort with planted truth (story in the module docstring).

    The planted model depends only on ``seed`` and the shape parameters (``n_conditions``,
    ``treatments_per_condition``, ``n_mechanisms``, ``latent_dim``), not on ``n_patients``.

    Parameters
    ----------
    n_patients : int, default 20000
    seed : int, default 0
        The same seed (and parameters) gives the same cohort.
    n_conditions : int, default 10
    treatments_per_condition : int, default 5
        At least 5: a guideline, a strong, a targeted, a renally cleared and a step therapy;
        the rest are "other" therapies.
    n_mechanisms : int, default 4
        Mechanism classes shared across conditions; the first three carry an allergy each.
    latent_dim : int, default 2
        Dimension of the hidden trait, 1 to 3 (the bound integrates ``quadrature_nodes **
        latent_dim`` nodes).
    cold_start_share : float in [0, 1], default 0.2
        Expected share of cold-start patients (one held-out episode, no outcome rows).
    step_first_line : float in [0, 1), default 0.015
        First-line probability of an allowed step therapy.
    unobserved_confounding : float, default 0.0
        Weight of the standardised severity residual in the strong drug's first-line logit;
        non-zero breaks the no-unmeasured-confounding assumption (for stress tests).
    quadrature_nodes : int in [3, 40], default 7
        Gauss-Hermite nodes per dimension of ``u`` for the ``bound`` posterior.
    chunk_size : int, default 4096
        Warm held-out patients per chunk of the bound computation (its memory is about
        ``chunk_size`` times 20 kB at the defaults).
    show_progress : bool, default False

    Returns
    -------
    ObservationalCohort

    Raises
    ------
    ParameterError
        (a ``ValueError``) if a parameter is out of range; the message names it.

    Examples
    --------
    >>> cohort = generate_observational(300, seed=1)
    >>> sorted(cohort.reference_policies["policy"].unique())
    ['bound', 'guideline', 'logging', 'observables', 'oracle']
    >>> values = cohort.reference_policies.set_index(["policy", "group"])["value"]
    >>> bool(values["oracle", "all"] > values["guideline", "all"])
    True
    """
    _check_int("n_patients", n_patients, 1)
    _check_int("seed", seed, 0)
    _check_int("n_conditions", n_conditions, 1)
    _check_int("treatments_per_condition", treatments_per_condition, 5)
    _check_int("n_mechanisms", n_mechanisms, 1)
    _check_int("latent_dim", latent_dim, 1, 3)
    _check_float("cold_start_share", cold_start_share, 0.0, 1.0)
    _check_float("step_first_line", step_first_line, 0.0, 1.0, open_high=True)
    _check_float("unobserved_confounding", unobserved_confounding, -math.inf, math.inf)
    _check_int("quadrature_nodes", quadrature_nodes, 3, 40)
    _check_int("chunk_size", chunk_size, 1)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)]
    with tqdm(total=5, desc="observational cohort", disable=not show_progress) as bar:
        model = plant_model(
            streams[0], n_conditions, treatments_per_condition, n_mechanisms, latent_dim
        )
        patients = draw_patients(streams[1], n_patients, model, cold_start_share)
        episodes = draw_episodes(streams[2], patients, model)
        tries, propensity = simulate_tries(
            streams[3], episodes, model, patients.u, step_first_line, unobserved_confounding
        )
        bar.update(1)
        observations = draw_observations(streams[4], patients, episodes, tries)
        onsets = onset_days(streams[5], episodes, patients)
        names = Names(n_patients, model, N_ALLERGIES)
        tables = canonical_tables(names, model, patients, episodes, tries, onsets, observations)
        bar.update(1)
        truth = held_out_truth(
            model,
            patients,
            episodes,
            tries,
            propensity,
            step_first_line=step_first_line,
            unobserved_confounding=unobserved_confounding,
            nodes_per_dim=quadrature_nodes,
            chunk_size=chunk_size,
        )
        bar.update(2)
        logged = logged_truth(model, patients, episodes, tries, propensity)
        extra = truth_tables(names, model, patients, episodes, truth, logged)
        bar.update(1)
    log.info(
        "observational cohort: %d patients, %d outcomes, %d observations, %d held-out episodes",
        n_patients,
        len(tables[Tables.outcomes]),
        len(tables[Tables.observations]),
        len(extra[HELD_OUT]),
    )
    return ObservationalCohort(
        tables,
        extra[HELD_OUT],
        extra[TRUTH_HELD_OUT],
        extra[TRUTH_LOGGED],
        extra[REFERENCE_POLICIES],
        extra[TRUTH_TREATMENTS],
        model,
        patients,
        episodes,
        tries,
        truth,
    )


def write_observational(
    cohort: ObservationalCohort, folder: str | Path, file_format: str = "csv"
) -> Path:
    """Write the canonical and the truth tables to ``folder`` in one atomic folder write.

    Parameters
    ----------
    cohort : ObservationalCohort
    folder : path
        Replaced whole if it exists.
    file_format : {"csv", "parquet"}

    Returns
    -------
    Path
        The folder written.
    """
    return write_tables({**cohort.tables, **cohort.extra_tables()}, folder, file_format)


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < low
        or (high is not None and value > high)
    ):
        upper = "inf)" if high is None else f"{high}]"
        raise ParameterError(
            f"The '{name}' parameter of generate_observational must be an int in the range "
            f"[{low}, {upper}. Got {value!r} instead."
        )


def _check_float(
    name: str, value: object, low: float, high: float, open_high: bool = False
) -> None:
    inside = False
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        number = float(value)
        inside = (
            math.isfinite(number)
            and low <= number
            and (number < high if open_high else number <= high)
        )
    if not inside:
        lower = "(-inf" if low == -math.inf else f"[{low}"
        upper = "inf)" if high == math.inf else (f"{high})" if open_high else f"{high}]")
        raise ParameterError(
            f"The '{name}' parameter of generate_observational must be a finite number in the "
            f"range {lower}, {upper}. Got {value!r} instead."
        )
