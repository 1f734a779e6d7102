"""The observational cohort as DataFrames: the canonical tables, observations and truth tables.

Ids: patients ``P000001``, episode conditions ``C01``, comorbidities ``CKD``, ``DM``, ``LIVER``,
``CHF``, allergies ``ALG01``, therapies ``RX0103`` (condition 01's therapy 03), mechanism
classes ``M1`` ...
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...columns import Columns, Tables
from .observational_model import ROLES, STEP, PlantedModel, guideline_key
from .observational_sim import (
    ADVERSE,
    CODES,
    COMORBIDITIES,
    COMORBIDITY_NAMES,
    DAY,
    DAYS_PER_TRY,
    FIRST_DAY,
    LABELS,
    PAYERS,
    RACES,
    SEXES,
    UNITS,
    Episodes,
    Patients,
)
from .observational_truth import HeldOutTruth

C = Columns

#: File stems of the extra (truth) tables written next to the canonical ones.
HELD_OUT = "held_out"
TRUTH_HELD_OUT = "truth_held_out"
TRUTH_LOGGED = "truth_logged"
REFERENCE_POLICIES = "reference_policies"
TRUTH_TREATMENTS = "truth_treatments"
POLICIES = ("guideline", "logging", "observables", "bound", "oracle")
GROUPS = ("all", "warm", "cold")


class Names:
    """External ids of patients, conditions, allergies, therapies and mechanism classes."""

    def __init__(self, n_patients: int, model: PlantedModel, n_allergies: int):
        n_conditions, n_therapies = model.role.shape
        width = max(6, len(str(n_patients)))
        c_width, t_width = max(2, len(str(n_conditions))), max(2, len(str(n_therapies)))
        self.n_therapies = n_therapies
        self.patients = np.array([f"P{i:0{width}d}" for i in range(1, n_patients + 1)], object)
        codes = [f"{c:0{c_width}d}" for c in range(1, n_conditions + 1)]
        self.conditions = np.array([f"C{code}" for code in codes], object)
        self.allergies = np.array([f"ALG{a:02d}" for a in range(1, n_allergies + 1)], object)
        self.treatments = np.array(
            [f"RX{code}{t:0{t_width}d}" for code in codes for t in range(1, n_therapies + 1)],
            object,
        )
        self.classes = np.array([f"M{k + 1}" for k in range(len(model.weights))], object)

    def treatment(self, condition: np.ndarray, therapy: np.ndarray) -> np.ndarray:
        return self.treatments[condition * self.n_therapies + therapy]


def timestamps(seconds: np.ndarray) -> pd.DatetimeIndex:
    """UTC timestamps of seconds from FIRST_DAY's midnight."""
    times = FIRST_DAY.astype("datetime64[s]") + np.asarray(seconds).astype("timedelta64[s]")
    return pd.DatetimeIndex(times.astype("datetime64[ns]")).tz_localize("UTC")


def canonical_tables(
    names: Names,
    model: PlantedModel,
    patients: Patients,
    episodes: Episodes,
    tries: dict[str, np.ndarray],
    onsets: np.ndarray,
    observations: dict[str, np.ndarray],
) -> dict[str, pd.DataFrame]:
    """The canonical tables plus ``observations`` (only logged episodes' tries are written)."""
    logged = ~episodes.held_out[tries["episode"]]
    episode, line = tries["episode"][logged], tries["line"][logged]
    condition, label = episodes.obs.condition[episode], tries["label"][logged]
    outcomes = pd.DataFrame(
        {
            C.patient: names.patients[episodes.patient[episode]],
            C.treatment: names.treatment(condition, tries["therapy"][logged]),
            C.outcome: np.array(LABELS, dtype=object)[label],
            C.timestamp: timestamps((episodes.start[episode] + DAYS_PER_TRY * line) * DAY),
            C.condition: names.conditions[condition],
            C.adverse: (label == ADVERSE).astype(np.int8),
        }
    )
    n_conditions, n_therapies = model.role.shape
    in_class = model.mechanism.ravel()[None, :] == np.arange(len(names.allergies))[:, None]
    allergy, treatment = np.nonzero(in_class)
    return {
        Tables.outcomes: outcomes,
        Tables.patients: pd.DataFrame(
            {
                C.patient: names.patients,
                C.sex: np.array(SEXES, dtype=object)[patients.sex],
                C.birth_year: patients.birth_year,
                "race": np.array(RACES, dtype=object)[patients.race],
                "payer": np.array(PAYERS, dtype=object)[patients.payer],
            }
        ),
        Tables.patient_conditions: _diagnoses(names, patients, episodes, onsets),
        Tables.contraindications: pd.DataFrame(
            {C.treatment: names.treatments[treatment], C.condition: names.allergies[allergy]}
        ),
        Tables.treatments: pd.DataFrame(
            {
                C.treatment: names.treatments,
                "name": [
                    f"Condition {c[1:]} therapy {t[-2:]}"
                    for c in names.conditions
                    for t in names.treatments[:n_therapies]
                ],
                C.condition: np.repeat(names.conditions, n_therapies),
                "drug_class": names.classes[model.mechanism.ravel()],
            }
        ),
        Tables.conditions: pd.DataFrame(
            {
                C.condition: np.concatenate([names.conditions, COMORBIDITIES, names.allergies]),
                "name": [f"Condition {c[1:]}" for c in names.conditions]
                + list(COMORBIDITY_NAMES)
                + [f"Allergy {a[3:]}" for a in names.allergies],
            }
        ),
        Tables.observations: pd.DataFrame(
            {
                C.patient: names.patients[observations["patient"]],
                C.code: pd.Categorical.from_codes(observations["code"], CODES),
                C.value: observations["value"],
                C.unit: pd.Categorical.from_codes(observations["code"], UNITS),
                C.timestamp: timestamps(observations["time"]),
            }
        ),
    }


def _diagnoses(
    names: Names, patients: Patients, episodes: Episodes, onsets: np.ndarray
) -> pd.DataFrame:
    """Episode conditions at their start, comorbidities and allergies at their onset."""
    flags = np.concatenate([patients.comorbid, patients.allergies], axis=1)
    owner, column = np.nonzero(flags)
    chronic = np.concatenate([np.array(COMORBIDITIES, dtype=object), names.allergies])
    patient = np.concatenate([episodes.patient, owner])
    condition = np.concatenate([names.conditions[episodes.obs.condition], chronic[column]])
    day = np.concatenate([episodes.start, onsets[owner, column]])
    order = np.lexsort((day, patient))
    return pd.DataFrame(
        {
            C.patient: names.patients[patient[order]],
            C.condition: condition[order],
            C.timestamp: timestamps(day[order] * DAY),
        }
    )


def _per_therapy(names: Names, episodes: Episodes, rows: np.ndarray, cold: np.ndarray) -> dict:
    """Columns of a (episode, therapy) truth table, therapy varying fastest."""
    n_therapies = names.n_therapies
    condition = np.repeat(episodes.obs.condition[rows], n_therapies)
    therapy = np.tile(np.arange(n_therapies), len(rows))
    return {
        C.patient: names.patients[np.repeat(episodes.patient[rows], n_therapies)],
        C.condition: names.conditions[condition],
        C.timestamp: timestamps(np.repeat(episodes.start[rows], n_therapies) * DAY),
        C.treatment: names.treatment(condition, therapy),
        "contraindicated": episodes.obs.blocked[rows].ravel().astype(np.int8),
        "cold_start": np.repeat(cold, n_therapies).astype(np.int8),
    }


def truth_tables(
    names: Names,
    model: PlantedModel,
    patients: Patients,
    episodes: Episodes,
    truth: HeldOutTruth,
    logged: dict[str, np.ndarray],
) -> dict[str, pd.DataFrame]:
    """``held_out``, ``truth_held_out``, ``truth_logged``, ``reference_policies`` and
    ``truth_treatments``; ``logged`` is :func:`~.observational_truth.logged_truth`."""
    held = truth.episode
    cold = patients.cold[episodes.patient[held]]
    rows = np.arange(len(held))
    values = {name: truth.p_success[rows, choice] for name, choice in truth.choices.items()}
    values["logging"] = (truth.propensity * truth.p_success).sum(axis=1)
    groups = {"all": np.ones(len(held), bool), "warm": ~cold, "cold": cold}
    reference = pd.DataFrame(
        [
            (
                policy,
                group,
                float(values[policy][mask].mean()) if mask.any() else np.nan,
                int(mask.sum()),
            )
            for policy in POLICIES
            for group, mask in groups.items()
        ],
        columns=["policy", "group", "value", "n_episodes"],
    )
    condition = episodes.obs.condition[held]
    clinician = logged["first_line"][held]  # the hidden first-line therapy, -1 if none
    clinician_ids = names.treatment(condition, np.maximum(clinician, 0)).astype(object)
    clinician_ids[clinician < 0] = None
    held_out = pd.DataFrame(
        {
            C.patient: names.patients[episodes.patient[held]],
            C.condition: names.conditions[condition],
            C.timestamp: timestamps(episodes.start[held] * DAY),
            "cold_start": cold.astype(np.int8),
            **{
                f"{name}_choice": names.treatment(condition, choice)
                for name, choice in truth.choices.items()
            },
            "clinician_choice": clinician_ids,
        }
    )
    truth_held_out = pd.DataFrame(
        {
            **_per_therapy(names, episodes, held, cold),
            "p_success": truth.p_success.ravel(),
            "p_harm": truth.p_harm.ravel(),
            "p_success_observables": truth.observables.ravel(),
            "p_success_bound": truth.bound.ravel(),
            "propensity": truth.propensity.ravel(),
        }
    )
    episode = logged["episode"]
    truth_logged = pd.DataFrame(
        {
            **_per_therapy(names, episodes, episode, np.zeros(len(episode), bool)),
            "p_success": logged["p_success"].ravel(),
            "p_harm": logged["p_harm"].ravel(),
            "propensity": logged["propensity"].ravel(),
            "chosen": logged["chosen"].ravel().astype(np.int8),
        }
    )
    n_conditions, n_therapies = model.role.shape
    guideline_rank = np.argsort(np.argsort(guideline_key(model), axis=1), axis=1)
    treatments = pd.DataFrame(
        {
            C.treatment: names.treatments,
            C.condition: np.repeat(names.conditions, n_therapies),
            "role": np.array(ROLES, dtype=object)[model.role.ravel()],
            "drug_class": names.classes[model.mechanism.ravel()],
            "step_therapy": (model.role.ravel() == STEP).astype(np.int8),
            "guideline_rank": guideline_rank.ravel() + 1,
        }
    )
    return {
        HELD_OUT: held_out,
        TRUTH_HELD_OUT: truth_held_out,
        TRUTH_LOGGED: truth_logged,
        REFERENCE_POLICIES: reference,
        TRUTH_TREATMENTS: treatments,
    }
