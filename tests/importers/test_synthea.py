"""Synthea importer: a hand-written 3-patient export whose outcomes are known, and the shared sets."""

from __future__ import annotations

import json
from collections import defaultdict

import pandas as pd
import pytest

from recommender.data.tables import read_tables
from recommender.exceptions import DataValidationError, ParameterError
from recommender.importers import import_synthea

from .conftest import shared_dataset

PEN, HCTZ, LISINOPRIL, APAP, AMOX, ALBUTEROL = (
    "834061",
    "310798",
    "314076",
    "313782",
    "308182",
    "745679",
)
STREP, HTN, BRONCHITIS, SINUSITIS, ASTHMA = (
    "43878008",
    "59621000",
    "10509002",
    "444814009",
    "195967001",
)

# (patient, code, description, start, stop, reason code)
MEDICATIONS = [
    ("A", PEN, "Penicillin V Potassium 250 MG Oral Tablet", "2010-01-01", "2010-01-11", STREP),
    ("A", HCTZ, "Hydrochlorothiazide 25 MG Oral Tablet", "2005-01-01", "2006-01-01", HTN),
    ("A", HCTZ, "Hydrochlorothiazide 25 MG Oral Tablet", "2006-01-01", "2007-01-01", HTN),
    ("A", LISINOPRIL, "lisinopril 10 MG Oral Tablet", "2005-06-01", "", HTN),
    ("A", APAP, "Acetaminophen 325 MG Oral Tablet", "2010-01-01", "2010-01-05", ""),
    ("B", APAP, "Acetaminophen 325 MG Oral Tablet", "2015-03-01", "2015-03-08", BRONCHITIS),
    ("B", AMOX, "Amoxicillin 250 MG Oral Capsule", "2012-01-01", "2012-01-10", SINUSITIS),
    (
        "C",
        ALBUTEROL,
        "120 ACTUAT Albuterol 0.09 MG/ACTUAT Metered Dose Inhaler",
        "2010-01-01",
        "",
        ASTHMA,
    ),
    ("C", PEN, "Penicillin V Potassium 250 MG Oral Tablet", "2011-05-01", "2011-05-05", STREP),
]
# (patient, code, description, start, stop)
CONDITIONS = [
    ("A", STREP, "Streptococcal sore throat (disorder)", "2010-01-01", "2010-01-10"),
    ("A", HTN, "Hypertension", "2005-01-01", ""),
    ("B", BRONCHITIS, "Acute bronchitis (disorder)", "2015-03-01", ""),
    ("B", SINUSITIS, "Viral sinusitis (disorder)", "2012-01-01", "2012-08-01"),
    ("C", STREP, "Streptococcal sore throat (disorder)", "2009-02-01", "2009-02-08"),
    ("C", STREP, "Streptococcal sore throat (disorder)", "2011-05-01", "2011-05-08"),
]
# (patient, code, system, description, start)
ALLERGIES = [
    ("A", "91935009", "SNOMED-CT", "Allergy to peanuts", "2010-01-05"),
    ("C", "7984", "RxNorm", "Penicillin V", "2011-05-03"),
]
PATIENTS = [
    ("A", "1980-02-03", "", "F", "white", "nonhispanic"),
    ("B", "1950-07-08", "2015-03-10", "M", "black", "nonhispanic"),
    ("C", "1990-11-12", "", "F", "asian", "hispanic"),
]

#: (patient, treatment, indication) -> (outcome, adverse, rule), derived by hand from the rules.
EXPECTED = {
    ("A", f"rxnorm|{PEN}", f"snomed|{STREP}"): (1.0, 0, "resolved"),  # ended after 9 days
    ("A", f"rxnorm|{HCTZ}", f"snomed|{HTN}"): (0.0, 0, "switched"),  # lisinopril 151 d later
    ("A", f"rxnorm|{LISINOPRIL}", f"snomed|{HTN}"): (0.5, 0, "chronic"),  # open, no switch
    ("B", f"rxnorm|{APAP}", f"snomed|{BRONCHITIS}"): (-1.0, 1, "adverse"),  # died 9 days later
    ("C", f"rxnorm|{ALBUTEROL}", f"snomed|{ASTHMA}"): (0.5, 0, "chronic"),  # no asthma row
    ("C", f"rxnorm|{PEN}", f"snomed|{STREP}"): (-1.0, 1, "adverse"),  # penicillin allergy
}


def _day(text: str, v3: bool) -> str:
    return f"{text}T08:30:00Z" if v3 and text else text


def write_export(folder, version: str = "v2", procedures=(), careplans=()):
    """The 3-patient export in the v2 (floats, gzip) or v3 (ISO date-times, SYSTEM) layout."""
    v3 = version == "v3"
    folder.mkdir(parents=True, exist_ok=True)
    patients = pd.DataFrame(
        PATIENTS,
        columns=["Id" if v3 else "ID", "BIRTHDATE", "DEATHDATE", "GENDER", "RACE", "ETHNICITY"],
    )
    if v3:
        patients["COUNTY"] = "Douglas County"
    patients.to_csv(folder / "patients.csv", index=False)
    conditions = pd.DataFrame(
        CONDITIONS, columns=["PATIENT", "CODE", "DESCRIPTION", "START", "STOP"]
    ).assign(ENCOUNTER="e")
    conditions.to_csv(folder / "conditions.csv.gz", index=False, compression="gzip")
    meds = pd.DataFrame(
        MEDICATIONS, columns=["PATIENT", "CODE", "DESCRIPTION", "START", "STOP", "REASONCODE"]
    )
    meds["START"] = [_day(t, v3) for t in meds["START"]]
    meds["STOP"] = [_day(t, v3) for t in meds["STOP"]]
    if not v3:  # the IBM subset writes reason codes as floats
        meds["REASONCODE"] = [f"{c}.0" if c else "" for c in meds["REASONCODE"]]
    meds["REASONDESCRIPTION"] = ""
    meds["PAYER" if v3 else "COST"] = "1"
    meds.to_csv(folder / "medications.csv", index=False)
    allergies = pd.DataFrame(
        ALLERGIES, columns=["PATIENT", "CODE", "SYSTEM", "DESCRIPTION", "START"]
    ).assign(STOP="", ENCOUNTER="e")
    if not v3:
        allergies = allergies.drop(columns="SYSTEM")
    allergies.to_csv(folder / "allergies.csv", index=False)
    columns = ["PATIENT", "CODE", "DESCRIPTION", "START", "STOP", "REASONCODE"]
    if procedures:
        pd.DataFrame(procedures, columns=columns).to_csv(folder / "procedures.csv", index=False)
    if careplans:
        pd.DataFrame(careplans, columns=columns).to_csv(folder / "careplans.csv", index=False)
    return folder


def outcome_map(out) -> dict:
    frame = pd.read_csv(out / "outcomes.csv", dtype=str, keep_default_na=False)
    return {
        (r.patient_id, r.treatment_id, r.condition_id): (float(r.outcome), int(r.adverse), r.rule)
        for r in frame.itertuples()
    }


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_known_outcomes_of_the_hand_written_export(tmp_path, version):
    src = write_export(tmp_path / "src", version)
    report = import_synthea(src, tmp_path / "out")

    assert report.layout == f"synthea-{version}"
    assert outcome_map(tmp_path / "out") == EXPECTED
    tables = read_tables(tmp_path / "out")
    hctz = tables.outcomes[tables.outcomes["treatment_id"] == f"rxnorm|{HCTZ}"].iloc[0]
    assert hctz["timestamp"].strftime("%Y-%m-%d") == "2005-01-01"  # the course start
    assert int(hctz["prescriptions"]) == 2  # the renewal merged into one course
    assert report.dropped["medications: no REASONCODE (no indication)"] == 1
    assert report.dropped["courses: no outcome evidence (no rule applied)"] == 1  # amoxicillin
    assert report.unmatched == {
        "medications: REASONCODE without a condition episode of that code on or before START": 1
    }
    assert report.outcomes["distribution"] == {"-1": 2, "0": 1, "0.5": 2, "1": 1}
    assert report.rows_read == {"patients": 3, "conditions": 6, "medications": 9, "allergies": 2}


def test_patients_conditions_and_dictionaries(tmp_path):
    import_synthea(write_export(tmp_path / "src", "v3"), tmp_path / "out")
    tables = read_tables(tmp_path / "out")

    patients = tables.patients.set_index("patient_id")
    assert patients.loc["B", "sex"] == "M" and patients.loc["B", "birth_year"] == 1950
    assert patients.loc["B", "death_date"] == "2015-03-10"
    assert patients.loc["C", "ethnicity"] == "hispanic" and patients.loc["C", "race"] == "asian"
    pairs = {(r.patient_id, r.condition_id, r.kind) for r in tables.patient_conditions.itertuples()}
    assert pairs == {
        ("A", f"snomed|{STREP}", "diagnosis"),
        ("A", f"snomed|{HTN}", "diagnosis"),
        ("A", "snomed|91935009", "allergy"),
        ("B", f"snomed|{BRONCHITIS}", "diagnosis"),
        ("B", f"snomed|{SINUSITIS}", "diagnosis"),
        ("C", f"snomed|{STREP}", "diagnosis"),
        ("C", "rxnorm|7984", "allergy"),
    }
    onset = tables.patient_conditions.set_index(["patient_id", "condition_id"])["onset"]
    assert onset[("C", f"snomed|{STREP}")] == "2009-02-01"  # the earliest episode
    names = tables.conditions.set_index("condition_id")["name"]
    assert names["rxnorm|7984"] == "Allergy to Penicillin V"
    assert names[f"snomed|{ASTHMA}"] == f"snomed|{ASTHMA}"  # no name anywhere: the id
    assert set(tables.treatments["treatment_id"]) == {k[1] for k in EXPECTED}
    ingredients = tables.treatments.set_index("treatment_id")["ingredients"]
    assert ingredients[f"rxnorm|{HCTZ}"] == "drug|hydrochlorothiazide"
    assert ingredients[f"rxnorm|{PEN}"] == "drug|penicillin v"
    assert ingredients[f"rxnorm|{APAP}"] == "drug|acetaminophen"


def test_rule_parameters_change_the_outcomes(tmp_path):
    src = write_export(tmp_path / "src")
    import_synthea(src, tmp_path / "any", allergy_match="any")
    assert outcome_map(tmp_path / "any")[("A", f"rxnorm|{PEN}", f"snomed|{STREP}")][:2] == (-1.0, 1)

    import_synthea(src, tmp_path / "drop", chronic_outcome=None, resolution_window_days=5)
    kept = outcome_map(tmp_path / "drop")
    assert all(rule != "chronic" for *_, rule in kept.values())
    assert ("A", f"rxnorm|{PEN}", f"snomed|{STREP}") not in kept  # resolved after 9 > 5 days

    import_synthea(src, tmp_path / "short", switch_window_days=100)  # lisinopril after 151 days
    assert outcome_map(tmp_path / "short")[("A", f"rxnorm|{HCTZ}", f"snomed|{HTN}")][2] == "chronic"

    with pytest.raises(ParameterError, match="'switch_window_days'.*Got -1"):
        import_synthea(src, tmp_path / "bad", switch_window_days=-1)


def test_procedures_and_careplans_are_optional_treatments_that_never_switch(tmp_path):
    procedures = [
        ("A", "117015009", "Throat culture (procedure)", "2010-01-02", "2010-01-02", STREP)
    ]
    careplans = [("B", "53950000", "Respiratory therapy", "2015-03-01", "", BRONCHITIS)]
    src = write_export(tmp_path / "src", procedures=procedures, careplans=careplans)
    import_synthea(src, tmp_path / "plain")
    assert outcome_map(tmp_path / "plain") == EXPECTED

    report = import_synthea(src, tmp_path / "out", include_procedures=True, include_careplans=True)
    got = outcome_map(tmp_path / "out")
    assert got[("A", "snomed|117015009", f"snomed|{STREP}")] == (1.0, 0, "resolved")
    assert got[("B", "snomed|53950000", f"snomed|{BRONCHITIS}")] == (-1.0, 1, "adverse")
    assert got[("A", f"rxnorm|{PEN}", f"snomed|{STREP}")] == (1.0, 0, "resolved")  # no switch
    assert report.rows_read["procedures"] == 1 and report.rows_read["careplans"] == 1


def test_report_files_are_written_with_the_tables(tmp_path):
    report = import_synthea(write_export(tmp_path / "src"), tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "import_report.json").read_text())
    assert saved["rows_kept"]["outcomes"] == 6 == report.rows_kept["outcomes"]
    assert saved["outcomes"]["by_rule"] == {
        "adverse": 2,
        "chronic": 2,
        "resolved": 1,
        "switched": 1,
    }
    markdown = (tmp_path / "out" / "import_report.md").read_text()
    assert "## Dropped" in markdown and "no REASONCODE" in markdown


def test_missing_required_file_names_it_and_leaves_the_output_alone(tmp_path):
    src = write_export(tmp_path / "src")
    (src / "medications.csv").unlink()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("old")
    with pytest.raises(DataValidationError, match="medications.csv"):
        import_synthea(src, tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "old"


def test_cli_subcommand_runs_the_import(tmp_path, import_cli, capsys):
    src = write_export(tmp_path / "src")
    args = import_cli(
        [
            "import",
            "synthea",
            str(src),
            "--out",
            str(tmp_path / "out"),
            "--chronic-outcome",
            "drop",
            "--include-procedures",
        ]
    )
    assert args.func(args) == 0
    assert "synthea (synthea-v2): 4 outcome rows" in capsys.readouterr().out
    assert read_tables(tmp_path / "out").outcomes["outcome"].tolist().count(0.5) == 0


# --- observations and onsets ------------------------------------------------------------------

# (patient, code, description, value, units, type, date): what each row tests is on its right.
OBSERVATIONS = [
    ("A", "8302-2", "Body Height", "170.2", "cm", "numeric", "2010-01-01"),  # kept
    ("A", "8480-6", "Systolic Blood Pressure", "120", "mm[Hg]", "numeric", "2010-01-01"),  # kept
    ("A", "8480-6", "Systolic Blood Pressure", "120", "mm[Hg]", "numeric", "2010-01-01"),  # dupe
    ("A", "72166-2", "Tobacco smoking status", "Never smoker", "{nominal}", "text", "2010-01-01"),
    ("A", "2093-3", "Cholesterol", "1,234", "mg/dL", "numeric", "2010-01-01"),  # comma: dropped
    ("B", "6299-2", "Urea nitrogen", "<5", "mg/dL", "numeric", "2015-03-02"),  # censored
    ("B", "QALY", "QALY", "20.5", "a", "numeric", "2015-03-02"),  # not a LOINC code
    ("B", "39156-5", "Body mass index", " 25.3 ", "kg/m2", "text", "2015-03-02"),  # number: kept
    ("C", "29463-7", "Body Weight", "-0.5e1", "kg", "numeric", ""),  # no DATE
    ("Z", "8302-2", "Body Height", "180", "cm", "numeric", "2010-01-01"),  # unknown patient
]
#: (patient, code, value, unit, day) kept, in output order (patient, then time).
KEPT_OBSERVATIONS = [
    ("A", "loinc|8302-2", 170.2, "cm", "2010-01-01"),
    ("A", "loinc|8480-6", 120.0, "mm[Hg]", "2010-01-01"),
    ("B", "loinc|39156-5", 25.3, "kg/m2", "2015-03-02"),
]


def write_observations(folder, version: str = "v2"):
    """observations.csv: v2 without CATEGORY and plain dates; v3 with CATEGORY, ISO times, Z."""
    v3 = version == "v3"
    frame = pd.DataFrame(
        OBSERVATIONS, columns=["PATIENT", "CODE", "DESCRIPTION", "VALUE", "UNITS", "TYPE", "DATE"]
    )
    frame["DATE"] = [_day(t, v3) for t in frame["DATE"]]
    frame.insert(2, "ENCOUNTER", "e")
    if v3:
        frame.insert(3, "CATEGORY", "vital-signs")
    columns = ["DATE", "PATIENT", "ENCOUNTER"] + (["CATEGORY"] if v3 else [])
    columns += ["CODE", "DESCRIPTION", "VALUE", "UNITS", "TYPE"]
    frame[columns].to_csv(folder / "observations.csv", index=False)
    return folder


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_numeric_observations_are_kept_with_their_units_and_times(tmp_path, version):
    src = write_observations(write_export(tmp_path / "src", version), version)
    report = import_synthea(src, tmp_path / "out")

    observations = pd.read_csv(tmp_path / "out" / "observations.csv", dtype=str)
    assert list(observations.columns) == ["patient_id", "code", "value", "unit", "timestamp"]
    expected = [(p, c, v, u, _day(d, version == "v3")) for p, c, v, u, d in KEPT_OBSERVATIONS]
    got = [
        (r.patient_id, r.code, float(r.value), r.unit, r.timestamp)
        for r in observations.itertuples()
    ]
    assert got == expected  # v2 dates stay dates, v3 times stay "2010-01-01T08:30:00Z"
    tables = read_tables(tmp_path / "out")  # validates with the canonical reader
    assert tables.observations["timestamp"].iloc[0] == pd.Timestamp(
        _day("2010-01-01", version == "v3") or "2010-01-01", tz="UTC"
    )
    source = "observations (observations)"
    assert {k: v for k, v in report.dropped.items() if k.startswith(source)} == {
        f"{source}: text result (TYPE text)": 1,
        f"{source}: comma in the value (decimal comma or thousands separator: ambiguous)": 1,
        f"{source}: censored value such as <5 or >300 (a bound, not a measurement)": 1,
        f"{source}: CODE is not a LOINC code (unknown code system)": 1,
        f"{source}: no time": 1,
        f"{source}: patient not among the imported patients": 1,
        f"{source}: exact duplicate row": 1,
    }
    assert report.rows_read["observations"] == len(OBSERVATIONS)
    assert report.rows_kept["observations"] == 3
    assert report.derived["observations kept (observations)"] == 3
    assert report.derived["observation codes (observations)"] == 3
    assert outcome_map(tmp_path / "out") == EXPECTED  # the outcomes do not change


def test_no_observations_file_or_option_means_no_observations_table(tmp_path):
    report = import_synthea(write_export(tmp_path / "src"), tmp_path / "out")
    assert not (tmp_path / "out" / "observations.csv").exists()
    assert "observations: no observations.csv(.gz); no observations table" in report.warnings

    write_observations(tmp_path / "src")
    import_synthea(tmp_path / "src", tmp_path / "off", include_observations=False)
    assert read_tables(tmp_path / "off").observations is None


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_onsets_are_written_as_given(tmp_path, version):
    """patient_conditions.timestamp: the earliest START, a date as a date, a time in UTC."""
    v3 = version == "v3"
    src = write_export(tmp_path / "src", version)
    if v3:  # newer exports write date-times with Z in conditions and allergies too
        for name in ("conditions.csv.gz", "allergies.csv"):
            frame = pd.read_csv(src / name, dtype=str, keep_default_na=False)
            frame["START"] = [_day(t, True) for t in frame["START"]]
            frame.to_csv(src / name, index=False)
    import_synthea(src, tmp_path / "out")

    written = pd.read_csv(tmp_path / "out" / "patient_conditions.csv", dtype=str)
    onset = written.set_index(["patient_id", "condition_id"])["timestamp"]
    assert onset[("C", f"snomed|{STREP}")] == _day("2009-02-01", v3)  # the earliest episode
    assert onset[("A", f"snomed|{HTN}")] == _day("2005-01-01", v3)
    penicillin = "rxnorm|7984" if v3 else "snomed|7984"  # v2 has no SYSTEM column
    assert onset[("C", penicillin)] == _day("2011-05-03", v3)  # an allergy's START
    assert onset.notna().all()
    parsed = read_tables(tmp_path / "out").patient_conditions
    parsed = parsed.set_index(["patient_id", "condition_id"])["timestamp"]
    assert parsed[("A", "snomed|91935009")] == pd.Timestamp(_day("2010-01-05", v3), tz="UTC")


def test_cli_no_observations(tmp_path, import_cli):
    src = write_observations(write_export(tmp_path / "src"))
    out = tmp_path / "out"
    args = import_cli(["import", "synthea", str(src), "--out", str(out), "--no-observations"])
    assert args.func(args) == 0
    assert not (out / "observations.csv").exists()


# --- the shared Synthea sets -------------------------------------------------------------------


def _raw(folder, name):
    path = folder / f"{name}.csv"
    path = path if path.exists() else folder / f"{name}.csv.gz"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.columns = [c.upper() for c in frame.columns]
    return frame


def _check_resolved_against_raw(src, outcomes, window=90):
    """Every 'resolved' course: the raw episode (latest same-code START on or before) ends in time."""
    conditions = _raw(src, "conditions")
    episodes = defaultdict(list)
    for row in conditions.itertuples():
        episodes[(row.PATIENT, row.CODE)].append((row.START[:10], row.STOP[:10]))
    resolved = outcomes[outcomes["rule"] == "resolved"]
    assert len(resolved) > 0
    for row in resolved.itertuples():
        day = row.timestamp[:10]
        starts = [
            e for e in episodes[(row.patient_id, row.condition_id.split("|")[1])] if e[0] <= day
        ]
        start, stop = max(starts)
        lag = (pd.Timestamp(stop) - pd.Timestamp(day)).days
        assert 0 <= lag <= window, (row, start, stop)


def _check_common(out, report):
    tables = read_tables(out)  # the whole folder passes the canonical reader
    outcomes = pd.read_csv(out / "outcomes.csv", dtype=str, keep_default_na=False)
    values = outcomes["outcome"].astype(float)
    assert set(values) <= {-1.0, 0.0, 0.5, 1.0}
    assert ((outcomes["adverse"] == "1") == (values == -1.0)).all()
    assert len(tables.outcomes) == report.rows_kept["outcomes"]
    assert sum(report.outcomes["distribution"].values()) == len(outcomes)
    return outcomes


def _check_onsets(src, out, report):
    """Every diagnosis and allergy has an onset: the earliest raw START of that patient and code
    (the shared sets have no observations.csv, so no observations table)."""
    written = pd.read_csv(out / "patient_conditions.csv", dtype=str, keep_default_na=False)
    assert (written["timestamp"] != "").all()
    for name, kind in (("conditions", "diagnosis"), ("allergies", "allergy")):
        raw = _raw(src, name)
        earliest = raw.groupby(["PATIENT", "CODE"])["START"].min()
        rows = written[written["kind"] == kind]
        codes = rows["condition_id"].str.split("|").str[1]
        expected = [earliest[(p, c)] for p, c in zip(rows["patient_id"], codes)]
        assert rows["timestamp"].tolist() == expected
    assert not (out / "observations.csv").exists()
    assert "observations: no observations.csv(.gz); no observations table" in report.warnings


@pytest.mark.shared_data
def test_california_v2_set(tmp_path):
    src = shared_dataset("synthea_ibm_california_1000")
    report = import_synthea(src, tmp_path / "out")
    outcomes = _check_common(tmp_path / "out", report)

    meds = _raw(src, "medications")
    assert report.layout == "synthea-v2"
    assert report.rows_read["medications"] == len(meds) == 17922
    assert report.dropped["medications: no REASONCODE (no indication)"] == int(
        (meds["REASONCODE"] == "").sum()
    )
    assert not outcomes["condition_id"].str.endswith(".0").any()  # float codes cleaned
    _check_resolved_against_raw(src, outcomes)
    assert report.outcomes["patients"] > 800 and report.outcomes["distribution"]["1"] > 3000
    _check_onsets(src, tmp_path / "out", report)
    # The example: the 25 MG and the 6.25 MG products hold one ingredient.
    ingredients = read_tables(tmp_path / "out").treatments.set_index("treatment_id")["ingredients"]
    assert (
        ingredients["rxnorm|316049"] == ingredients["rxnorm|316052"] == "drug|hydrochlorothiazide"
    )
    assert (ingredients != "").all()


@pytest.mark.shared_data
def test_nebraska_v3_set_with_procedures_and_careplans(tmp_path):
    src = shared_dataset("synthea_nebraska_111")
    report = import_synthea(src, tmp_path / "out", include_procedures=True, include_careplans=True)
    outcomes = _check_common(tmp_path / "out", report)

    assert report.layout == "synthea-v3"
    assert set(outcomes["source"]) == {"medications", "procedures", "careplans"}
    assert not (outcomes[outcomes["source"] != "medications"]["rule"] == "switched").any()
    _check_resolved_against_raw(src, outcomes)
    _check_onsets(src, tmp_path / "out", report)
    treatments = read_tables(tmp_path / "out").treatments.set_index("treatment_id")
    drugs = treatments.index.str.startswith("rxnorm|")
    assert (treatments["ingredients"][drugs] != "").all()
    assert (treatments["ingredients"][~drugs] == "").all()  # procedures and care plans: their own
    # Independently: medication reasons with no same-code condition starting on or before.
    meds, conditions = _raw(src, "medications"), _raw(src, "conditions")
    starts = conditions.groupby(["PATIENT", "CODE"])["START"].min()
    with_reason = meds[meds["REASONCODE"] != ""]
    first = [starts.get((p, c)) for p, c in zip(with_reason["PATIENT"], with_reason["REASONCODE"])]
    unmatched = sum(f is None or f[:10] > s[:10] for f, s in zip(first, with_reason["START"]))
    assert (
        report.unmatched[
            "medications: REASONCODE without a condition episode of that code on or before START"
        ]
        == unmatched
        >= 1160
    )  # see datasets README


def test_a_gzip_bomb_stops_the_import_with_one_error_line(tmp_path, monkeypatch, capsys):
    """The issue's probe at test size: conditions.csv.gz expands ~1000x beyond its budget."""
    from recommender.cli import main
    from tests.utils.test_limits import gzip_bomb

    src = write_export(tmp_path / "src")
    header = pd.read_csv(src / "conditions.csv.gz", nrows=0).columns
    bomb = src / "conditions.csv.gz"
    gzip_bomb(bomb, (",".join(header) + "\n").encode(), 20_000_000)
    monkeypatch.setenv("RECOMMENDER_MAX_FILE_BYTES", "2000000")
    status = main(["import", "synthea", str(src), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and err.startswith("error: ")
    assert str(bomb) in err and "RECOMMENDER_MAX_FILE_BYTES" in err
    assert not (tmp_path / "out").exists()
