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

from ...columns import Tables
from ...exceptions import ParameterError
from ..tables import write_tables
from .planted_episodes import draw_episodes, draw_patients, simulate_tries
from .planted_model import HELD_OUT, held_out_arrays, log_posterior, plant_truth
from .planted_tables import Names, build_tables, held_out_frame

log = logging.getLogger(__name__)


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


def generate_cohort(
    n_patients: int = 2000,
    seed: int = 0,
    *,
    n_conditions: int = 10,
    treatments_per_condition: int = 5,
    n_traits: int = 4,
    show_progress: bool = False,
) -> SyntheticCohort:
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
        truth = plant_truth(rng, n_conditions, treatments_per_condition, n_traits)
        patients = draw_patients(rng, n_patients, truth)
        episodes = draw_episodes(rng, n_patients, truth.prevalence)
        bar.update(2)
        tries = simulate_tries(rng, episodes, patients, truth)
        bar.update(1)
        log_post = log_posterior(patients, episodes, tries, truth)
        held_out = held_out_arrays(episodes, patients["trait"], log_post, truth)
        bar.update(1)
        names = Names(n_patients, n_conditions, treatments_per_condition)
        cohort = SyntheticCohort(
            build_tables(names, patients, episodes, tries, truth),
            held_out_frame(names, held_out),
            truth.response,
            patients["trait"],
        )
        bar.update(1)
    log.info(
        "synthetic cohort: %d patients, %d outcomes, %d held-out episodes",
        n_patients,
        len(cohort.tables[Tables.outcomes]),
        len(cohort.held_out),
    )
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


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ParameterError(
            f"The '{name}' parameter of generate_cohort must be an int in the "
            f"range [{low}, inf). Got {value!r} instead."
        )


def _mean_column(held_out: pd.DataFrame, column: str) -> float:
    if column not in held_out:
        raise ValueError(
            f"held_out has no column '{column}'; pass SyntheticCohort.held_out "
            "(or a held_out.csv written by write_cohort)"
        )
    if len(held_out) == 0:
        raise ValueError("held_out has no rows; the rate of an empty cohort is undefined")
    return float(pd.to_numeric(held_out[column]).mean())
