"""MIMIC importer: hand-written MIMIC-III and MIMIC-IV folders with known outcomes, and the demos."""

from __future__ import annotations

import pandas as pd
import pytest

from recommender.data.tables import read_tables
from recommender.exceptions import DataValidationError
from recommender.importers import import_mimic
from recommender.importers.mimic import normalise_drug

from .conftest import shared_dataset

# (subject, hadm, admittime, dischtime, hospital_expire_flag, race)
ADMISSIONS = [
    ("1", "100", "2150-01-01 10:00:00", "2150-01-04 10:00:00", "0", "WHITE"),
    ("1", "101", "2150-01-20 10:00:00", "2150-01-22 10:00:00", "0", "WHITE"),  # 16 d later
    ("1", "102", "2151-01-01 10:00:00", "2151-01-03 10:00:00", "0", "WHITE"),
    (
        "2",
        "200",
        "2160-05-01 10:00:00",
        "2160-05-15 10:00:00",
        "0",
        "HISPANIC/LATINO - PUERTO RICAN",
    ),  # 14 days
    (
        "2",
        "201",
        "2160-08-01 10:00:00",
        "2160-08-03 10:00:00",
        "1",
        "HISPANIC/LATINO - PUERTO RICAN",
    ),  # died
]
# (hadm, seq_num, code, icd version)
DIAGNOSES = [
    ("100", "2", "I10", "10"),
    ("100", "1", "E119", "10"),
    ("101", "1", "4019", "9"),
    ("200", "1", "J189", "10"),
    ("201", "1", "A419", "10"),
]
# (hadm, drug_type, drug, start)
PRESCRIPTIONS = [
    ("100", "MAIN", "Metformin", "2150-01-01 12:00:00"),
    ("100", "MAIN", "MetFORMIN (Glucophage)", "2150-01-02 12:00:00"),
    ("100", "BASE", "0.9% Sodium Chloride", "2150-01-01 12:00:00"),
    ("101", "MAIN", "Lisinopril", "2150-01-20 12:00:00"),
    ("102", "MAIN", "Furosemide", "2151-01-01 12:00:00"),
    ("200", "MAIN", "Vancomycin HCl", "2160-05-01 12:00:00"),
    ("200", "MAIN", "Vancomycin", "2160-05-03 12:00:00"),
    ("201", "MAIN", "Norepinephrine", "2160-08-01 12:00:00"),
]
# (hadm, charttime, flag): 101 improves (2/2 -> 0/2 abnormal), 102 worsens (0/2 -> 2/2).
LABS = [
    ("101", "2150-01-20 11:00:00", "abnormal"),
    ("101", "2150-01-20 11:00:00", "abnormal"),
    ("101", "2150-01-21 11:00:00", ""),
    ("101", "2150-01-21 11:00:00", ""),
    ("102", "2151-01-01 11:00:00", ""),
    ("102", "2151-01-01 11:00:00", ""),
    ("102", "2151-01-02 11:00:00", "abnormal"),
    ("102", "2151-01-02 11:00:00", "abnormal"),
    ("", "2151-01-02 11:00:00", "abnormal"),
]
SUBJECT = {hadm: subject for subject, hadm, *_ in ADMISSIONS}

#: (patient, treatment, hadm) -> (outcome, adverse, rule, indication), derived by hand.
EXPECTED_IV = {
    ("1", "drug|metformin", "100"): (0.0, 0, "readmitted", "icd10|E119"),
    ("1", "drug|lisinopril", "101"): (1.0, 0, "discharged_well", "icd9|4019"),
    ("1", "drug|furosemide", "102"): (0.5, 0, "labs_worsened", ""),
    ("2", "drug|vancomycin", "200"): (0.5, 0, "long_stay", "icd10|J189"),
    ("2", "drug|norepinephrine", "201"): (-1.0, 1, "died_in_hospital", "icd10|A419"),
}


def write_mimic_iv(root):
    hosp = root / "hosp"
    hosp.mkdir(parents=True)

    def save(name, rows, columns):
        pd.DataFrame(rows, columns=columns).to_csv(
            hosp / f"{name}.csv.gz", index=False, compression="gzip"
        )

    save(
        "patients",
        [
            ("1", "F", "60", "2150", "2011 - 2013", ""),
            ("2", "M", "70", "2160", "2014 - 2016", "2160-08-03"),
        ],
        ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"],
    )
    save(
        "admissions",
        ADMISSIONS,
        ["subject_id", "hadm_id", "admittime", "dischtime", "hospital_expire_flag", "race"],
    )
    save(
        "diagnoses_icd",
        [(SUBJECT[h], h, s, c, v) for h, s, c, v in DIAGNOSES],
        ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"],
    )
    save(
        "d_icd_diagnoses",
        [
            ("E119", "10", "Type 2 diabetes mellitus without complications"),
            ("4019", "9", "Unspecified essential hypertension"),
        ],
        ["icd_code", "icd_version", "long_title"],
    )
    save(
        "prescriptions",
        [(SUBJECT[h], h, s, "", t, d, "00002", "123") for h, t, d, s in PRESCRIPTIONS],
        ["subject_id", "hadm_id", "starttime", "stoptime", "drug_type", "drug", "ndc", "gsn"],
    )
    save(
        "labevents",
        [(SUBJECT.get(h, "1"), h, c, "1", f) for h, c, f in LABS],
        ["subject_id", "hadm_id", "charttime", "valuenum", "flag"],
    )
    return root


def write_mimic_iii(root):
    """The same stays in the MIMIC-III layout: upper-case names, ICD-9 only, dob, no labs."""
    root.mkdir(parents=True)

    def save(name, rows, columns):
        pd.DataFrame(rows, columns=columns).to_csv(root / f"{name}.csv", index=False)

    save(
        "PATIENTS",
        [
            ("1", "F", "2090-03-01 00:00:00", ""),
            ("2", "M", "1860-03-01 00:00:00", "2160-08-03 00:00:00"),
        ],  # > 89: shifted
        ["subject_id", "gender", "dob", "dod"],
    )
    save(
        "ADMISSIONS",
        ADMISSIONS,
        ["subject_id", "hadm_id", "admittime", "dischtime", "hospital_expire_flag", "ethnicity"],
    )
    save(
        "DIAGNOSES_ICD",
        [(SUBJECT[h], h, s, c) for h, s, c, v in DIAGNOSES if v == "9"]
        + [("1", "100", "1", "25000"), ("2", "200", "1", "486"), ("2", "201", "1", "0389")],
        ["subject_id", "hadm_id", "seq_num", "icd9_code"],
    )
    save(
        "PRESCRIPTIONS",
        [(SUBJECT[h], h, s, "", t, d, "0", "") for h, t, d, s in PRESCRIPTIONS],
        ["subject_id", "hadm_id", "startdate", "enddate", "drug_type", "drug", "ndc", "gsn"],
    )
    return root


def outcome_map(out) -> dict:
    frame = pd.read_csv(out / "outcomes.csv", dtype=str, keep_default_na=False)
    return {
        (r.patient_id, r.treatment_id, r.hadm_id): (
            float(r.outcome),
            int(r.adverse),
            r.rule,
            r.condition_id,
        )
        for r in frame.itertuples()
    }


def test_mimic_iv_known_outcomes(tmp_path):
    report = import_mimic(write_mimic_iv(tmp_path / "src"), tmp_path / "out")

    assert report.layout == "mimic-iv"
    assert outcome_map(tmp_path / "out") == EXPECTED_IV
    tables = read_tables(tmp_path / "out")
    rows = tables.outcomes.set_index("treatment_id")
    assert rows.loc["drug|metformin", "prescriptions"] == "2"  # both spellings, one drug
    assert rows.loc["drug|metformin", "timestamp"] == pd.Timestamp("2150-01-01 12:00", tz="UTC")
    assert float(rows.loc["drug|vancomycin", "los_days"]) == 14.0  # extra columns stay text
    assert report.dropped["prescriptions: drug_type not in ['MAIN', 'ADDITIVE']"] == 1
    assert (
        report.dropped["labevents (lab-worsening rule): no hadm_id (outpatient) or no charttime"]
        == 1
    )
    patients = tables.patients.set_index("patient_id")
    assert patients.loc["1", "age"] == "60" and patients.loc["2", "age"] == "70"
    assert pd.isna(patients.loc["1", "birth_year"])
    assert (patients.loc["2", "race"], patients.loc["2", "ethnicity"]) == ("unknown", "hispanic")
    names = tables.conditions.set_index("condition_id")["name"]
    assert names["icd10|E119"].startswith("Type 2 diabetes") and names["icd10|I10"] == "icd10|I10"
    assert ("1", "icd10|I10") in set(
        zip(tables.patient_conditions["patient_id"], tables.patient_conditions["condition_id"])
    )
    assert set(tables.treatments["ndc"]) == {"00002"}


def test_mimic_iv_options(tmp_path):
    src = write_mimic_iv(tmp_path / "src")
    import_mimic(src, tmp_path / "nolabs", use_labs=False, readmission_days=10, long_stay_days=20)
    got = outcome_map(tmp_path / "nolabs")
    assert {k[1]: v[2] for k, v in got.items()} == {
        "drug|metformin": "discharged_well",
        "drug|lisinopril": "discharged_well",
        "drug|furosemide": "discharged_well",
        "drug|vancomycin": "discharged_well",
        "drug|norepinephrine": "died_in_hospital",
    }
    import_mimic(src, tmp_path / "base", drug_types=("MAIN", "BASE"))
    assert ("1", "drug|sodium chloride", "100") in outcome_map(tmp_path / "base")


def test_mimic_iii_layout(tmp_path):
    report = import_mimic(write_mimic_iii(tmp_path / "src"), tmp_path / "out")

    assert report.layout == "mimic-iii"
    assert "labevents: absent; the lab-worsening rule is not applied" in report.warnings
    got = outcome_map(tmp_path / "out")
    assert {k: v[2] for k, v in got.items()} == {
        ("1", "drug|metformin", "100"): "readmitted",
        ("1", "drug|lisinopril", "101"): "discharged_well",
        ("1", "drug|furosemide", "102"): "discharged_well",  # no labs in MIMIC-III here
        ("2", "drug|vancomycin", "200"): "long_stay",
        ("2", "drug|norepinephrine", "201"): "died_in_hospital",
    }
    assert got[("1", "drug|metformin", "100")][3] == "icd9|25000"
    patients = read_tables(tmp_path / "out").patients.set_index("patient_id")
    assert patients.loc["1", "age"] == "60" and patients.loc["2", "age"] == "90"


def test_not_a_mimic_folder(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(DataValidationError, match="is not a MIMIC folder"):
        import_mimic(tmp_path / "src", tmp_path / "out")


def test_cli_subcommand(tmp_path, import_cli, capsys):
    src = write_mimic_iv(tmp_path / "src")
    args = import_cli(["import", "mimic", str(src), "--out", str(tmp_path / "out"), "--no-labs"])
    assert args.func(args) == 0
    assert "mimic (mimic-iv): 5 outcome rows, 2 patients" in capsys.readouterr().out


# --- observations and onsets ------------------------------------------------------------------

# (subject, hadm, itemid, charttime, value, valuenum, valueuom): what each row tests on its right.
LAB_RESULTS = [
    ("1", "101", "50912", "2150-01-20 11:00:00", "1.2", "1.2", "mg/dL"),  # kept
    ("1", "", "50912", "2150-03-01 08:15:00", "0.9", "0.9", "mg/dL"),  # outpatient: kept
    ("1", "101", "51514", "2150-01-20 11:00:00", "NEG", "", "mg/dL"),  # text
    ("2", "200", "51196", "2160-05-02 06:00:00", "<5", "", "ng/mL"),  # censored
    ("2", "200", "50889", "2160-05-02 06:00:00", "1,234", "", "mg/L"),  # comma
    ("2", "200", "50931", "2160-05-02 06:00:00", "___", "", ""),  # text (de-identified)
    ("9", "", "50912", "2160-05-02 06:00:00", "1.0", "1.0", "mg/dL"),  # unknown patient
    ("2", "200", "50912", "", "1.0", "1.0", "mg/dL"),  # no time
]
# (subject, chartdate, seq_num, result_name, result_value)
OMR = [
    ("1", "2150-02-01", "1", "Blood Pressure", "120/80"),  # two rows
    ("1", "2150-02-01", "1", "Weight (Lbs)", "180.5"),
    ("1", "2150-02-01", "1", "BMI (kg/m2)", "27.4"),
    ("2", "2160-04-01", "1", "Height (Inches)", "70"),
    ("2", "2160-04-01", "1", "Blood Pressure Sitting", "130/"),  # not systolic/diastolic
    ("2", "2160-04-01", "1", "eGFR", ">60"),  # censored
    ("2", "2160-04-01", "2", "Weight (Lbs)", ""),  # no value
]
#: (patient, code, value, unit, timestamp) kept, in output order (patient, then time).
KEPT_IV = [
    ("1", "mimic-lab|50912", 1.2, "mg/dL", "2150-01-20T11:00:00Z"),
    ("1", "mimic-omr|blood-pressure-systolic", 120.0, "mm[Hg]", "2150-02-01"),
    ("1", "mimic-omr|blood-pressure-diastolic", 80.0, "mm[Hg]", "2150-02-01"),
    ("1", "mimic-omr|weight-lbs", 180.5, "[lb_av]", "2150-02-01"),
    ("1", "mimic-omr|bmi-kg-m2", 27.4, "kg/m2", "2150-02-01"),
    ("1", "mimic-lab|50912", 0.9, "mg/dL", "2150-03-01T08:15:00Z"),
    ("2", "mimic-omr|height-inches", 70.0, "[in_i]", "2160-04-01"),
]


def write_mimic_iv_results(root):
    """The MIMIC-IV folder with labevents carrying results (the rule's rows have no value),
    d_labitems (no loinc_code, as in MIMIC-IV 2.x) and omr."""
    write_mimic_iv(root)
    hosp = root / "hosp"
    columns = ["subject_id", "hadm_id", "itemid", "charttime", "value", "valuenum", "valueuom"]
    labs = pd.DataFrame(
        [(SUBJECT.get(h, "1"), h, "51221", c, "", "", "%") for h, c, _ in LABS] + LAB_RESULTS,
        columns=columns,
    )
    labs["flag"] = [f for _, _, f in LABS] + [""] * len(LAB_RESULTS)
    labs.to_csv(hosp / "labevents.csv.gz", index=False, compression="gzip")
    pd.DataFrame(
        [("50912", "Creatinine", "Blood", "Chemistry"), ("51221", "Hematocrit", "Blood", "Hem")],
        columns=["itemid", "label", "fluid", "category"],
    ).to_csv(hosp / "d_labitems.csv.gz", index=False, compression="gzip")
    pd.DataFrame(
        OMR, columns=["subject_id", "chartdate", "seq_num", "result_name", "result_value"]
    ).to_csv(hosp / "omr.csv.gz", index=False, compression="gzip")
    return root


def observation_list(out) -> list:
    frame = pd.read_csv(out / "observations.csv", dtype=str, keep_default_na=False)
    return [(r.patient_id, r.code, float(r.value), r.unit, r.timestamp) for r in frame.itertuples()]


def test_mimic_iv_labevents_and_omr_observations(tmp_path):
    report = import_mimic(write_mimic_iv_results(tmp_path / "src"), tmp_path / "out")

    assert observation_list(tmp_path / "out") == KEPT_IV  # times as given: date-time or date
    tables = read_tables(tmp_path / "out")  # validates
    assert tables.observations["timestamp"].iloc[0] == pd.Timestamp("2150-01-20 11:00", tz="UTC")
    assert {k: v for k, v in report.dropped.items() if k.startswith("observations")} == {
        "observations (labevents): no value": len(LABS),  # the rule's rows carry no result
        "observations (labevents): not numeric (text result)": 2,
        "observations (labevents): censored value such as <5 or >300 (a bound, not a "
        "measurement)": 1,
        "observations (labevents): comma in the value (decimal comma or thousands separator: "
        "ambiguous)": 1,
        "observations (labevents): no time": 1,
        "observations (labevents): patient not among the imported patients": 1,
        "observations (omr): blood pressure not written systolic/diastolic (120/80)": 1,
        "observations (omr): censored value such as <5 or >300 (a bound, not a measurement)": 1,
        "observations (omr): no value": 1,
    }
    assert report.derived["observations kept (labevents)"] == 2
    assert report.derived["observations kept (omr)"] == 5
    assert report.derived["observation codes (omr)"] == 5
    assert outcome_map(tmp_path / "out") == EXPECTED_IV  # the lab rule is unchanged

    import_mimic(tmp_path / "src", tmp_path / "off", include_observations=False)
    assert read_tables(tmp_path / "off").observations is None
    assert outcome_map(tmp_path / "off") == EXPECTED_IV


def test_mimic_iii_labevents_with_loinc_codes(tmp_path):
    src = write_mimic_iii(tmp_path / "src")
    pd.DataFrame(
        [
            ("1", "1", "100", "50912", "2150-01-01 11:00:00", "1.1", "1.1", "mg/dL", ""),
            ("2", "1", "100", "50912", "2150-01-02 11:00:00", "1.6", "1.6", "mg/dL", "abnormal"),
            ("3", "2", "200", "51006", "2160-05-01 11:00:00", "12", "12", "mg/dL", ""),
            ("4", "2", "200", "99999", "2160-05-01 11:00:00", "7", "7", "", ""),
            ("5", "2", "200", "51006", "2160-05-01 12:00:00", "GREATER THAN 100", "", "", ""),
        ],
        columns=[
            "ROW_ID",
            "SUBJECT_ID",
            "HADM_ID",
            "ITEMID",
            "CHARTTIME",
            "VALUE",
            "VALUENUM",
            "VALUEUOM",
            "FLAG",
        ],
    ).to_csv(src / "LABEVENTS.csv", index=False)
    pd.DataFrame(
        [
            ("1", "50912", "Creatinine", "Blood", "Chemistry", "2160-0"),
            ("2", "51006", "Urea Nitrogen", "Blood", "Chemistry", "3094-0"),
            ("3", "51514", "Urobilinogen", "Urine", "Hematology", ""),
        ],
        columns=["ROW_ID", "ITEMID", "LABEL", "FLUID", "CATEGORY", "LOINC_CODE"],
    ).to_csv(src / "D_LABITEMS.csv", index=False)
    report = import_mimic(src, tmp_path / "out")

    assert observation_list(tmp_path / "out") == [
        ("1", "loinc|2160-0", 1.1, "mg/dL", "2150-01-01T11:00:00Z"),
        ("1", "loinc|2160-0", 1.6, "mg/dL", "2150-01-02T11:00:00Z"),
        ("2", "loinc|3094-0", 12.0, "mg/dL", "2160-05-01T11:00:00Z"),
        ("2", "mimic-lab|99999", 7.0, "", "2160-05-01T11:00:00Z"),  # not in D_LABITEMS
    ]
    assert report.dropped["observations (labevents): not numeric (text result)"] == 1
    assert report.derived["lab itemids coded as LOINC (d_labitems.loinc_code)"] == 2
    assert read_tables(tmp_path / "out").observations["value"].tolist() == [1.1, 1.6, 12.0, 7.0]
    assert "labevents: absent; no lab observations" not in report.warnings


def test_diagnosis_onsets_are_the_admission_times(tmp_path):
    import_mimic(write_mimic_iv(tmp_path / "iv"), tmp_path / "out_iv")
    import_mimic(write_mimic_iii(tmp_path / "iii"), tmp_path / "out_iii")
    for out, condition, expected in (
        ("out_iv", "icd10|I10", "2150-01-01T10:00:00Z"),  # admission 100
        ("out_iv", "icd9|4019", "2150-01-20T10:00:00Z"),  # admission 101
        ("out_iii", "icd9|4019", "2150-01-20T10:00:00Z"),
        ("out_iii", "icd9|25000", "2150-01-01T10:00:00Z"),
    ):
        written = pd.read_csv(tmp_path / out / "patient_conditions.csv", dtype=str)
        onset = written.set_index(["patient_id", "condition_id"])["timestamp"]
        assert onset[("1", condition)] == expected, (out, condition)
    parsed = read_tables(tmp_path / "out_iv").patient_conditions
    assert parsed["timestamp"].notna().all()


def test_cli_no_observations(tmp_path, import_cli):
    src = write_mimic_iv_results(tmp_path / "src")
    args = import_cli(
        ["import", "mimic", str(src), "--out", str(tmp_path / "o"), "--no-observations"]
    )
    assert args.func(args) == 0
    assert not (tmp_path / "o" / "observations.csv").exists()


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("HYDROmorphone (Dilaudid)", "hydromorphone"),
        ("Vancomycin HCl", "vancomycin"),
        ("Potassium Chloride", "potassium chloride"),
        ("Albuterol 0.083% Neb Soln", "albuterol"),
        ("Metoprolol Tartrate", "metoprolol"),
        ("Magnesium Sulfate", "magnesium sulfate"),
        ("OxyCODONE (Immediate Release) ", "oxycodone"),
        ("Bag", ""),
    ],
)
def test_normalise_drug(raw, expected):
    assert normalise_drug(raw) == expected


# --- the shared demos --------------------------------------------------------------------------


def _independent_admission_rules(admissions: pd.DataFrame) -> dict:
    """hadm -> 'died'/'readmitted'/'other', computed with a plain loop over raw admissions."""
    result = {}
    admissions = admissions.assign(
        admit=pd.to_datetime(admissions["admittime"]), disch=pd.to_datetime(admissions["dischtime"])
    )
    for _, stays in admissions.groupby("subject_id"):
        stays = stays.sort_values("admit").to_dict("records")
        for i, stay in enumerate(stays):
            if stay["hospital_expire_flag"] == "1":
                result[stay["hadm_id"]] = "died"
                continue
            gap = (
                (stays[i + 1]["admit"] - stay["disch"]).total_seconds() / 86400
                if i + 1 < len(stays)
                else None
            )
            result[stay["hadm_id"]] = (
                "readmitted" if gap is not None and 0 <= gap <= 30 else "other"
            )
    return result


def _check_demo(src, out, report, admissions, diagnoses, code_column, system):
    tables = read_tables(out)
    outcomes = pd.read_csv(out / "outcomes.csv", dtype=str, keep_default_na=False)
    assert len(tables.outcomes) == len(outcomes) == report.rows_kept["outcomes"]
    # One outcome per admission, shared by all its treatments (the attribution rule).
    assert (outcomes.groupby("hadm_id")["outcome"].nunique() == 1).all()
    expected = _independent_admission_rules(admissions)
    got = outcomes.drop_duplicates("hadm_id").set_index("hadm_id")["rule"]
    for hadm, rule in got.items():
        assert {
            "died": rule == "died_in_hospital",
            "readmitted": rule == "readmitted",
            "other": rule not in ("died_in_hospital", "readmitted"),
        }[expected[hadm]], hadm
    # The indication is the raw diagnosis with the lowest seq_num.
    diagnoses = diagnoses.assign(seq=diagnoses["seq_num"].astype(int)).sort_values("seq")
    primary = diagnoses.drop_duplicates("hadm_id").set_index("hadm_id")
    for hadm, condition in (
        outcomes.drop_duplicates("hadm_id").set_index("hadm_id")["condition_id"].items()
    ):
        row = primary.loc[hadm]
        assert condition == f"{system(row)}|{row[code_column]}"
    return outcomes


def _check_onsets(out, admissions, diagnoses, code_column, system):
    """Every diagnosis's timestamp is the earliest admittime of the admissions coding it."""
    admit = admissions.set_index("hadm_id")["admittime"]
    earliest = {}
    for row in diagnoses.to_dict("records"):
        key = (row["subject_id"], f"{system(row)}|{row[code_column]}")
        time = pd.Timestamp(admit[row["hadm_id"]], tz="UTC")
        earliest[key] = min(earliest.get(key, time), time)
    written = pd.read_csv(out / "patient_conditions.csv", dtype=str, keep_default_na=False)
    assert len(written) == len(earliest)
    for row in written.itertuples():
        expected = earliest[(row.patient_id, row.condition_id)]
        assert row.timestamp == expected.strftime("%Y-%m-%dT%H:%M:%SZ"), row


@pytest.mark.shared_data
def test_mimic_iii_demo(tmp_path):
    src = shared_dataset("mimic3_demo_1.4")
    report = import_mimic(src, tmp_path / "out")
    admissions = pd.read_csv(src / "ADMISSIONS.csv", dtype=str, keep_default_na=False)
    diagnoses = pd.read_csv(src / "DIAGNOSES_ICD.csv", dtype=str, keep_default_na=False)
    outcomes = _check_demo(
        src, tmp_path / "out", report, admissions, diagnoses, "icd9_code", lambda row: "icd9"
    )

    assert report.layout == "mimic-iii" and report.rows_read["admissions"] == 129
    died = set(admissions.loc[admissions["hospital_expire_flag"] == "1", "hadm_id"])
    assert set(outcomes.loc[outcomes["adverse"] == "1", "hadm_id"]) <= died
    assert report.outcomes["patients"] >= 90
    _check_onsets(tmp_path / "out", admissions, diagnoses, "icd9_code", lambda row: "icd9")
    # This demo copy has no LABEVENTS: no observations table, and the report says why.
    assert not (tmp_path / "out" / "observations.csv").exists()
    assert "labevents: absent; no lab observations" in report.warnings


@pytest.mark.shared_data
def test_mimic_iv_demo(tmp_path):
    src = shared_dataset("mimic4_demo_2.2")
    report = import_mimic(src, tmp_path / "out")
    admissions = pd.read_csv(src / "hosp" / "admissions.csv.gz", dtype=str, keep_default_na=False)
    diagnoses = pd.read_csv(src / "hosp" / "diagnoses_icd.csv.gz", dtype=str, keep_default_na=False)
    outcomes = _check_demo(
        src,
        tmp_path / "out",
        report,
        admissions,
        diagnoses,
        "icd_code",
        lambda row: f"icd{row['icd_version']}",
    )

    assert report.layout == "mimic-iv" and report.rows_read["admissions"] == 275
    ingredients = read_tables(tmp_path / "out").treatments.set_index("treatment_id")["ingredients"]
    assert ingredients["drug|vancomycin"] == "drug|vancomycin"  # the id is the ingredient
    held = ingredients.str.split(";")
    combined = held[held.map(len) > 1]
    assert {"drug|acetaminophen", "drug|oxycodone"} <= set(combined.explode())
    assert report.rows_read["labevents"] == 107727
    assert "labs_worsened" in set(outcomes["rule"])
    assert {c.split("|")[0] for c in outcomes["condition_id"] if c} == {"icd9", "icd10"}
    _check_onsets(
        tmp_path / "out",
        admissions,
        diagnoses,
        "icd_code",
        lambda row: "icd" + row["icd_version"],
    )

    # Observations, counted independently from the raw files.
    labs = pd.read_csv(src / "hosp" / "labevents.csv.gz", dtype=str, keep_default_na=False)
    numeric = labs[labs["valuenum"] != ""]
    observations = read_tables(tmp_path / "out").observations
    from_labs = observations[observations["code"].str.startswith("mimic-lab|")]
    duplicates = numeric.duplicated(["subject_id", "itemid", "charttime", "valuenum", "valueuom"])
    assert len(from_labs) == len(numeric) - duplicates.sum() == 95127
    assert from_labs["code"].nunique() == numeric["itemid"].nunique() == 318
    assert report.dropped["observations (labevents): no value"] == 9588
    assert report.dropped["observations (labevents): not numeric (text result)"] == 2881
    assert (
        report.dropped[
            "observations (labevents): censored value such as <5 or >300 (a bound, not a "
            "measurement)"
        ]
        == 12  # >300, >50, <1, >=1.035 in value, valuenum empty
    )
    omr = pd.read_csv(src / "hosp" / "omr.csv.gz", dtype=str, keep_default_na=False)
    pressure = omr["result_name"].str.startswith("Blood Pressure")
    from_omr = observations[observations["code"].str.startswith("mimic-omr|")]
    assert report.derived["observations kept (omr)"] == len(from_omr) == 3701
    assert len(omr) + pressure.sum() == 3836 == 3701 + 135  # 135 exact repeats dropped
    assert sorted(from_omr["code"].unique()) == sorted(
        [
            "mimic-omr|bmi-kg-m2",
            "mimic-omr|height-inches",
            "mimic-omr|weight-lbs",
        ]
        + [
            f"mimic-omr|blood-pressure{position}-{side}"
            for position in ("", "-lying", "-sitting", "-standing-1-min", "-standing-3-mins")
            for side in ("systolic", "diastolic")
        ]
    )
    systolic = from_omr[from_omr["code"] == "mimic-omr|blood-pressure-systolic"]["value"]
    diastolic = from_omr[from_omr["code"] == "mimic-omr|blood-pressure-diastolic"]["value"]
    assert systolic.median() > diastolic.median() > 40
    assert len(observations) == 98828 and observations["code"].nunique() == 331
    assert observations["timestamp"].notna().all()
    assert observations["patient_id"].nunique() == 100
