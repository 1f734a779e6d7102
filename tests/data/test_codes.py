"""The training path's encoder gives exactly the Dataset of the previous pandas implementation.

Three ways to the same Dataset are compared on data/sample and on small generated cohorts with
duplicates, repeated (patient, treatment) pairs, missing and tied timestamps, blank conditions,
adverse flags in every accepted spelling, ids with surrounding spaces and extra columns:

- ``tests/reference_dataset.py``: the previous ``Dataset.from_tables`` (pandas, slow);
- ``Dataset.from_tables(read_tables(folder))``: the pandas reader, then integer codes;
- ``Dataset.from_codes(read_codes(folder))``: pyarrow straight to integer codes (training).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recommender.data import arrow_read
from recommender.data.arrow_read import read_codes
from recommender.data.codes import NAT, CohortCodes
from recommender.data.dataset import Dataset
from recommender.data.dataset_arrays import SPARSE_FIELDS, dataset_from_arrays, dataset_to_arrays
from recommender.data.policies import ConfidencePolicy
from recommender.data.pseudonym import Pseudonymizer
from recommender.data.side_info import SideInfo
from recommender.data.tables import read_tables
from recommender.exceptions import DataValidationError
from tests.cohorts import checkerboard, random_cohort
from tests.reference_dataset import reference_from_tables

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
OPTIONS = [
    {},
    {"side_info": SideInfo(conditions=True, age_band=True, sex=True), "harm_threshold": 0.3},
    {
        "side_info": SideInfo(conditions=False, age_band=True),
        "policy": ConfidencePolicy(
            alpha=2.0, positive_threshold=0.4, failure_floor=0.2, side_weight=1.0
        ),
    },
    {"pseudonymizer": Pseudonymizer(b"0123456789abcdef-test-key")},
]


def assert_same_dataset(a: Dataset, b: Dataset) -> None:
    """Ids in the same order; every matrix with the same dtype, pattern and values, bit for bit."""
    for name in ("patients", "treatments", "features", "conditions"):
        assert getattr(a, name).external_ids.tolist() == getattr(b, name).external_ids.tolist(), (
            name
        )
    for name in SPARSE_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape and x.dtype == y.dtype, name
        for part in ("indptr", "indices", "data"):
            u, v = getattr(x, part), getattr(y, part)
            assert u.dtype == v.dtype and np.array_equal(u, v), f"{name}.{part}"
            if part == "data" and u.dtype.kind == "f":  # -0.0 and 0.0 are different outcomes
                assert np.array_equal(np.signbit(u), np.signbit(v)), f"{name}.data sign"
    assert a.treatment_support.dtype == b.treatment_support.dtype
    assert np.array_equal(a.treatment_support, b.treatment_support)
    pd.testing.assert_frame_equal(a.demographics, b.demographics)
    for name in (
        "reference_year",
        "fingerprint",
        "pseudonym_fingerprint",
        "treatment_names",
        "condition_names",
        "harm_threshold",
        "policy",
        "side_info",
        "safety",
    ):
        assert getattr(a, name) == getattr(b, name), name


def assert_same_codes(a: CohortCodes, b: CohortCodes) -> None:
    for name in ("patient_ids", "treatment_ids", "condition_ids"):
        assert list(getattr(a, name)) == list(getattr(b, name)), name
    pairs = [
        pd.DataFrame({"p": c.pc_patient, "c": c.pc_condition}).drop_duplicates() for c in (a, b)
    ]  # a repeated diagnosis may stay in the codes
    pd.testing.assert_frame_equal(pairs[0].reset_index(drop=True), pairs[1].reset_index(drop=True))
    for name in (
        "patient",
        "treatment",
        "condition",
        "outcome",
        "timestamp",
        "adverse",
        "table_patients",
        "sex",
    ):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y), name
    assert (a.birth_year is None) == (b.birth_year is None)
    if a.birth_year is not None:
        pd.testing.assert_extension_array_equal(a.birth_year, b.birth_year)
    onsets = []
    for c in (a, b):
        times = c.pc_time if c.pc_time is not None else np.full(len(c.pc_patient), NAT)
        known = pd.Series(np.where(times == NAT, np.iinfo(np.int64).max, times))
        frame = pd.DataFrame({"p": c.pc_patient, "c": c.pc_condition, "t": known})
        onsets.append(frame.groupby(["p", "c"])["t"].min())
    pd.testing.assert_series_equal(onsets[0], onsets[1])  # the earliest known onset of a pair
    assert (a.observations is None) == (b.observations is None)
    if a.observations is not None:
        pd.testing.assert_frame_equal(a.observations, b.observations)
    assert a.fingerprint == b.fingerprint


def messy_frames(seed: int, n_patients: int = 40, n_rows: int = 300) -> dict[str, pd.DataFrame]:
    """Raw tables (strings as a file holds them) with everything the normalisation handles."""
    rng = np.random.default_rng(seed)
    labels = [
        "responded",
        " Partial",
        "no_response",
        "WORSENED",
        "adverse",
        "1",
        "0.25",
        "-1",
        "0",
        "-0.5",
        "1.0",
        "0.5 ",
    ]
    flags = ["", "0", "1", "true", "FALSE", " 1.0", "0.0"]
    patients = [f"P{i:03d}" for i in rng.integers(0, n_patients, n_rows)]
    days = rng.integers(0, 60, n_rows)  # few days: many ties
    times = [
        (
            ""
            if rng.random() < 0.15
            else f"2020-01-{d % 28 + 1:02d}"
            if rng.random() < 0.5
            else f"2020-01-{d % 28 + 1:02d}T{d % 24:02d}:30:00Z"
        )
        for d in days
    ]
    outcomes = pd.DataFrame(
        {
            "patient_id": [f" {p}" if rng.random() < 0.1 else p for p in patients],
            "treatment_id": [f"T{i}" for i in rng.integers(0, 9, n_rows)],
            "outcome": rng.choice(labels, n_rows),
            "timestamp": times,
            "condition_id": [
                ("" if rng.random() < 0.2 else f"C{i}") for i in rng.integers(0, 4, n_rows)
            ],
            "adverse": rng.choice(flags, n_rows),
            "note": rng.choice(["", "a", "b"], n_rows),
        }
    )
    duplicates = outcomes.sample(
        40, random_state=seed
    )  # exact repeats, and repeats in another spelling
    respelled = duplicates.copy()
    respelled["outcome"] = respelled["outcome"].replace({"responded": "1", "1": "responded"})
    respelled["patient_id"] = respelled["patient_id"].str.strip() + "  "
    outcomes = pd.concat([outcomes, duplicates, respelled], ignore_index=True)
    outcomes = outcomes.sample(frac=1, random_state=seed + 1).reset_index(drop=True)
    ids = [f"P{i:03d}" for i in range(n_patients + 5)]  # 5 patients without outcomes
    table = pd.DataFrame(
        {
            "patient_id": ids,
            "sex": rng.choice(["F", "M", "", " F "], len(ids)),
            "birth_year": rng.choice(["1950", "1988", "", "2015", " 1931 "], len(ids)),
            "payer": rng.choice(["x", "y"], len(ids)),
        }
    ).iloc[rng.permutation(len(ids))[: len(ids) - 3]]  # drop a few: no row for them
    listed = set(table["patient_id"])
    outcomes = outcomes[outcomes["patient_id"].str.strip().isin(listed)].reset_index(drop=True)
    diagnoses = pd.DataFrame(
        {
            "patient_id": rng.choice(sorted(listed), 120),
            "condition_id": [
                f"{'A' if j % 3 == 0 else 'C'}{j % 5}" for j in rng.integers(0, 30, 120)
            ],
        }
    )
    if seed % 2:  # onsets, some unknown; the repeated pairs get other onsets
        diagnoses["timestamp"] = [
            "" if rng.random() < 0.2 else f"2019-{m:02d}-03" for m in rng.integers(1, 13, 120)
        ]
    observations = pd.DataFrame(
        {
            "patient_id": rng.choice(sorted(listed), 80),
            "code": rng.choice(["loinc|33914-3", " loinc|1742-6", "local|score"], 80),
            "value": [
                f" {v:.1f}" if rng.random() < 0.2 else f"{v:g}" for v in rng.normal(50, 20, 80)
            ],
            "unit": rng.choice(["mL/min", "U/L", ""], 80),
            "timestamp": rng.choice(["", "2020-01-05", "2020-02-01T08:00:00Z"], 80),
        }
    )
    return {
        "outcomes": outcomes,
        "patients": table,
        "observations": observations,
        "patient_conditions": pd.concat([diagnoses, diagnoses.head(10)], ignore_index=True),
        "contraindications": pd.DataFrame(
            {"treatment_id": ["T1", "T99", "T3"], "condition_id": ["A0", "A3", "Z9"]}
        ),
        "interactions": pd.DataFrame(
            {
                "treatment_a": ["T1", "T2", "T1"],
                "treatment_b": ["T2", "T1", "T5"],
                "severity": ["moderate", "severe", "minor"],
            }
        ),
        "treatments": pd.DataFrame(
            {
                "treatment_id": [f"T{i}" for i in range(12)] + ["T3"],
                "name": [f"drug {i}" for i in range(12)] + ["again"],
            }
        ),
    }


def write_folder(frames: dict[str, pd.DataFrame], folder: Path, kind: str) -> Path:
    folder.mkdir(parents=True)
    for name, frame in frames.items():
        if kind == "parquet":
            frame.to_parquet(folder / f"{name}.parquet", index=False)
        else:
            frame.to_csv(folder / f"{name}.{kind}", index=False)
    return folder


@pytest.fixture
def no_fallback(monkeypatch):
    """Fail a test in which read_codes hands the folder to the pandas reader."""

    def refuse(folder):
        raise AssertionError(f"read_codes fell back to the pandas reader for {folder}")

    monkeypatch.setattr(arrow_read, "read_tables", refuse)


@pytest.fixture(params=["sample", "csv-0", "csv.gz-1", "parquet-2", "parquet-3"])
def folder(request, tmp_path) -> Path:
    if request.param == "sample":
        return SAMPLE
    kind, seed = request.param.rsplit("-", 1)
    return write_folder(messy_frames(int(seed)), tmp_path / "data", kind)


def test_read_codes_equals_the_pandas_reader(folder, no_fallback):
    codes = read_codes(folder)
    assert len(codes.patient) > 0
    assert_same_codes(codes, CohortCodes.from_tables(read_tables(folder)))


@pytest.mark.parametrize("options", OPTIONS, ids=["default", "all-side", "policy", "keyed"])
def test_both_encoders_give_the_previous_dataset(folder, options):
    tables = read_tables(folder)
    reference = reference_from_tables(tables, **options)
    assert_same_dataset(Dataset.from_tables(tables, **options), reference)
    assert_same_dataset(Dataset.from_codes(read_codes(folder), **options), reference)


@pytest.mark.parametrize("seed", range(6))
def test_random_cohorts_give_the_previous_dataset(seed):
    tables = random_cohort(seed) if seed else checkerboard()[0]
    for options in OPTIONS[:3]:
        assert_same_dataset(
            Dataset.from_tables(tables, **options), reference_from_tables(tables, **options)
        )


def test_no_timestamps_and_no_optional_columns(tmp_path, no_fallback):
    frames = {
        "outcomes": pd.DataFrame(
            {
                "patient_id": ["b", "a", "b", "b"],
                "treatment_id": ["x", "y", "x", "z"],
                "outcome": ["1", "-1", "0", "partial"],
            }
        )
    }
    folder = write_folder(frames, tmp_path / "d", "csv")
    codes = read_codes(folder)
    assert_same_codes(codes, CohortCodes.from_tables(read_tables(folder)))
    dataset = Dataset.from_codes(codes)
    assert_same_dataset(dataset, reference_from_tables(read_tables(folder)))
    assert dataset.history.toarray().tolist() == [
        [0.0, 0.0, 0.5],
        [0.0, -1.0, 0.0],
    ]  # b/x: last row


BAD_OUTCOMES = [
    "patient_id,treatment_id\np1,t1\n",
    "patient_id,treatment_id,outcome\np1,t1,1\n,t2,1\n",
    "patient_id,treatment_id,outcome\np1,t1,1\np1,t2,1.5\n",
    "patient_id,treatment_id,outcome\np1,t1,great\n",
    "patient_id,treatment_id,outcome,timestamp\np1,t1,1,yesterday\n",
    "patient_id,treatment_id,outcome,adverse\np1,t1,1,maybe\n",
    "patient_id,treatment_id,outcome\np1,t1,1\np2,t2\n",
    "patient_id,treatment_id,outcome\np1,t1,1,9\n",
    'patient_id,treatment_id,outcome\np1,"t1,1\n',
    "",
]


@pytest.mark.parametrize("text", BAD_OUTCOMES)
def test_bad_files_raise_the_pandas_readers_error(tmp_path, text):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "outcomes.csv").write_text(text)
    with pytest.raises(DataValidationError) as expected:
        read_tables(folder)
    with pytest.raises(DataValidationError) as got:
        read_codes(folder)
    assert str(got.value) == str(expected.value)
    assert (got.value.file, got.value.row, got.value.column) == (
        expected.value.file,
        expected.value.row,
        expected.value.column,
    )


@pytest.mark.parametrize(
    "table,change",
    [
        ("patients", lambda f: pd.concat([f, f.head(1)])),  # a patient listed twice
        ("patients", lambda f: f.assign(birth_year="19x0")),
        ("patients", lambda f: f.iloc[1:]),  # a patient with outcomes is not listed
        ("interactions", lambda f: f.assign(severity="awful")),
        ("treatments", lambda f: f.iloc[2:]),  # a treatment with outcomes is not defined
        ("patient_conditions", lambda f: f.assign(patient_id=[""] + list(f.patient_id[1:]))),
    ],
)
@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_bad_tables_raise_the_pandas_readers_error(tmp_path, table, change, kind):
    frames = messy_frames(5)
    frames[table] = change(frames[table])
    folder = write_folder(frames, tmp_path / "d", kind)
    with pytest.raises(DataValidationError) as expected:
        read_tables(folder)
    with pytest.raises(DataValidationError) as got:
        read_codes(folder)
    assert str(got.value) == str(expected.value)


def test_column_types_it_does_not_handle_go_through_the_pandas_reader(tmp_path):
    frames = messy_frames(7)
    outcomes = frames["outcomes"]
    frames["outcomes"] = outcomes[outcomes.timestamp != ""].assign(
        timestamp=lambda f: pd.to_datetime(f.timestamp, utc=True, format="ISO8601"),
        adverse=lambda f: (
            f.adverse.str.strip()
            .str.lower()
            .map({"": 0, "0": 0, "1": 1, "true": 1, "false": 0, "1.0": 1, "0.0": 0})
            .astype("int8")
        ),
        outcome=lambda f: (
            f.outcome.str.strip()
            .str.lower()
            .map(
                {
                    "responded": 1.0,
                    "partial": 0.5,
                    "no_response": 0.0,
                    "worsened": -0.5,
                    "adverse": -1.0,
                }
            )
            .fillna(pd.to_numeric(f.outcome, errors="coerce"))
        ),
    )
    frames["patients"]["birth_year"] = pd.to_numeric(
        frames["patients"]["birth_year"].str.strip().replace("", None)
    ).astype("Int64")
    folder = write_folder(frames, tmp_path / "d", "parquet")
    assert_same_codes(read_codes(folder), CohortCodes.from_tables(read_tables(folder)))


def test_numeric_columns_are_read_without_the_pandas_reader(tmp_path, no_fallback):
    frames = messy_frames(8)
    outcomes = frames["outcomes"]
    frames["outcomes"] = outcomes.assign(
        adverse=lambda f: (
            f.adverse.str.strip()
            .str.lower()
            .map({"": 0, "0": 0, "1": 1, "true": 1, "false": 0, "1.0": 1, "0.0": 0})
            .astype("int8")
        ),
        outcome=pd.to_numeric(
            outcomes.outcome.str.strip()
            .str.lower()
            .map(
                {
                    "responded": "1",
                    "partial": "0.5",
                    "no_response": "0",
                    "worsened": "-0.5",
                    "adverse": "-1",
                }
            )
            .fillna(outcomes.outcome)
        ).astype("float32"),
    )
    frames["patients"]["birth_year"] = pd.to_numeric(
        frames["patients"]["birth_year"].str.strip().replace("", None)
    ).astype("Int64")
    folder = write_folder(frames, tmp_path / "d", "parquet")
    codes = read_codes(folder)
    assert_same_codes(codes, CohortCodes.from_tables(read_tables(folder)))
    assert_same_dataset(Dataset.from_codes(codes), reference_from_tables(read_tables(folder)))


@pytest.mark.parametrize(
    "text",
    [
        'patient_id,treatment_id,outcome\r\np1,t1,1\r\n\r\np2,"t,2","0"\n',
        '\ufeffpatient_id,treatment_id,outcome\np1,"t""1",1\np1,"t\n2",partial',
        "patient_id,treatment_id,outcome\np1, t1 ,1\n p1,t1,1\n",
    ],
)
def test_csv_quoting_and_line_ends_read_as_pandas_reads_them(tmp_path, text, no_fallback):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "outcomes.csv").write_bytes(text.encode("utf-8"))
    assert_same_codes(read_codes(folder), CohortCodes.from_tables(read_tables(folder)))


def test_a_trained_artifact_holds_the_previous_dataset(tmp_path):
    from recommender.models.persistence import load_artifact
    from recommender.training import train_artifact

    path = train_artifact(
        SAMPLE, tmp_path / "model", kind="als", params={"factors": 4, "iterations": 2}
    )
    reference = reference_from_tables(read_tables(SAMPLE))
    assert_same_dataset(
        load_artifact(path).dataset, dataset_from_arrays(*dataset_to_arrays(reference))
    )
    assert not list(tmp_path.glob(".*spill*"))  # the temporary memory maps are gone


def test_parquet_categories_out_of_row_order(tmp_path, no_fallback):
    """A categorical id column stores its categories (here reversed, one unused) as the
    dictionary: patient indices must still follow the rows."""
    frames = messy_frames(9)
    for name in ("outcomes", "patient_conditions"):
        ids = frames[name]["patient_id"].str.strip()
        frames[name]["patient_id"] = pd.Categorical(
            ids, categories=sorted(set(ids) | {"UNUSED"}, reverse=True)
        )
    frames["outcomes"]["condition_id"] = frames["outcomes"]["condition_id"].astype("category")
    folder = write_folder(frames, tmp_path / "d", "parquet")
    codes = read_codes(folder)
    assert "UNUSED" not in list(codes.patient_ids)
    assert_same_codes(codes, CohortCodes.from_tables(read_tables(folder)))
    assert_same_dataset(Dataset.from_codes(codes), reference_from_tables(read_tables(folder)))


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_tables_without_rows(tmp_path, kind, no_fallback):
    frames = messy_frames(4)
    frames["outcomes"] = frames["outcomes"].iloc[:0]
    folder = write_folder(frames, tmp_path / "d", kind)
    codes = read_codes(folder)
    assert codes.n_rows == 0
    assert_same_codes(codes, CohortCodes.from_tables(read_tables(folder)))
    assert_same_dataset(Dataset.from_codes(codes), reference_from_tables(read_tables(folder)))
