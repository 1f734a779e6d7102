"""Reading and validating the canonical tables: every error names file, row and column."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from recommender.data.tables import read_tables, validate_tables, write_tables
from recommender.exceptions import DataValidationError


def write(folder, name, text):
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)
    return folder


OUTCOMES = (
    "patient_id,treatment_id,outcome,timestamp,condition_id,adverse\n"
    "p1,t1,responded,2020-01-02,c1,0\np1,t2,-0.5,2020-02-01T10:00:00Z,c1,0\n"
    "p2,t1,adverse,2021-01-01,,1\n"
)


def test_reads_labels_numbers_timestamps_and_flags(tmp_path):
    tables = read_tables(write(tmp_path / "d", "outcomes.csv", OUTCOMES))
    o = tables.outcomes
    assert o.outcome.tolist() == [1.0, -0.5, -1.0]
    assert o.timestamp.dt.year.tolist() == [2020, 2020, 2021]
    assert o.condition_id.tolist() == ["c1", "c1", None]
    assert o.adverse.tolist() == [0, 0, 1]
    assert tables.patients is None and len(tables.fingerprint) == 64


def test_parquet_and_csv_give_the_same_tables(tmp_path):
    csv = read_tables(write(tmp_path / "csv", "outcomes.csv", OUTCOMES))
    write_tables(csv, tmp_path / "pq", file_format="parquet")
    parquet = read_tables(tmp_path / "pq")
    pd.testing.assert_frame_equal(csv.outcomes, parquet.outcomes)


@pytest.mark.parametrize(
    "text,row,column,message",
    [
        ("patient_id,treatment_id\np1,t1\n", None, "outcome", "missing required column"),
        ("patient_id,treatment_id,outcome\np1,t1,1\n,t2,1\n", 2, "patient_id", "empty id"),
        (
            "patient_id,treatment_id,outcome\np1,t1,1\np1,t2,1.5\n",
            2,
            "outcome",
            "outside \\[-1, 1\\]",
        ),
        ("patient_id,treatment_id,outcome\np1,t1,great\n", 1, "outcome", "neither a number"),
        (
            "patient_id,treatment_id,outcome,timestamp\np1,t1,1,yesterday\n",
            1,
            "timestamp",
            "ISO-8601",
        ),
        ("patient_id,treatment_id,outcome,adverse\np1,t1,1,maybe\n", 1, "adverse", "not 0 or 1"),
    ],
)
def test_bad_outcomes_name_file_row_and_column(tmp_path, text, row, column, message):
    folder = write(tmp_path / "d", "outcomes.csv", text)
    with pytest.raises(DataValidationError, match=message) as info:
        read_tables(folder)
    error = info.value
    assert error.file.endswith("outcomes.csv") and error.column == column and error.row == row
    assert "outcomes.csv" in str(error) and f"'{column}'" in str(error)


def test_undefined_patient_is_reported_where_it_is_used(tmp_path):
    folder = write(tmp_path / "d", "outcomes.csv", OUTCOMES)
    write(folder, "patients.csv", "patient_id,sex,birth_year\np1,F,1950\n")
    with pytest.raises(
        DataValidationError, match="patient 'p2' is not defined in the patients"
    ) as info:
        read_tables(folder)
    assert info.value.row == 3 and info.value.file.endswith("outcomes.csv")


def test_patients_table_checks(tmp_path):
    folder = write(tmp_path / "d", "outcomes.csv", OUTCOMES)
    write(folder, "patients.csv", "patient_id,sex,birth_year\np1,F,1950\np2,M,19x0\n")
    with pytest.raises(DataValidationError, match="birth_year '19x0'") as info:
        read_tables(folder)
    assert info.value.row == 2
    write(folder, "patients.csv", "patient_id,sex,birth_year\np1,F,1950\np1,M,1960\n")
    with pytest.raises(DataValidationError, match="listed twice"):
        read_tables(folder)


def test_interaction_severity_is_checked(tmp_path):
    folder = write(tmp_path / "d", "outcomes.csv", OUTCOMES)
    write(
        folder, "interactions.csv", "treatment_a,treatment_b,severity\nt1,t2,severe\nt1,t3,awful\n"
    )
    with pytest.raises(DataValidationError, match="severity 'awful'") as info:
        read_tables(folder)
    assert info.value.row == 2


def test_missing_folder_or_table_and_two_files_for_one_table(tmp_path):
    with pytest.raises(DataValidationError, match="is not a folder"):
        read_tables(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataValidationError, match="no outcomes table"):
        read_tables(tmp_path / "empty")
    folder = write(tmp_path / "d", "outcomes.csv", OUTCOMES)
    write(folder, "outcomes.csv.gz", "")
    with pytest.raises(DataValidationError, match="two files hold the table 'outcomes'"):
        read_tables(folder)


def test_exact_duplicates_are_dropped_but_repeated_treatments_kept(tmp_path):
    text = OUTCOMES + "p1,t1,responded,2020-01-02,c1,0\np1,t1,no_response,2022-01-01,c1,0\n"
    tables = read_tables(write(tmp_path / "d", "outcomes.csv", text))
    assert len(tables.outcomes) == 4


def test_write_is_atomic_and_leaves_nothing_on_failure(tmp_path, monkeypatch):
    good = validate_tables(
        {"outcomes": pd.DataFrame({"patient_id": ["a"], "treatment_id": ["t"], "outcome": [1]})}
    )
    target = write_tables(good, tmp_path / "out")
    before = sorted(os.listdir(tmp_path))

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", explode)
    with pytest.raises(OSError, match="disk full"):
        write_tables(good, target)
    assert sorted(os.listdir(tmp_path)) == before
    monkeypatch.undo()
    assert read_tables(target).outcomes.patient_id.tolist() == ["a"]


def test_fingerprint_changes_with_content(tmp_path):
    a = read_tables(write(tmp_path / "a", "outcomes.csv", OUTCOMES))
    b = read_tables(write(tmp_path / "b", "outcomes.csv", OUTCOMES.replace("responded", "partial")))
    assert a.fingerprint != b.fingerprint
    assert a.fingerprint == read_tables(tmp_path / "a").fingerprint


OBSERVATIONS = (
    "patient_id,code,value,unit,timestamp\n"
    "p1,loinc|33914-3,58.5,mL/min/1.73m2,2020-01-01\np1,loinc|33914-3,41,mL/min/1.73m2,2021-01-01\n"
    "p2,loinc|1742-6,30,U/L,\n"
)


def test_observations_are_read_as_numbers_with_units_and_times(tmp_path):
    folder = write(tmp_path / "d", "outcomes.csv", OUTCOMES)
    tables = read_tables(write(folder, "observations.csv", OBSERVATIONS))
    obs = tables.observations
    assert obs.value.tolist() == [58.5, 41.0, 30.0]
    assert obs.unit.tolist() == ["mL/min/1.73m2", "mL/min/1.73m2", "U/L"]
    assert obs.timestamp.isna().tolist() == [False, False, True]
    assert obs.code.tolist() == ["loinc|33914-3", "loinc|33914-3", "loinc|1742-6"]


@pytest.mark.parametrize(
    "text, message, row, column",
    [
        ("p1,loinc|1,high,,2020-01-01\n", "value 'high' is not a finite number", 1, "value"),
        ("p1,loinc|1,,,2020-01-01\n", "value '' is not a finite number", 1, "value"),
        ("p1,,3,,2020-01-01\n", "empty id", 1, "code"),
        ("p1,loinc|1,3,,yesterday\n", "timestamp 'yesterday' is not an ISO-8601", 1, "timestamp"),
    ],
)
def test_bad_observations_are_named_by_file_row_and_column(tmp_path, text, message, row, column):
    folder = write(tmp_path / "d", "outcomes.csv", OUTCOMES)
    write(folder, "observations.csv", "patient_id,code,value,unit,timestamp\n" + text)
    with pytest.raises(DataValidationError, match=message) as error:
        read_tables(folder)
    assert error.value.file.endswith("observations.csv")
    assert (error.value.row, error.value.column) == (row, column)


def test_observations_of_an_undefined_patient_are_refused(tmp_path):
    folder = write(tmp_path / "d", "outcomes.csv", OUTCOMES)
    write(folder, "patients.csv", "patient_id,sex\np1,F\np2,M\n")
    write(folder, "observations.csv", "patient_id,code,value\np9,loinc|1,3\n")
    with pytest.raises(DataValidationError, match="patient 'p9' is not defined in the patients"):
        read_tables(folder)


def test_a_diagnosis_keeps_its_earliest_known_onset(tmp_path):
    folder = write(tmp_path / "d", "outcomes.csv", OUTCOMES)
    write(
        folder,
        "patient_conditions.csv",
        "patient_id,condition_id,timestamp\np1,c1,2020-05-01\np1,c1,2019-01-01\np1,c1,\n"
        "p2,c2,\np2,c1,2018-03-03\n",
    )
    pc = read_tables(folder).patient_conditions
    assert pc[["patient_id", "condition_id"]].values.tolist() == [
        ["p1", "c1"],
        ["p2", "c2"],
        ["p2", "c1"],
    ]
    assert pc.timestamp.dt.strftime("%Y-%m-%d").fillna("").tolist() == [
        "2019-01-01",
        "",
        "2018-03-03",
    ]
