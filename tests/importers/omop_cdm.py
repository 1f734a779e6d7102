"""A small hand-written OMOP CDM whose outcomes are known, written by the OMOP importer tests.

Two shapes of the same persons and events: ``eras`` (drug_era, condition_era: what the Eunomia
GiBleed copy holds) and ``exposures`` (drug_exposure, condition_occurrence, with branded drugs
mapped to ingredients and the upper-GI bleed to GI haemorrhage through concept_ancestor: what a
full CDM holds). They give the outcomes of :func:`expected`.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd

CELECOXIB, DICLOFENAC, APAP, UNKNOWN_DRUG = "1118084", "1124300", "1125315", "999999"
CELEBREX = "1118088"  # celecoxib 200 MG Oral Capsule [Celebrex], a Branded Drug
OA, GIB, SINUSITIS, UPPER_GIB = "80180", "192671", "40481087", "4000001"
SYSTOLIC, MMHG = "3004249", "8876"

# (concept_id, name, domain, vocabulary, class, code)
CONCEPTS = [
    (CELECOXIB, "celecoxib", "Drug", "RxNorm", "Ingredient", "140587"),
    (DICLOFENAC, "Diclofenac", "Drug", "RxNorm", "Ingredient", "3355"),
    (APAP, "Acetaminophen", "Drug", "RxNorm", "Ingredient", "161"),
    (
        CELEBREX,
        "celecoxib 200 MG Oral Capsule [Celebrex]",
        "Drug",
        "RxNorm",
        "Branded Drug",
        "213469",
    ),
    (OA, "Osteoarthritis", "Condition", "SNOMED", "Clinical Finding", "396275006"),
    (GIB, "Gastrointestinal hemorrhage", "Condition", "SNOMED", "Clinical Finding", "74474003"),
    (
        UPPER_GIB,
        "Upper gastrointestinal hemorrhage",
        "Condition",
        "SNOMED",
        "Clinical Finding",
        "37372002",
    ),
    (SINUSITIS, "Viral sinusitis", "Condition", "SNOMED", "Clinical Finding", "444814009"),
    ("8507", "MALE", "Gender", "Gender", "Gender", "M"),
    ("8532", "FEMALE", "Gender", "Gender", "Gender", "F"),
    (SYSTOLIC, "Systolic blood pressure", "Measurement", "LOINC", "Clinical Observation", "8480-6"),
    (MMHG, "millimeter mercury column", "Unit", "UCUM", "Unit", "mm[Hg]"),
]
# (person_id, gender, year_of_birth, race, ethnicity)
PERSONS = [
    ("1", "8532", "1960", "8527", "38003564"),
    ("2", "8507", "1950", "8516", "0"),
    ("3", "8532", "1955", "0", "38003563"),
    ("4", "8507", "1970", "8515", "0"),
    ("5", "8532", "1980", "0", "0"),
    ("6", "8507", "1945", "0", "0"),
    ("7", "8532", "1940", "0", "0"),
    ("8", "8507", "1990", "0", "0"),
    ("9", "8532", "1985", "0", "0"),
    ("10", "8507", "1975", "0", "0"),
    ("11", "8532", "1965", "0", "0"),
    ("12", "8507", "1962", "0", "0"),
    ("13", "8532", "1961", "0", "0"),
]
# (person_id, start, end)
PERIODS = [(p, "2019-01-01", "2021-12-31") for p, *_ in PERSONS if p not in ("3", "7", "9")]
PERIODS += [
    ("3", "2019-01-01", "2020-03-01"),  # follow-up ends 60 days after the start
    ("7", "2019-01-01", "2020-01-20"),  # died
    ("9", "2020-03-01", "2021-12-31"),  # the drug started before observation
    ("99", "2019-01-01", "2021-12-31"),  # not in person
]
# (person_id, concept, start, end): drugs (drug_era; drug_exposure maps celecoxib to CELEBREX)
DRUGS = [
    ("1", CELECOXIB, "2020-01-01", "2020-01-01"),
    ("2", DICLOFENAC, "2020-01-01", "2020-01-01"),
    ("3", CELECOXIB, "2020-01-01", "2020-01-01"),
    ("4", APAP, "2020-05-01", "2020-05-03"),
    ("5", APAP, "2020-05-01", "2020-05-03"),
    ("5", DICLOFENAC, "2020-05-10", "2020-05-12"),
    ("6", CELECOXIB, "2020-01-01", "2020-12-31"),
    ("7", CELECOXIB, "2020-01-01", "2020-01-01"),
    ("8", APAP, "2020-06-01", "2020-06-01"),
    ("9", CELECOXIB, "2020-01-01", "2020-01-01"),
    ("10", UNKNOWN_DRUG, "2020-01-01", "2020-01-01"),
    ("11", CELECOXIB, "2020-01-01", "2020-01-01"),
    ("12", CELECOXIB, "2020-01-01", "2020-01-01"),
    ("13", CELECOXIB, "2020-01-01", "2020-01-01"),
    ("99", CELECOXIB, "2020-01-01", "2020-01-01"),
]
# (person_id, concept, start, end): conditions; a one-day record has no known end
CONDITIONS = [
    ("1", OA, "2020-01-01", "2020-01-02"),
    ("1", GIB, "2020-02-01", "2020-02-02"),  # 31 days after celecoxib: harm
    ("2", OA, "2020-01-01", "2020-01-02"),
    ("3", OA, "2020-01-01", "2020-01-02"),
    ("3", GIB, "2020-03-15", "2020-03-16"),  # after the end of observation: dropped
    ("4", SINUSITIS, "2020-05-01", "2020-05-15"),  # ends after 14 days: resolved
    ("5", SINUSITIS, "2020-05-01", "2020-08-30"),
    ("6", OA, "2020-01-01", "2020-01-02"),
    ("7", OA, "2020-01-01", "2020-01-02"),
    ("9", OA, "2020-01-01", "2020-01-02"),  # before observation: dropped
    ("10", OA, "2020-01-01", "2020-01-02"),
    ("11", GIB, "2019-06-01", "2019-06-02"),  # a bleed before the drug: the later one is not new
    ("11", OA, "2020-01-01", "2020-01-02"),
    ("11", GIB, "2020-02-01", "2020-02-02"),
    ("12", OA, "2020-01-01", "2020-01-02"),
    ("12", GIB, "2020-01-01", "2020-01-02"),  # on the start day: not counted as its harm
    ("13", OA, "2020-01-01", "2020-01-02"),
    ("13", UPPER_GIB, "2020-03-01", "2020-03-02"),  # a descendant of 192671 (concept_ancestor)
    ("2", "0", "2020-01-05", "2020-01-06"),  # no standard concept
]
DEATHS = [("7", "2020-01-20")]
# (person_id, concept, date, value, operator, unit concept, unit source value)
MEASUREMENTS = [
    ("1", SYSTOLIC, "2020-01-01", "120", "4172703", MMHG, "mmHg"),
    ("1", SYSTOLIC, "2020-02-01", "135", "0", MMHG, ""),  # unit from the unit concept
    ("1", SYSTOLIC, "2020-03-01", "", "0", MMHG, "mmHg"),  # no value
    ("1", SYSTOLIC, "2020-04-01", "300", "4171756", MMHG, "mmHg"),  # "<": censored
    ("1", SYSTOLIC, "2018-04-01", "118", "0", MMHG, "mmHg"),  # before observation
    ("1", "0", "2020-04-01", "1", "0", "0", ""),  # no standard concept
]

C_ID, D_ID, A_ID = "rxnorm|140587", "rxnorm|3355", "rxnorm|161"
OA_ID, SIN_ID = "snomed|396275006", "snomed|444814009"
#: (person, treatment) -> (outcome, adverse, rule, indication), derived by hand.
EXPECTED = {
    ("1", C_ID): (-1.0, 1, "adverse", OA_ID),
    ("2", D_ID): (0.5, 0, "tolerated", OA_ID),
    ("4", A_ID): (1.0, 0, "resolved", SIN_ID),
    ("5", A_ID): (0.0, 0, "switched", SIN_ID),
    ("5", D_ID): (0.5, 0, "tolerated", SIN_ID),
    ("6", C_ID): (0.5, 0, "chronic", OA_ID),
    ("7", C_ID): (-1.0, 1, "adverse", OA_ID),
    ("10", "omop|999999"): (0.5, 0, "tolerated", OA_ID),
    ("11", C_ID): (0.5, 0, "tolerated", OA_ID),
    ("12", C_ID): (0.5, 0, "tolerated", OA_ID),
    ("13", C_ID): (-1.0, 1, "adverse", OA_ID),
}


def expected(shape: str) -> dict:
    """:data:`EXPECTED` for one shape: without concept_ancestor (the eras shape, as Eunomia),
    person 13's upper-GI bleed is not known to descend from 192671, so the course is tolerated."""
    if shape == "exposures":
        return dict(EXPECTED)
    return {**EXPECTED, ("13", C_ID): (0.5, 0, "tolerated", OA_ID)}


def write_cdm(
    root: Path,
    shape: str = "eras",
    *,
    upper: bool = False,
    gz: bool = False,
    parquet: bool = False,
    omit: tuple[str, ...] = (),
    edit: dict | None = None,
) -> Path:
    """Write the CDM to ``root`` (created) and return it.

    ``shape`` "eras" or "exposures"; ``upper`` writes upper-case file and column names;
    ``gz`` gzip CSV; ``parquet`` Parquet (ids as int64, dates as dates); ``omit`` leaves tables
    out; ``edit`` maps table -> function(DataFrame) -> DataFrame applied before writing.
    """
    root.mkdir(parents=True, exist_ok=True)
    tables = _tables(shape)
    for name, frame in tables.items():
        if name in omit:
            continue
        if edit and name in edit:
            frame = edit[name](frame.copy())
        stem = name.upper() if upper else name
        if upper:
            frame = frame.rename(columns=str.upper)
        if parquet:
            _parquet(frame).to_parquet(root / f"{stem}.parquet", index=False)
        elif gz:
            with gzip.open(root / f"{stem}.csv.gz", "wt", newline="") as handle:
                frame.to_csv(handle, index=False)
        else:
            frame.to_csv(root / f"{stem}.csv", index=False)
    return root


def _tables(shape: str) -> dict[str, pd.DataFrame]:
    tables = {
        "cdm_source": pd.DataFrame({"cdm_source_name": ["test"], "cdm_version": ["v5.4.0"]}),
        "concept": pd.DataFrame(
            CONCEPTS,
            columns=[
                "concept_id",
                "concept_name",
                "domain_id",
                "vocabulary_id",
                "concept_class_id",
                "concept_code",
            ],
        ).assign(standard_concept="S"),
        "person": pd.DataFrame(
            PERSONS,
            columns=[
                "person_id",
                "gender_concept_id",
                "year_of_birth",
                "race_concept_id",
                "ethnicity_concept_id",
            ],
        ).assign(race_source_value="", ethnicity_source_value=""),
        "observation_period": pd.DataFrame(
            PERIODS,
            columns=["person_id", "observation_period_start_date", "observation_period_end_date"],
        ),
        "death": pd.DataFrame(DEATHS, columns=["person_id", "death_date"]),
        "measurement": pd.DataFrame(
            MEASUREMENTS,
            columns=[
                "person_id",
                "measurement_concept_id",
                "measurement_date",
                "value_as_number",
                "operator_concept_id",
                "unit_concept_id",
                "unit_source_value",
            ],
        ),
    }
    drugs = pd.DataFrame(DRUGS, columns=["person_id", "drug_concept_id", "start", "end"])
    conditions = pd.DataFrame(
        CONDITIONS, columns=["person_id", "condition_concept_id", "start", "end"]
    )
    if shape == "eras":
        tables["drug_era"] = drugs.rename(
            columns={"start": "drug_era_start_date", "end": "drug_era_end_date"}
        )
        tables["condition_era"] = conditions.rename(
            columns={"start": "condition_era_start_date", "end": "condition_era_end_date"}
        )
        return tables
    drugs["drug_concept_id"] = drugs["drug_concept_id"].replace(CELECOXIB, CELEBREX)
    tables["drug_exposure"] = drugs.rename(
        columns={"start": "drug_exposure_start_date", "end": "drug_exposure_end_date"}
    ).assign(drug_source_value="", drug_type_concept_id="32838")
    tables["condition_occurrence"] = conditions.rename(
        columns={"start": "condition_start_date", "end": "condition_end_date"}
    ).assign(condition_source_value="", condition_type_concept_id="32817")
    tables["concept_ancestor"] = pd.DataFrame(
        [(CELECOXIB, CELEBREX), (CELECOXIB, CELECOXIB), (GIB, GIB), (GIB, UPPER_GIB)],
        columns=["ancestor_concept_id", "descendant_concept_id"],
    )
    return tables


def _parquet(frame: pd.DataFrame) -> pd.DataFrame:
    """Typed columns, as a database export writes them: ids int64, dates as dates."""
    out = frame.copy()
    for column in out.columns:
        lower = column.lower()
        if lower in ("domain_id", "vocabulary_id", "concept_class_id"):
            continue  # text ids of the vocabulary
        if lower.endswith("_id") or lower == "year_of_birth":
            out[column] = pd.to_numeric(out[column]).astype("Int64")
        elif lower.endswith("_date"):
            out[column] = pd.to_datetime(out[column]).dt.date
        elif lower == "value_as_number":
            out[column] = pd.to_numeric(out[column])
    return out
