"""Import a Synthea CSV export (v2 such as the IBM California set, or v3 such as Nebraska).

Rules, in plain language
------------------------
- **Files.** ``patients``, ``conditions`` and ``medications`` are required; ``allergies``,
  ``procedures``, ``careplans`` and ``observations`` are optional. Each may be ``NAME.csv`` or ``NAME.csv.gz``;
  header case is ignored (``Id`` = ``ID``). The layout is "synthea-v3" when the export has v3-only
  columns (``PAYER`` in medications, ``SYSTEM`` in allergies, ``COUNTY`` in patients), else
  "synthea-v2". Dates and ISO date-times (with ``Z``) are both read as UTC.
- **Treatments.** Every medication row is a prescription of ``rxnorm|CODE``. With
  ``include_procedures`` procedure rows are treatments ``snomed|CODE``, with ``include_careplans``
  care-plan rows are treatments ``snomed|CODE`` too. A medication's active ingredients
  (``treatments.ingredients``) are read from its ``DESCRIPTION``, an RxNorm clinical-drug name
  (:func:`~recommender.data.ingredients.ingredient_ids`: "Amlodipine 5 MG / Hydrochlorothiazide
  12.5 MG ..." -> ``drug|amlodipine;drug|hydrochlorothiazide``); procedures and care plans
  list none (each is its own).
- **Indication.** ``REASONCODE`` (a trailing ``.0`` stripped) is the indication ``snomed|CODE``.
  Rows without one are dropped ("no REASONCODE"). The row is linked to the condition episode of
  the same patient and code with the latest ``START`` on or before the row's ``START`` (compared by
  calendar day). Rows whose reason has no such episode are kept with the indication but no
  episode, and counted as unmatched.
- **Courses and outcomes.** Rows of one patient, treatment and indication episode merge into a
  course; each course gets an outcome by the rule set of :mod:`recommender.importers.rules`
  (adverse -1 > switched 0 > resolved 1 > chronic 0.5 > dropped for lack of evidence).
  Deaths come from ``patients.DEATHDATE``; allergies from ``allergies`` (in v3 the medication
  allergies carry the RxNorm ingredient and its name, which is matched against the drug name).
- **Patients.** sex = ``GENDER``, birth_year = year of ``BIRTHDATE``, race, ethnicity, and
  death_date. **patient_conditions**: every condition row (``snomed|CODE``, kind "diagnosis")
  and every allergy (kind "allergy"; ``snomed|CODE``, or ``rxnorm|CODE`` when the v3 ``SYSTEM``
  says RxNorm), with the earliest onset: ``timestamp`` = conditions / allergies ``START`` as
  written (a date stays a date; a date-time is written in UTC with ``Z``); allergies without a
  ``START`` have none.
- **Observations** (``observations.csv``, when present and ``include_observations``): a row
  whose ``VALUE`` is a plain number (:func:`~recommender.importers.common.numeric_values`;
  whatever ``TYPE`` says) becomes ``loinc|CODE`` with ``VALUE``, ``UNITS`` and ``DATE`` (as
  written). Dropped and counted: text results (``TYPE`` text, e.g. smoking status), censored
  values (``<5``), values with a comma (ambiguous), a ``CODE`` that is not a LOINC code (digits,
  dash, check digit; Synthea's QALY/DALY/QOLS rows), no ``DATE``, unknown patients.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..columns import Columns, Tables
from ..exceptions import DataValidationError
from . import common
from .report import ImportReport
from .rules import OutcomeRules, link_episodes, outcome_table

C = Columns

#: Optional treatment tables -> code system of their CODE column.
TREATMENT_TABLES = {"medications": "rxnorm", "procedures": "snomed", "careplans": "snomed"}
#: A LOINC code: digits, a dash and the check digit (``8302-2``).
LOINC_CODE = r"^\d{1,8}-\d$"
_ROW_FIELDS = ("START", "STOP", "PATIENT", "CODE", "DESCRIPTION", "REASONCODE")


def import_synthea(
    src: str | Path,
    out: str | Path,
    *,
    include_procedures: bool = False,
    include_careplans: bool = False,
    include_observations: bool = True,
    resolution_window_days: int = 90,
    switch_window_days: int = 365,
    adverse_window_days: int = 30,
    chronic_min_days: int = 180,
    chronic_outcome: float | None = 0.5,
    allergy_match: str = "substance",
) -> ImportReport:
    """Convert a Synthea CSV export folder into a folder of canonical tables.

    Parameters
    ----------
    src : path
        Folder with patients, conditions, medications (and optionally allergies, procedures,
        careplans) as ``.csv`` or ``.csv.gz``.
    out : path
        Output folder, replaced whole (atomically) by the tables and ``import_report.*``.
    include_procedures, include_careplans : bool
        Also treat procedure / care-plan rows with a REASONCODE as treatments.
    include_observations : bool
        Read ``observations.csv`` (when present) into the observations table.
    resolution_window_days, switch_window_days, adverse_window_days, chronic_min_days,
    chronic_outcome, allergy_match
        The outcome rules (:class:`~recommender.importers.rules.OutcomeRules`).

    Returns
    -------
    ImportReport

    Raises
    ------
    DataValidationError
        If ``src`` is not a folder, a required file or column is missing.
    ParameterError
        If a rule parameter is out of range.
    """
    rules = OutcomeRules(
        resolution_window_days,
        switch_window_days,
        adverse_window_days,
        chronic_min_days,
        chronic_outcome,
        allergy_match,
    )
    folder = common.require_folder(
        src, "a Synthea CSV export (patients.csv, conditions.csv, medications.csv ...)"
    )
    report = ImportReport(
        "synthea",
        str(src),
        parameters={
            "include_procedures": include_procedures,
            "include_careplans": include_careplans,
            "include_observations": include_observations,
            **rules.to_dict(),
        },
    )
    raw = _read_all(folder, report, include_procedures, include_careplans, include_observations)
    report.layout = _layout(raw)
    patients = _patients(raw["patients"], report)
    episodes = _episodes(raw["conditions"], report)
    allergies = _allergies(raw.get("allergies"), report)
    rows = pd.concat(
        [
            _treatment_rows(raw[t], t, TREATMENT_TABLES[t], episodes, report)
            for t in TREATMENT_TABLES
            if t in raw
        ],
        ignore_index=True,
    )
    deaths = patients.set_index(C.patient)["death"].dropna()
    outcomes = outcome_table(rows, set(patients[C.patient]), deaths, allergies, rules, report)
    patient_conditions = common.patient_conditions(
        episodes, allergies, set(patients[C.patient]), report
    )
    frames = {
        Tables.outcomes: outcomes,
        Tables.patients: patients.drop(columns="death"),
        Tables.patient_conditions: patient_conditions,
        Tables.treatments: common.with_ingredients(
            common.dictionary(
                rows["treatment"], rows["treatment_name"], C.treatment, set(outcomes[C.treatment])
            ),
            rows["treatment"],
            rows["treatment_name"],
            report,
            drugs=rows["source"] == "medications",
        ),
        Tables.conditions: common.condition_dictionary(
            episodes,
            allergies,
            rows,
            set(outcomes[C.condition].dropna()) | set(patient_conditions[C.condition]),
        ),
    }
    if "observations" in raw:
        frames[Tables.observations] = _observations(
            raw["observations"], set(patients[C.patient]), report
        )
    common.write_output(out, frames, report)
    return report


# --- reading -----------------------------------------------------------------------------------


def _read_all(
    folder: Path, report: ImportReport, procedures: bool, careplans: bool, observations: bool
) -> dict[str, pd.DataFrame]:
    wanted = {
        "patients": True,
        "conditions": True,
        "medications": True,
        "allergies": False,
        "procedures": False,
        "careplans": False,
        "observations": False,
    }
    skipped = {"procedures": not procedures, "careplans": not careplans}
    skipped["observations"] = not observations
    raw = {}
    for name, required in wanted.items():
        if skipped.get(name):
            continue
        path = common.find_file(folder, name)
        if path is None:
            if required:
                raise DataValidationError(
                    f"no {name}.csv or {name}.csv.gz; a Synthea export "
                    "needs patients, conditions and medications",
                    file=str(folder),
                )
            if name == "observations":
                report.warn("observations: no observations.csv(.gz); no observations table")
            else:
                report.warn(f"{name}: no {name}.csv(.gz) in the export; skipped")
            continue
        frame = common.read_csv(path, report, name)
        frame.columns = [c.strip().upper() for c in frame.columns]
        needed = {
            "patients": ("ID", "BIRTHDATE", "GENDER"),
            "conditions": ("START", "PATIENT", "CODE", "DESCRIPTION"),
            "allergies": ("START", "PATIENT", "CODE", "DESCRIPTION"),
            "observations": ("DATE", "PATIENT", "CODE", "VALUE"),
        }.get(name, _ROW_FIELDS)
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise DataValidationError(
                f"missing column(s) {missing}; expected {list(needed)}",
                file=str(path),
                column=missing[0],
            )
        raw[name] = frame
    return raw


def _layout(raw: dict[str, pd.DataFrame]) -> str:
    v3 = (
        "PAYER" in raw["medications"]
        or "COUNTY" in raw["patients"]
        or "SYSTEM" in raw.get("allergies", pd.DataFrame())
    )
    return "synthea-v3" if v3 else "synthea-v2"


def _patients(frame: pd.DataFrame, report: ImportReport) -> pd.DataFrame:
    birth = common.parse_times(frame["BIRTHDATE"], report, "patients.BIRTHDATE")
    death = common.parse_times(
        frame.get("DEATHDATE", pd.Series("", index=frame.index)), report, "patients.DEATHDATE"
    )
    patients = pd.DataFrame(
        {
            C.patient: frame["ID"].str.strip(),
            C.sex: frame["GENDER"].str.strip().str.upper(),
            C.birth_year: birth.dt.year.astype("Int64"),
            "race": frame.get("RACE", pd.Series("", index=frame.index)).str.strip().str.lower(),
            "ethnicity": frame.get("ETHNICITY", pd.Series("", index=frame.index))
            .str.strip()
            .str.lower(),
            "death_date": death.dt.strftime("%Y-%m-%d").fillna(""),
            "death": death,
        }
    )
    blank = patients[C.patient] == ""
    report.drop("patients: empty ID", int(blank.sum()))
    dupes = patients[C.patient].duplicated() & ~blank
    report.drop("patients: duplicate ID (first row kept)", int(dupes.sum()))
    return patients[~blank & ~dupes].reset_index(drop=True)


def _episodes(frame: pd.DataFrame, report: ImportReport) -> pd.DataFrame:
    """Condition rows as episodes: patient, condition, name, start, stop, episode key."""
    episodes = pd.DataFrame(
        {
            "patient": frame["PATIENT"].str.strip(),
            "condition": common.code_ids("snomed", frame["CODE"]),
            "name": frame["DESCRIPTION"].str.strip(),
            "start": common.parse_times(frame["START"], report, "conditions.START"),
            "stop": common.parse_times(
                frame.get("STOP", pd.Series("", index=frame.index)), report, "conditions.STOP"
            ),
        }
    )
    episodes["start_text"] = common.time_texts(frame["START"], episodes["start"])
    bad = episodes["condition"].isna() | episodes["start"].isna() | (episodes["patient"] == "")
    report.drop("conditions: no CODE, PATIENT or valid START", int(bad.sum()))
    episodes = episodes[~bad].reset_index(drop=True)
    episodes["episode"] = "conditions:" + episodes.index.astype(str)
    return episodes


def _allergies(frame: pd.DataFrame | None, report: ImportReport) -> pd.DataFrame:
    """Allergies: patient, onset, code (condition id), name, primary (always True here)."""
    if frame is None:
        return pd.DataFrame(
            {
                "patient": [],
                "onset": pd.Series([], dtype="datetime64[ns, UTC]"),
                "onset_text": pd.Series([], dtype=object),
                "code": [],
                "name": [],
                "primary": pd.Series([], dtype=bool),
            }
        )
    systems = frame.get("SYSTEM", pd.Series("", index=frame.index)).map(common.system_prefix)
    allergies = pd.DataFrame(
        {
            "patient": frame["PATIENT"].str.strip(),
            "onset": common.parse_times(frame["START"], report, "allergies.START"),
            "name": frame["DESCRIPTION"].str.strip(),
        }
    )
    allergies["onset_text"] = common.time_texts(frame["START"], allergies["onset"])
    codes = common.strip_float_suffix(frame["CODE"])
    allergies["code"] = (systems.fillna("snomed") + "|" + codes).where(codes != "", None)
    bad = allergies["code"].isna() | (allergies["patient"] == "")
    report.drop("allergies: no CODE or PATIENT", int(bad.sum()))
    return allergies[~bad].assign(primary=True).reset_index(drop=True)


def _treatment_rows(
    frame: pd.DataFrame, table: str, system: str, episodes: pd.DataFrame, report: ImportReport
) -> pd.DataFrame:
    """Source rows with an indication, linked to their condition episode."""
    rows = pd.DataFrame(
        {
            "patient": frame["PATIENT"].str.strip(),
            "treatment": common.code_ids(system, frame["CODE"]),
            "treatment_name": frame["DESCRIPTION"].str.strip(),
            "start": common.parse_times(frame["START"], report, f"{table}.START"),
            "stop": common.parse_times(frame["STOP"], report, f"{table}.STOP"),
            "indication": common.code_ids("snomed", frame["REASONCODE"]),
            "indication_name": frame.get("REASONDESCRIPTION", pd.Series("", index=frame.index)),
            "source": table,
            "switchable": table == "medications",
        }
    )
    bad = rows["treatment"].isna() | rows["start"].isna() | (rows["patient"] == "")
    report.drop(f"{table}: no CODE, PATIENT or valid START", int(bad.sum()))
    no_reason = rows["indication"].isna() & ~bad
    report.drop(f"{table}: no REASONCODE (no indication)", int(no_reason.sum()))
    rows = rows[~bad & ~no_reason].reset_index(drop=True)
    rows = link_episodes(rows, episodes)
    report.unmatch(
        f"{table}: REASONCODE without a condition episode of that code on or before START",
        int(rows["episode"].isna().sum()),
    )
    return rows


# --- outputs -----------------------------------------------------------------------------------


def _observations(frame: pd.DataFrame, known: set, report: ImportReport) -> pd.DataFrame:
    """observations.csv rows with a numeric VALUE and a LOINC CODE (see the module docstring)."""
    values, problem = common.numeric_values(frame["VALUE"])
    kind = frame.get("TYPE", pd.Series("", index=frame.index)).str.strip().str.lower()
    text = (problem == common.NOT_NUMERIC) & (kind != "numeric")
    problem = problem.where(~text, "text result (TYPE " + kind.where(kind != "", "empty") + ")")
    codes = frame["CODE"].str.strip()
    loinc = codes.str.match(LOINC_CODE)
    problem = problem.where(loinc, "CODE is not a LOINC code (unknown code system)")
    problem = problem.where(codes != "", "no CODE")
    rows = pd.DataFrame(
        {
            "patient": frame["PATIENT"],
            "code": ("loinc|" + codes).where(loinc, None),
            "value": values,
            "unit": frame.get("UNITS", pd.Series("", index=frame.index)),
            "time": frame["DATE"],
            "problem": problem,
        }
    )
    return common.observation_table(rows, known, report, "observations")
