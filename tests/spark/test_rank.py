"""``recommend --engine spark --all``: the same rows as the local ``--all``, ranked on Spark."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recommender.cli import main
from recommender.models.persistence import load_artifact
from recommender.ranking import recommend_all

COLUMNS = ["patient_id", "condition_id", "rank", "treatment_id", "score"]


@pytest.mark.parametrize(
    "options, condition, k, include_tried",
    [
        (["--condition", "C02", "-k", "4"], "C02", 4, False),
        (["-k", "3", "--include-tried"], None, 3, True),
    ],
)
def test_spark_ranking_equals_the_local_all(
    spark_artifact, tmp_path, options, condition, k, include_tried
):
    out = tmp_path / "ranked.parquet"
    assert (
        main(
            [
                "recommend",
                "--engine",
                "spark",
                "--artifact",
                str(spark_artifact),
                "--all",
                "--out",
                str(out),
                *options,
            ]
        )
        == 0
    )
    got = pd.read_parquet(out)
    expected = recommend_all(
        load_artifact(spark_artifact).model,
        k=k,
        condition_id=condition,
        include_tried=include_tried,
    )
    assert list(got.columns) == COLUMNS and len(got) == len(expected) > 0
    for column in ("patient_id", "rank", "treatment_id"):
        assert got[column].tolist() == expected[column].tolist()
    conditions = got["condition_id"].astype(object).where(got["condition_id"].notna(), None)
    assert conditions.tolist() == expected["condition_id"].tolist()
    assert str(got["rank"].dtype) == "int64" and str(got["score"].dtype) == "float32"
    np.testing.assert_allclose(got["score"], expected["score"], rtol=1e-5, atol=1e-6)


def test_an_unknown_condition_stops_before_spark(spark_artifact, tmp_path, capsys):
    assert (
        main(
            [
                "recommend",
                "--engine",
                "spark",
                "--artifact",
                str(spark_artifact),
                "--all",
                "--out",
                str(tmp_path / "x.parquet"),
                "--condition",
                "NOPE",
            ]
        )
        == 2
    )
    assert "unknown condition id 'NOPE'" in capsys.readouterr().err


def test_spark_ranking_needs_all_and_parquet(tmp_path, capsys):
    pytest.importorskip("pyspark")
    assert (
        main(["recommend", "--engine", "spark", "--artifact", str(tmp_path), "--patient", "P1"])
        == 2
    )
    assert (
        main(
            [
                "recommend",
                "--engine",
                "spark",
                "--artifact",
                str(tmp_path),
                "--all",
                "--out",
                str(tmp_path / "x.csv"),
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "recommend",
                "--artifact",
                str(tmp_path),
                "--all",
                "--spark-master",
                "local[1]",
                "--out",
                "x.parquet",
            ]
        )
        == 2
    )
    errors = capsys.readouterr().err
    assert "use it with --all" in errors and "writes Parquet" in errors
    assert "--spark-master applies only with --engine spark" in errors


def test_the_outcome_model_ranks_on_spark_as_locally(spark, tmp_path):
    from recommender.data.synthetic.observational import generate_observational, write_observational
    from recommender.training import train_artifact

    write_observational(generate_observational(400, seed=6), tmp_path / "data")
    artifact = train_artifact(
        tmp_path / "data", tmp_path / "model", kind="outcome", params={"n_bags": 2, "n_trees": 10}
    )
    out = tmp_path / "ranked.parquet"
    args = [
        "recommend",
        "--engine",
        "spark",
        "--artifact",
        str(artifact),
        "--all",
        "--out",
        str(out),
        "--condition",
        "C01",
        "-k",
        "3",
    ]
    assert main(args) == 0
    got = pd.read_parquet(out)
    expected = recommend_all(load_artifact(artifact).model, k=3, condition_id="C01")
    assert len(got) == len(expected) > 0
    assert got["treatment_id"].tolist() == expected["treatment_id"].tolist()


@pytest.mark.parametrize("duplicates", ["exclude", "flag"])
def test_spark_ranking_applies_the_duplicate_therapy_rule(spark, tmp_path, duplicates):
    from recommender.models import make_model
    from tests.ranking.test_duplicates import HCTZ_6, HCTZ_25, cohort

    artifact = make_model("als", factors=4, iterations=3).fit(cohort(duplicates))
    path = artifact.save(tmp_path / "model")
    out = tmp_path / "ranked.parquet"
    command = ["recommend", "--engine", "spark", "--artifact", str(path), "--all"]
    assert main([*command, "--out", str(out), "-k", "10", "--include-tried"]) == 0
    got = pd.read_parquet(out)
    expected = recommend_all(load_artifact(path).model, k=10, include_tried=True)
    assert got["treatment_id"].tolist() == expected["treatment_id"].tolist()
    offered = set(got.treatment_id[got.patient_id == "A"])
    assert HCTZ_25 not in offered and (HCTZ_6 in offered) == (duplicates == "flag")
