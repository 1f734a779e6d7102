"""The shared vocabulary: table names, column names and outcome labels.

Every module refers to columns through these constants so that a rename happens in one place.
"""

from __future__ import annotations


class Columns:
    """Column names of the canonical tables (see ``data/README.md``)."""

    patient = "patient_id"
    treatment = "treatment_id"
    condition = "condition_id"
    outcome = "outcome"
    timestamp = "timestamp"
    adverse = "adverse"
    sex = "sex"
    birth_year = "birth_year"
    treatment_a = "treatment_a"
    treatment_b = "treatment_b"
    severity = "severity"
    code = "code"
    value = "value"
    unit = "unit"
    rank = "rank"
    score = "score"


class Tables:
    """Names (file stems) of the canonical tables in a data folder."""

    outcomes = "outcomes"
    patients = "patients"
    patient_conditions = "patient_conditions"
    contraindications = "contraindications"
    interactions = "interactions"
    treatments = "treatments"
    conditions = "conditions"
    observations = "observations"

    all = (
        outcomes,
        patients,
        patient_conditions,
        contraindications,
        interactions,
        treatments,
        conditions,
        observations,
    )


#: Outcome labels accepted in place of a number, and the value each stands for.
OUTCOME_LABELS: dict[str, float] = {
    "responded": 1.0,
    "partial": 0.5,
    "no_response": 0.0,
    "worsened": -0.5,
    "adverse": -1.0,
}

#: File extensions the readers understand, in order of preference when several exist.
TABLE_EXTENSIONS = (".parquet", ".csv", ".csv.gz")
