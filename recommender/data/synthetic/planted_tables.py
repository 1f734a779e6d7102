"""The planted cohort as canonical tables (ids, names, timestamps)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...columns import Tables
from .planted_model import (
    ADVERSE,
    DAYS_PER_TRY,
    FIRST_DAY,
    LABELS,
    N_ALLERGIES,
    PAYERS,
    RACES,
    SEXES,
    C,
    Episodes,
    Truth,
)


class Names:
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
        self.treatments = np.array(
            [f"RX{code}{t:0{t_width}d}" for code in codes for t in range(1, n_therapies + 1)],
            object,
        )
        letters = [
            chr(ord("A") + t) if n_therapies <= 26 else f"{t + 1:0{t_width}d}"
            for t in range(n_therapies)
        ]
        self.treatment_names = [
            f"{name} therapy {letter}" for name in self.condition_names for letter in letters
        ]

    def treatment(self, condition: np.ndarray, therapy: np.ndarray) -> np.ndarray:
        return self.treatments[condition * self.n_therapies + therapy]


def timestamps(days: np.ndarray) -> pd.DatetimeIndex:
    """UTC midnight timestamps of day offsets from FIRST_DAY."""
    return pd.DatetimeIndex((FIRST_DAY + days).astype("datetime64[ns]")).tz_localize("UTC")


def build_tables(
    names: Names, patients: dict, episodes: Episodes, tries: dict, truth: Truth
) -> dict[str, pd.DataFrame]:
    condition = episodes.condition[tries["episode"]]
    outcomes = pd.DataFrame(
        {
            C.patient: names.patients[episodes.patient[tries["episode"]]],
            C.treatment: names.treatment(condition, tries["therapy"]),
            C.outcome: np.array(LABELS, dtype=object)[tries["label"]],
            C.timestamp: timestamps(
                episodes.start[tries["episode"]] + DAYS_PER_TRY * tries["line"]
            ),
            C.condition: names.conditions[condition],
            C.adverse: (tries["label"] == ADVERSE).astype(np.int8),
        }
    )
    n_conditions = len(names.conditions)
    therapy_condition = np.repeat(np.arange(n_conditions), names.n_therapies)
    return {
        Tables.outcomes: outcomes,
        Tables.patients: _patients_frame(names, patients),
        Tables.patient_conditions: _patient_conditions_frame(names, patients, episodes),
        Tables.contraindications: pd.DataFrame(
            {
                C.treatment: names.treatment(
                    truth.allergy_condition, truth.forbidden[truth.allergy_condition]
                ),
                C.condition: names.allergies,
            }
        ),
        Tables.interactions: _interactions_frame(names, truth.interactions),
        Tables.treatments: pd.DataFrame(
            {
                C.treatment: names.treatments,
                "name": names.treatment_names,
                C.condition: names.conditions[therapy_condition],
            }
        ),
        Tables.conditions: pd.DataFrame(
            {
                C.condition: np.concatenate([names.conditions, names.allergies]),
                "name": names.condition_names + [f"Allergy {a[3:]}" for a in names.allergies],
            }
        ),
    }


def _patients_frame(names: Names, patients: dict) -> pd.DataFrame:
    return pd.DataFrame(
        {
            C.patient: names.patients,
            C.sex: np.array(SEXES, dtype=object)[patients["sex"]],
            C.birth_year: patients["birth_year"],
            "race": np.array(RACES, dtype=object)[patients["race"]],
            "payer": np.array(PAYERS, dtype=object)[patients["payer"]],
        }
    )


def _patient_conditions_frame(names: Names, patients: dict, episodes: Episodes) -> pd.DataFrame:
    allergic, allergy = np.nonzero(patients["allergies"])
    patient = np.concatenate([episodes.patient, allergic])
    condition = np.concatenate([names.conditions[episodes.condition], names.allergies[allergy]])
    order = np.argsort(patient, kind="stable")
    return pd.DataFrame({C.patient: names.patients[patient[order]], C.condition: condition[order]})


def _interactions_frame(names: Names, pairs: np.ndarray) -> pd.DataFrame:
    """The interacting pairs, with severities cycling severe, moderate, minor."""
    n_pairs = len(pairs)
    severities = np.array(["severe", "moderate", "minor"], dtype=object)
    return pd.DataFrame(
        {
            C.treatment_a: names.treatments[pairs[:, 0]],
            C.treatment_b: names.treatments[pairs[:, 1]],
            C.severity: severities[np.arange(n_pairs) % 3],
        }
    )


def held_out_frame(names: Names, held: dict) -> pd.DataFrame:
    return pd.DataFrame(
        {
            C.patient: names.patients[held["patient"]],
            C.condition: names.conditions[held["condition"]],
            C.timestamp: timestamps(held["start"]),
            "best_treatment_id": names.treatment(held["condition"], held["best"]),
            "bayes_best_treatment_id": names.treatment(held["condition"], held["bayes"]),
            "bayes_hit_probability": held["bayes_p"],
            "popularity_best_treatment_id": names.treatment(held["condition"], held["popular"]),
            "popularity_hit_probability": held["popular_p"],
        }
    )
