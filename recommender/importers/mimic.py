"""Import the MIMIC-III or MIMIC-IV (demo) CSV tables into canonical tables.

Rules, in plain language
------------------------
- **Layout.** MIMIC-IV when ``SRC/hosp/`` holds ``admissions.csv(.gz)`` or when ``SRC``'s
  ``patients`` table has ``anchor_age``; MIMIC-III when it has ``dob``. File names are matched
  case-insensitively (MIMIC-III ships upper-case names), ``.csv`` or ``.csv.gz``. Needed:
  patients, admissions, diagnoses_icd, prescriptions; optional: d_icd_diagnoses (names),
  labevents, d_labitems and (MIMIC-IV) omr. Dates are the de-identified (shifted) dates, taken
  as UTC.
- **Treatments.** Each prescription row whose ``drug_type`` is kept (default MAIN and ADDITIVE;
  BASE rows are IV base solutions) is a use of ``drug|<name>``: the ``drug`` text lower-cased,
  with parenthesised parts, words holding digits (strengths), dosage-form words (tab, iv, neb,
  flush ...) and a trailing salt (hcl, sodium, sulfate, tartrate ...; not after a cation such as
  potassium chloride) removed, e.g. "Vancomycin HCl" and "Vancomycin" -> ``drug|vancomycin``.
  The same rule serves both versions, so ids agree across MIMIC-III and MIMIC-IV. The
  treatments table keeps the most frequent original spelling and the most frequent NDC and GSN.
  Its ``ingredients`` are those of every spelling of the drug
  (:func:`~recommender.data.ingredients.ingredient_ids`, stricter than the id's normalisation:
  "Aspirin 81 mg" is ``drug|aspirin mg`` but holds ``drug|aspirin``); a hyphenated name is a
  combination only when a piece is a single drug of the same import
  ("Oxycodone-Acetaminophen" -> ``drug|oxycodone;drug|acetaminophen``).
- **Conditions.** Every diagnosis is ``icd9|CODE`` or ``icd10|CODE`` (MIMIC's undotted codes),
  named from d_icd_diagnoses. patient_conditions lists each patient's diagnoses of all
  admissions (kind "diagnosis"; ``timestamp`` = the ``admittime`` of the first admission with
  it, in UTC with ``Z``; MIMIC codes diagnoses at discharge, so a diagnosis found during a stay
  counts from that stay's admission; onset = its day).
- **Observations** (``include_observations``). ``labevents``: one row per result with a
  numeric ``valuenum`` (else a plain number in ``value``), code ``loinc|<loinc_code>`` when
  d_labitems gives one (MIMIC-III), else ``mimic-lab|<itemid>``; unit ``valueuom``; timestamp
  ``charttime`` (date-time, UTC); outpatient results (no ``hadm_id``) are kept. ``omr``
  (MIMIC-IV): numeric ``result_value`` as ``mimic-omr|<slug of result_name>`` (see
  :func:`omr_code`), blood pressure ``120/80`` split into ``...-systolic`` and
  ``...-diastolic``; timestamp ``chartdate`` (a date). Dropped and counted: text results,
  censored values (``<1``, ``>300``), values with a comma, no time, unknown patients.
- **Admission outcome.** In order: in-hospital death (``hospital_expire_flag``) = -1, adverse;
  an admission of the same patient starting within ``readmission_days`` after discharge = 0
  (readmitted); a stay longer than ``long_stay_days`` = 0.5 (long stay); labs that worsened
  (the share of abnormal ``labevents`` results on the admission's last lab day above the share
  on its first lab day; needs two lab days; MIMIC-IV demo only, ``use_labs``) = 0.5; otherwise
  1 (discharged well).
- **Attribution.** The admission's outcome is given to every distinct treatment prescribed in
  that admission: one outcome row per (admission, treatment), timestamp = the drug's first
  start in the admission. The indication is the admission's primary diagnosis (``seq_num`` 1,
  else the lowest ``seq_num``). Admissions without a kept prescription give no rows.
- **Patients.** sex = ``gender``; birth_year is left empty (the shifted years fall outside a
  valid range) and ``age`` gives the age at the first admission (MIMIC-III ages above 89 are
  shown as 90; MIMIC-IV: ``anchor_age`` moved to that year); race and ethnicity come from the
  latest admission's race/ethnicity text (race: white, black, asian, native, pacific, other,
  unknown; ethnicity: hispanic, nonhispanic, unknown), with the original text in ``race_source``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..columns import Columns, Tables
from ..data.ingredients import normalise_drug
from ..exceptions import DataValidationError, ParameterError
from . import common
from .report import ImportReport

C = Columns

#: omr units (the parenthesised part of result_name, lower-cased) -> UCUM unit written.
_OMR_UNITS = {"lbs": "[lb_av]", "inches": "[in_i]", "kg/m2": "kg/m2"}
_PRESSURE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)\s*$")


def omr_code(result_name: str) -> tuple[str, str]:
    """(code slug, unit) of an omr ``result_name``: lower-cased, runs of other characters than
    letters and digits made one dash; the unit from the parenthesised part (UCUM), blood
    pressure ``mm[Hg]``, eGFR ``mL/min/{1.73_m2}``.

    >>> omr_code("Weight (Lbs)"), omr_code("BMI (kg/m2)")
    (('weight-lbs', '[lb_av]'), ('bmi-kg-m2', 'kg/m2'))
    >>> omr_code("Blood Pressure Standing (1 min)")
    ('blood-pressure-standing-1-min', 'mm[Hg]')
    """
    name = " ".join(str(result_name).split())
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if slug.startswith("blood-pressure"):
        return slug, "mm[Hg]"
    if slug.startswith("egfr"):
        return slug, "mL/min/{1.73_m2}"
    found = re.search(r"\(([^)]*)\)", name)
    unit = found.group(1).strip() if found else ""
    return slug, _OMR_UNITS.get(unit.lower(), unit)


def import_mimic(
    src: str | Path,
    out: str | Path,
    *,
    readmission_days: int = 30,
    long_stay_days: float = 7.0,
    drug_types: tuple[str, ...] = ("MAIN", "ADDITIVE"),
    use_labs: bool = True,
    include_observations: bool = True,
) -> ImportReport:
    """Convert a MIMIC-III or MIMIC-IV (demo) folder into a folder of canonical tables.

    Parameters
    ----------
    src : path
        The MIMIC-III folder (ADMISSIONS.csv ...) or the MIMIC-IV folder holding ``hosp/``.
    out : path
        Output folder, replaced whole (atomically) by the tables and ``import_report.*``.
    readmission_days : int
        A new admission within this many days after discharge is a readmission.
    long_stay_days : float
        A longer stay lowers the outcome to 0.5.
    drug_types : tuple of str
        Prescription ``drug_type`` values kept (upper case).
    use_labs : bool
        Use labevents (when present) for the lab-worsening rule.
    include_observations : bool
        Write labevents and omr results (when present) as the observations table.

    Returns
    -------
    ImportReport

    Raises
    ------
    DataValidationError
        If ``src`` is not a MIMIC folder or a required table or column is missing.
    ParameterError
        If ``readmission_days`` or ``long_stay_days`` is negative.
    """
    if readmission_days < 0:
        raise ParameterError(
            "The 'readmission_days' parameter of import_mimic must be an int in "
            f"the range [0, inf). Got {readmission_days!r} instead."
        )
    if long_stay_days < 0:
        raise ParameterError(
            "The 'long_stay_days' parameter of import_mimic must be a number in "
            f"the range [0, inf). Got {long_stay_days!r} instead."
        )
    folder, version = _detect(common.require_folder(src, "a MIMIC-III or MIMIC-IV folder"))
    report = ImportReport(
        "mimic",
        str(src),
        layout=f"mimic-{version}",
        parameters={
            "readmission_days": readmission_days,
            "long_stay_days": long_stay_days,
            "drug_types": list(drug_types),
            "use_labs": use_labs,
            "include_observations": include_observations,
            "attribution": "admission outcome -> every treatment of that admission",
            "indication": "primary diagnosis (lowest seq_num)",
        },
    )
    read = _Reader(folder, version, report)
    admissions = read.admissions()
    diagnoses = read.diagnoses(set(admissions["hadm"]))
    raw_patients = read.patients()
    lab_rows = read.labevents(use_labs, include_observations)
    labs = read.labs(lab_rows) if use_labs else None
    scored = _score(admissions, labs, readmission_days, long_stay_days, report)
    prescriptions = read.prescriptions(set(admissions["hadm"]), drug_types)
    outcomes = _attribute(prescriptions, scored, diagnoses, report)
    patients = _patients(raw_patients, admissions, version)
    patient_conditions = _patient_conditions(diagnoses, admissions)
    frames = {
        Tables.outcomes: outcomes,
        Tables.patients: patients,
        Tables.patient_conditions: patient_conditions,
        Tables.treatments: common.with_ingredients(
            _treatments(prescriptions, set(outcomes[C.treatment])),
            prescriptions["treatment"],
            prescriptions["drug"],
            report,
        ),
        Tables.conditions: _conditions(
            read.names(),
            set(outcomes[C.condition].dropna()) | set(patient_conditions[C.condition]),
            report,
        ),
    }
    if include_observations:
        observations = read.observations(lab_rows, set(patients[C.patient]))
        if observations is not None:
            frames[Tables.observations] = observations
    common.write_output(out, frames, report)
    return report


def _detect(folder: Path) -> tuple[Path, str]:
    hosp = folder / "hosp"
    if hosp.is_dir() and common.find_file(hosp, "admissions") is not None:
        return hosp, "iv"
    patients = common.find_file(folder, "patients")
    if patients is None or common.find_file(folder, "admissions") is None:
        raise DataValidationError(
            "is not a MIMIC folder: expected ADMISSIONS.csv and "
            "PATIENTS.csv (MIMIC-III) or hosp/admissions.csv.gz "
            "(MIMIC-IV)",
            file=str(folder),
        )
    header = [c.lower() for c in common.read_header(patients)]
    if "anchor_age" in header:
        return folder, "iv"
    if "dob" in header:
        return folder, "iii"
    raise DataValidationError(
        f"patients table has neither dob (MIMIC-III) nor anchor_age (MIMIC-IV); found {header}",
        file=str(patients),
    )


class _Reader:
    """Reads the MIMIC tables of one version into version-independent frames."""

    def __init__(self, folder: Path, version: str, report: ImportReport):
        self.folder, self.version, self.report = folder, version, report

    def _table(
        self,
        stem: str,
        columns: tuple[str, ...],
        required: bool = True,
        usecols: tuple[str, ...] | None = None,
    ) -> pd.DataFrame | None:
        path = common.find_file(self.folder, stem)
        if path is None:
            if required:
                raise DataValidationError(
                    f"no {stem}.csv or {stem}.csv.gz (any case); MIMIC "
                    f"{self.version.upper()} needs it",
                    file=str(self.folder),
                )
            return None
        wanted = (lambda c: c.lower() in usecols) if usecols else None
        frame = common.read_csv(path, self.report, stem, usecols=wanted)
        frame.columns = [c.lower() for c in frame.columns]
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DataValidationError(
                f"missing column(s) {missing}; expected {list(columns)}",
                file=str(path),
                column=missing[0],
            )
        return frame

    def admissions(self) -> pd.DataFrame:
        race = "race" if self.version == "iv" else "ethnicity"
        raw = self._table(
            "admissions",
            ("subject_id", "hadm_id", "admittime", "dischtime", "hospital_expire_flag", race),
        )
        frame = pd.DataFrame(
            {
                "patient": raw["subject_id"].str.strip(),
                "hadm": raw["hadm_id"].str.strip(),
                "admit": common.parse_times(raw["admittime"], self.report, "admissions.admittime"),
                "disch": common.parse_times(raw["dischtime"], self.report, "admissions.dischtime"),
                "died": raw["hospital_expire_flag"].str.strip() == "1",
                "race_source": raw[race].str.strip(),
            }
        )
        bad = frame["admit"].isna() | frame["disch"].isna() | (frame["hadm"] == "")
        self.report.drop("admissions: no hadm_id, admittime or dischtime", int(bad.sum()))
        return frame[~bad].reset_index(drop=True)

    def diagnoses(self, hadms: set) -> pd.DataFrame:
        code = "icd_code" if self.version == "iv" else "icd9_code"
        raw = self._table("diagnoses_icd", ("subject_id", "hadm_id", "seq_num", code))
        system = ("icd" + raw["icd_version"].str.strip()) if self.version == "iv" else "icd9"
        codes = raw[code].str.strip()
        frame = pd.DataFrame(
            {
                "patient": raw["subject_id"].str.strip(),
                "hadm": raw["hadm_id"].str.strip(),
                "seq": pd.to_numeric(raw["seq_num"], errors="coerce"),
                "condition": (system + "|" + codes).where(codes != "", None),
            }
        )
        bad = frame["condition"].isna() | ~frame["hadm"].isin(hadms)
        self.report.drop("diagnoses_icd: no code or unknown hadm_id", int(bad.sum()))
        return frame[~bad].reset_index(drop=True)

    def names(self) -> pd.Series:
        """condition id -> long title (empty when d_icd_diagnoses is absent)."""
        code = "icd_code" if self.version == "iv" else "icd9_code"
        raw = self._table("d_icd_diagnoses", (code, "long_title"), required=False)
        if raw is None:
            self.report.warn("d_icd_diagnoses: absent; condition names are the codes")
            return pd.Series(dtype=object)
        system = ("icd" + raw["icd_version"].str.strip()) if self.version == "iv" else "icd9"
        ids = system + "|" + raw[code].str.strip()
        return (
            pd.Series(raw["long_title"].str.strip().to_numpy(), index=ids).groupby(level=0).first()
        )

    def prescriptions(self, hadms: set, drug_types: tuple[str, ...]) -> pd.DataFrame:
        start, stop = (
            ("starttime", "stoptime") if self.version == "iv" else ("startdate", "enddate")
        )
        raw = self._table("prescriptions", ("subject_id", "hadm_id", start, "drug_type", "drug"))
        empty = pd.Series("", index=raw.index)
        frame = pd.DataFrame(
            {
                "patient": raw["subject_id"].str.strip(),
                "hadm": raw["hadm_id"].str.strip(),
                "start": common.parse_times(raw[start], self.report, f"prescriptions.{start}"),
                "stop": common.parse_times(
                    raw.get(stop, empty), self.report, f"prescriptions.{stop}"
                ),
                "drug": raw["drug"].str.strip(),
                "ndc": raw.get("ndc", empty).str.strip().replace("0", ""),
                "gsn": raw.get("gsn", empty).str.strip(),
            }
        )
        kept_type = raw["drug_type"].str.strip().str.upper().isin(drug_types)
        self.report.drop(
            f"prescriptions: drug_type not in {list(drug_types)}", int((~kept_type).sum())
        )
        unknown = kept_type & ~frame["hadm"].isin(hadms)
        self.report.drop("prescriptions: hadm_id not among the admissions", int(unknown.sum()))
        frame = frame[kept_type & ~unknown].reset_index(drop=True)
        names = pd.Series({d: normalise_drug(d) for d in frame["drug"].unique()})
        frame["treatment"] = ("drug|" + frame["drug"].map(names)).where(
            frame["drug"].map(names) != "", None
        )
        nameless = frame["treatment"].isna()
        self.report.drop(
            "prescriptions: no drug name left after normalisation", int(nameless.sum())
        )
        return frame[~nameless].reset_index(drop=True)

    def labevents(self, use_labs: bool, observations: bool) -> pd.DataFrame | None:
        """The labevents columns the lab rule and the observations need (None when absent)."""
        if not (use_labs or observations):
            return None
        columns = ("hadm_id", "charttime", "flag") if use_labs else ("charttime",)
        wanted = ("subject_id", "hadm_id", "itemid", "charttime", "value", "valuenum")
        wanted += ("valueuom", "flag")
        raw = self._table("labevents", columns, required=False, usecols=wanted)
        if raw is None:
            if use_labs:
                self.report.warn("labevents: absent; the lab-worsening rule is not applied")
            if observations:
                self.report.warn("labevents: absent; no lab observations")
        return raw

    def labs(self, raw: pd.DataFrame | None) -> pd.DataFrame | None:
        if raw is None:
            return None
        frame = pd.DataFrame(
            {
                "hadm": raw["hadm_id"].str.strip(),
                "day": common.parse_times(
                    raw["charttime"], self.report, "labevents.charttime"
                ).dt.floor("D"),
                "abnormal": raw["flag"].str.strip() != "",
            }
        )
        outside = (frame["hadm"] == "") | frame["day"].isna()
        self.report.drop(
            "labevents (lab-worsening rule): no hadm_id (outpatient) or no charttime",
            int(outside.sum()),
        )
        return frame[~outside]

    def observations(self, labs: pd.DataFrame | None, known: set) -> pd.DataFrame | None:
        """labevents and omr results as canonical observations (None when neither exists)."""
        parts = []
        missing = [c for c in ("subject_id", "itemid") if labs is not None and c not in labs]
        if missing:
            self.report.warn(f"labevents: no {' or '.join(missing)} column; no lab observations")
        elif labs is not None:
            parts.append(self._lab_observations(labs, known))
        omr = self._table(
            "omr", ("subject_id", "chartdate", "result_name", "result_value"), required=False
        )
        if omr is not None:
            parts.append(_omr_observations(omr, known, self.report))
        elif self.version == "iv":
            self.report.warn("omr: absent; no blood pressure, weight, BMI or height observations")
        if not parts:
            return None
        both = pd.concat(parts, ignore_index=True)
        time = pd.to_datetime(both[C.timestamp], utc=True, format="ISO8601")
        order = both.assign(_time=time).sort_values([C.patient, "_time"], kind="stable").index
        return both.loc[order].reset_index(drop=True)

    def _lab_observations(self, raw: pd.DataFrame, known: set) -> pd.DataFrame:
        items = self._table("d_labitems", ("itemid",), required=False)
        loinc = pd.Series(dtype=str)
        if items is None:
            self.report.warn("d_labitems: absent; lab codes are mimic-lab|<itemid>")
        elif "loinc_code" in items:
            codes = items["loinc_code"].str.strip()
            loinc = pd.Series(codes.to_numpy(), index=items["itemid"].str.strip())[
                (codes != "").to_numpy()
            ]
            loinc = loinc[~loinc.index.duplicated()]
        empty = pd.Series("", index=raw.index)
        itemid = raw["itemid"].str.strip()
        mapped = itemid.map(loinc).astype(object)
        self.report.count("lab itemids coded as LOINC (d_labitems.loinc_code)", mapped.nunique())
        code = ("loinc|" + mapped.fillna("")).where(mapped.notna(), "mimic-lab|" + itemid)
        value_num, problem_num = common.numeric_values(raw.get("valuenum", empty))
        value_text, problem_text = common.numeric_values(raw.get("value", empty))
        value = np.where(problem_num == "", value_num, value_text)
        problem = problem_num.where(problem_num == "", problem_text)
        problem = problem.where(itemid != "", "no itemid")
        rows = pd.DataFrame(
            {
                "patient": raw["subject_id"],
                "code": code.where(itemid != "", None),
                "value": value,
                "unit": raw.get("valueuom", empty),
                "time": raw["charttime"],
                "problem": problem,
            }
        )
        return common.observation_table(rows, known, self.report, "labevents")

    def patients(self) -> pd.DataFrame:
        columns = (
            ("subject_id", "gender", "anchor_age", "anchor_year")
            if self.version == "iv"
            else ("subject_id", "gender", "dob")
        )
        raw = self._table("patients", columns)
        frame = pd.DataFrame(
            {
                "patient": raw["subject_id"].str.strip(),
                "sex": raw["gender"].str.strip().str.upper(),
                "death_date": raw.get("dod", pd.Series("", index=raw.index)).str.strip().str[:10],
            }
        )
        if self.version == "iv":
            frame["anchor_age"] = pd.to_numeric(raw["anchor_age"], errors="coerce")
            frame["anchor_year"] = pd.to_numeric(raw["anchor_year"], errors="coerce")
        else:
            frame["dob"] = common.parse_times(raw["dob"], self.report, "patients.dob")
        return frame


def _score(
    admissions: pd.DataFrame,
    labs: pd.DataFrame | None,
    readmission_days: int,
    long_stay_days: float,
    report: ImportReport,
) -> pd.DataFrame:
    """Per admission: los_days, readmitted, lab shares, outcome, adverse, rule."""
    frame = admissions.sort_values(["patient", "admit"]).reset_index(drop=True)
    next_admit = frame.groupby("patient")["admit"].shift(-1)
    gap = (next_admit - frame["disch"]).dt.total_seconds() / 86400
    frame["los_days"] = ((frame["disch"] - frame["admit"]).dt.total_seconds() / 86400).round(2)
    frame["readmitted"] = gap.between(0, readmission_days).to_numpy() & ~frame["died"]
    report.unmatch("admissions overlapping the patient's next admission", int((gap < 0).sum()))
    frame = frame.merge(_lab_shares(labs), on="hadm", how="left")
    worsened = (frame["labs_last_abnormal"] > frame["labs_first_abnormal"]).to_numpy()
    long_stay = (frame["los_days"] > long_stay_days).to_numpy()
    rule = np.select(
        [frame["died"].to_numpy(), frame["readmitted"].to_numpy(), long_stay, worsened],
        ["died_in_hospital", "readmitted", "long_stay", "labs_worsened"],
        default="discharged_well",
    )
    frame["rule"] = rule
    frame["outcome"] = (
        pd.Series(rule)
        .map(
            {
                "died_in_hospital": -1.0,
                "readmitted": 0.0,
                "long_stay": 0.5,
                "labs_worsened": 0.5,
                "discharged_well": 1.0,
            }
        )
        .to_numpy()
    )
    frame["adverse"] = frame["died"].astype(int)
    report.count("admissions scored", len(frame))
    report.count(
        "admissions with two or more lab days", int(frame["labs_first_abnormal"].notna().sum())
    )
    return frame


def _lab_shares(labs: pd.DataFrame | None) -> pd.DataFrame:
    """Per admission with two or more lab days: abnormal share on the first and last day."""
    columns = ["hadm", "labs_first_abnormal", "labs_last_abnormal"]
    if labs is None or labs.empty:
        return pd.DataFrame(columns=columns).astype(
            {"hadm": object, "labs_first_abnormal": float, "labs_last_abnormal": float}
        )
    daily = (
        labs.groupby(["hadm", "day"])["abnormal"].mean().reset_index().sort_values(["hadm", "day"])
    )
    ends = daily.groupby("hadm")["abnormal"].agg(["first", "last", "size"])
    ends = ends[ends["size"] >= 2]
    return pd.DataFrame(
        {
            "hadm": ends.index,
            "labs_first_abnormal": ends["first"].round(3).to_numpy(),
            "labs_last_abnormal": ends["last"].round(3).to_numpy(),
        }
    )


def _attribute(
    prescriptions: pd.DataFrame, scored: pd.DataFrame, diagnoses: pd.DataFrame, report: ImportReport
) -> pd.DataFrame:
    """One outcome row per (admission, treatment) carrying the admission's outcome."""
    primary = diagnoses.sort_values(["hadm", "seq"]).drop_duplicates("hadm").set_index("hadm")
    uses = (
        prescriptions.groupby(["hadm", "treatment"], sort=True)
        .agg(start=("start", "min"), prescriptions=("start", "size"))
        .reset_index()
    )
    rows = uses.merge(scored, on="hadm", how="inner")
    no_rx = ~scored["hadm"].isin(set(uses["hadm"]))
    report.count("admissions without a kept prescription (no outcome rows)", int(no_rx.sum()))
    no_dx = ~rows["hadm"].isin(primary.index)
    report.unmatch(
        "admissions without a diagnosis (outcome rows without indication)",
        int(rows.loc[no_dx, "hadm"].nunique()),
    )
    start = rows["start"].fillna(rows["admit"])
    return pd.DataFrame(
        {
            C.patient: rows["patient"],
            C.treatment: rows["treatment"],
            C.outcome: rows["outcome"],
            C.timestamp: common.iso(start),
            C.condition: rows["hadm"].map(primary["condition"]),
            C.adverse: rows["adverse"],
            "rule": rows["rule"],
            "hadm_id": rows["hadm"],
            "los_days": rows["los_days"],
            "readmitted": rows["readmitted"].astype(int),
            "died_in_hospital": rows["died"].astype(int),
            "labs_first_abnormal": rows["labs_first_abnormal"],
            "labs_last_abnormal": rows["labs_last_abnormal"],
            "prescriptions": rows["prescriptions"],
        }
    )


def _patients(raw: pd.DataFrame, admissions: pd.DataFrame, version: str) -> pd.DataFrame:
    ordered = admissions.sort_values("admit")
    first_admit = ordered.groupby("patient")["admit"].first()
    latest_race = ordered.groupby("patient")["race_source"].last()
    admit = raw["patient"].map(first_admit)
    if version == "iv":
        age = raw["anchor_age"] + (admit.dt.year - raw["anchor_year"])
    else:
        age = (admit.dt.year - raw["dob"].dt.year).where(lambda a: a < 300, 90).clip(upper=90)
    source = raw["patient"].map(latest_race).fillna("")
    race, ethnicity = (
        zip(*(common.race_and_ethnicity(text) for text in source)) if len(source) else ((), ())
    )
    return pd.DataFrame(
        {
            C.patient: raw["patient"],
            C.sex: raw["sex"],
            C.birth_year: pd.array([pd.NA] * len(raw), dtype="Int64"),
            "age": age.astype("Int64"),
            "race": list(race),
            "ethnicity": list(ethnicity),
            "race_source": source,
            "death_date": raw["death_date"],
        }
    )


def _patient_conditions(diagnoses: pd.DataFrame, admissions: pd.DataFrame) -> pd.DataFrame:
    admit = diagnoses["hadm"].map(admissions.set_index("hadm")["admit"])
    frame = pd.DataFrame(
        {
            C.patient: diagnoses["patient"],
            C.condition: diagnoses["condition"],
            "kind": "diagnosis",
            C.timestamp: "",
            "onset": admit,
        }
    )
    frame = (
        frame.sort_values([C.patient, C.condition, "onset"])
        .drop_duplicates([C.patient, C.condition])
        .reset_index(drop=True)
    )
    frame[C.timestamp] = common.iso(frame["onset"])
    frame["onset"] = frame["onset"].dt.strftime("%Y-%m-%d").fillna("")
    return frame


def _omr_observations(raw: pd.DataFrame, known: set, report: ImportReport) -> pd.DataFrame:
    """omr results as observations: numbers, blood pressure split in two (see the docstring)."""
    names = raw["result_name"].str.strip()
    coded = {name: omr_code(name) for name in names.unique()}
    slug = names.map(lambda n: coded[n][0])
    unit = names.map(lambda n: coded[n][1])
    pressure = slug.str.startswith("blood-pressure")
    values, problem = common.numeric_values(raw["result_value"])
    base = pd.DataFrame(
        {
            "patient": raw["subject_id"],
            "code": ("mimic-omr|" + slug).where(slug != "", None),
            "value": values,
            "unit": unit,
            "time": raw["chartdate"],
            "problem": problem.where(slug != "", "no result_name"),
        }
    )
    parts = raw["result_value"].str.extract(_PRESSURE)
    split = parts[0].notna()
    bad_pressure = pressure & ~split & (base["problem"] != common.NO_VALUE)
    base.loc[bad_pressure, "problem"] = "blood pressure not written systolic/diastolic (120/80)"
    base.loc[pressure & split & (slug != ""), "problem"] = ""
    halves = [
        base.assign(
            code=base["code"] + f"-{side}",
            value=pd.to_numeric(parts[column], errors="coerce"),
        )[pressure]
        for column, side in ((0, "systolic"), (1, "diastolic"))
    ]
    halves[1] = halves[1][split[pressure].to_numpy()]  # a bad reading is counted once
    rows = pd.concat([base[~pressure], *halves]).sort_index(kind="stable")
    return common.observation_table(rows.reset_index(drop=True), known, report, "omr")


def _treatments(prescriptions: pd.DataFrame, used: set) -> pd.DataFrame:
    table = common.dictionary(prescriptions["treatment"], prescriptions["drug"], C.treatment, used)
    for column in ("ndc", "gsn"):
        best = common.dictionary(prescriptions["treatment"], prescriptions[column], C.treatment)
        best = best.set_index(C.treatment)["name"]
        table[column] = table[C.treatment].map(best)
        table.loc[table[column] == table[C.treatment], column] = ""
    return table


def _conditions(names: pd.Series, used: set, report: ImportReport) -> pd.DataFrame:
    ids = pd.Series(sorted(used), dtype=object)
    named = ids.map(names).astype(object)
    report.unmatch("diagnosis codes not in d_icd_diagnoses", int(named.isna().sum()))
    return pd.DataFrame({C.condition: ids, "name": named.where(named.notna(), ids)})
