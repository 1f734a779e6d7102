"""``train --engine spark --encode spark``: the Spark job builds the same Dataset as the local
code (patients in sorted-id order), pseudonymised on the executors, and checks the schema."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recommender.cli import main
from recommender.data.dataset import Dataset
from recommender.data.dataset_arrays import SPARSE_FIELDS
from recommender.data.pseudonym import Pseudonymizer
from recommender.data.side_info import SideInfo
from recommender.data.synthetic.planted import generate_cohort
from recommender.data.tables import read_tables, validate_tables, write_tables
from recommender.exceptions import DataValidationError
from recommender.models.persistence import load_artifact
from recommender.spark.encode import encode_tables


@pytest.fixture(scope="module")
def parquet_cohort(tmp_path_factory):
    tables = validate_tables(generate_cohort(400, seed=11).tables)
    return write_tables(tables, tmp_path_factory.mktemp("encode") / "data", file_format="parquet")


def test_the_spark_encoding_equals_the_local_one(spark, parquet_cohort, key_file, tmp_path):
    out = tmp_path / "artifact"
    assert (
        main(
            [
                "train",
                "--engine",
                "spark",
                "--encode",
                "spark",
                "--data",
                str(parquet_cohort),
                "--out",
                str(out),
                "--pseudonym-key-file",
                str(key_file),
                "--factors",
                "4",
                "--iterations",
                "2",
                "--side-info",
                "conditions,age_band,sex",
            ]
        )
        == 0
    )
    key = Pseudonymizer.from_file(key_file)
    artifact = load_artifact(out, pseudonymizer=key)
    assert artifact.manifest["spark"]["encode"] == "spark"
    got = artifact.dataset
    expected = Dataset.from_tables(
        read_tables(parquet_cohort),
        pseudonymizer=key,
        side_info=SideInfo(conditions=True, age_band=True, sex=True),
    )
    assert list(got.patients.external_ids) == sorted(expected.patients.external_ids)
    order = expected.patients.to_internal(got.patients.external_ids)
    for name in ("treatments", "conditions", "features"):
        assert getattr(got, name) == getattr(expected, name), name
    for name in SPARSE_FIELDS:
        want, have = getattr(expected, name), getattr(got, name)
        if want.shape[0] == expected.n_patients:
            want = want[order]
        assert want.shape == have.shape, name
        np.testing.assert_array_equal(want.indptr, have.indptr, err_msg=name)
        np.testing.assert_array_equal(want.indices, have.indices, err_msg=name)
        np.testing.assert_allclose(
            want.data.astype(float), have.data.astype(float), rtol=1e-6, err_msg=name
        )
    np.testing.assert_array_equal(got.treatment_support, expected.treatment_support)

    def values(frame):
        return frame.astype(object).where(frame.notna(), None).values.tolist()

    assert values(got.demographics) == values(expected.demographics.iloc[order])
    assert got.reference_year == expected.reference_year
    assert got.treatment_names == expected.treatment_names
    assert got.pseudonym_fingerprint == key.fingerprint
    assert not set(read_tables(parquet_cohort).outcomes["patient_id"]) & set(
        got.patients.external_ids
    )


def test_the_spark_encoding_reports_a_bad_outcome(spark, tmp_path):
    write_tables(
        {
            "outcomes": pd.DataFrame(
                {
                    "patient_id": ["a", "b"],
                    "treatment_id": ["x", "y"],
                    "outcome": ["responded", "cured"],
                }
            )
        },
        tmp_path / "bad",
    )
    with pytest.raises(
        DataValidationError,
        match=r"outcomes.csv, column 'outcome': outcome is "
        r"neither .*; found 'cured'",
    ):
        encode_tables(spark, str(tmp_path / "bad"))
    with pytest.raises(DataValidationError, match="no outcomes table"):
        encode_tables(spark, str(tmp_path / "missing"))


def test_the_spark_encoding_reads_and_checks_ingredients(spark, tmp_path):
    outcomes = pd.DataFrame(
        {"patient_id": ["a", "b", "c"], "treatment_id": ["x", "y", "z"], "outcome": [1, 0, 1]}
    )
    treatments = pd.DataFrame(
        {
            "treatment_id": ["x", "y", "z"],
            "name": ["X", "Y", "Z"],
            "ingredients": ["drug|h", "drug|h;drug|l", ""],
        }
    )
    write_tables({"outcomes": outcomes, "treatments": treatments}, tmp_path / "good")
    got = encode_tables(spark, str(tmp_path / "good")).dataset
    expected = Dataset.from_tables(read_tables(tmp_path / "good"))
    assert got.ingredients == expected.ingredients
    assert got.ingredients.external_ids.tolist() == ["drug|h", "drug|l", "z"]
    assert (got.treatment_ingredients != expected.treatment_ingredients).nnz == 0
    write_tables(
        {"outcomes": outcomes, "treatments": treatments.assign(ingredients=["drug|h;", "", ""])},
        tmp_path / "bad",
    )
    with pytest.raises(DataValidationError, match=r"treatments.csv.*ingredients.*empty ingredient"):
        encode_tables(spark, str(tmp_path / "bad"))
