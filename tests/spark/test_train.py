"""``train --engine spark``: the correspondence holds exactly, the artifact is a standard one that
loads and serves, and its quality matches the local engine's."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from recommender.cli import main
from recommender.data.dataset import Dataset
from recommender.data.pseudonym import Pseudonymizer
from recommender.data.splits import leave_last
from recommender.data.synthetic.planted import generate_cohort
from recommender.data.tables import validate_tables
from recommender.evaluation.evaluate import evaluate
from recommender.exceptions import ParameterError
from recommender.models.als import ALSRecommender
from recommender.models.persistence import load_artifact
from recommender.spark.train import SparkALSRecommender


def test_spark_solves_what_implicit_solves(spark):
    """Given Spark's final treatment factors, every patient's Spark factors are implicit's exact
    solve with alpha 1 on the same signed confidences and lambda = regParam * (positive count)."""
    dataset = Dataset.from_tables(validate_tables(generate_cohort(300, seed=5).tables))
    model = SparkALSRecommender(factors=4, iterations=3, use_cg=False).fit(dataset)
    reg_param = model.spark_params_.reg_param
    rows = dataset.matrix
    positives = np.diff((rows > 1).astype(np.int8).tocsr().indptr)  # v > 1 <=> Spark rating > 0
    for count in np.unique(positives):
        users = np.flatnonzero(positives == count)
        with threadpool_limits(1, "blas"):
            solver = AlternatingLeastSquares(
                factors=4, regularization=reg_param * count, alpha=1.0, use_cg=False
            )
            solver.item_factors = np.ascontiguousarray(model.item_factors_)
            solver.user_factors = np.zeros((1, 4), np.float32)
            expected = solver.recalculate_user(np.arange(len(users)), rows[users])
        np.testing.assert_allclose(model.user_factors_[users], expected, rtol=1e-3, atol=1e-4)


def test_the_spark_artifact_is_a_standard_als_artifact(spark_artifact, key_file):
    artifact = load_artifact(spark_artifact, pseudonymizer=Pseudonymizer.from_file(key_file))
    manifest, model = artifact.manifest, artifact.model
    assert type(model) is ALSRecommender and manifest["model"]["type"] == "als"
    assert manifest["engine"] == "spark"
    spark = manifest["spark"]
    assert spark["als"]["implicitPrefs"] is True and spark["als"]["alpha"] == 1.0
    assert spark["als"]["rank"] == 8 and spark["als"]["maxIter"] == 5 and spark["als"]["seed"] == 0
    regularization = spark["regularization"]
    assert spark["als"]["regParam"] == pytest.approx(
        regularization["implicit_lambda"] / regularization["median_patient_positives"]
    )
    assert spark["encode"] == "local" and spark["inexact_entries"] == 0
    assert (
        manifest["pseudonyms"]["key_fingerprint"] == Pseudonymizer.from_file(key_file).fingerprint
    )
    dataset = artifact.dataset
    assert model.user_factors_.shape == (dataset.n_patients, 8)
    assert model.item_factors_.shape == (dataset.n_columns, 8)
    assert np.abs(model.user_factors_).sum() > 0


def test_the_spark_artifact_recommends_with_the_exclusions(spark_artifact, key_file, cohort):
    model = load_artifact(spark_artifact, pseudonymizer=Pseudonymizer.from_file(key_file)).model
    held = cohort.held_out.iloc[0]
    answer = model.recommend(held.patient_id, k=3, condition_id=held.condition_id)
    assert 1 <= len(answer.recommendations) <= 3
    dataset = model.dataset_
    row = dataset.patient_index(held.patient_id)
    tried = set(dataset.treatments.to_external(dataset.history[row].indices))
    assert not tried & set(answer.treatment_ids)
    assert set(answer.treatment_ids) <= set(
        dataset.treatments.to_external(
            dataset.candidates(dataset.condition_index(held.condition_id))
        )
    )


def test_the_spark_artifact_folds_in_a_new_patient(spark_artifact, key_file):
    # mmap=False: implicit's fold-in needs writable factors (it fails on a read-only mmap for
    # any ALS artifact, local or Spark-trained).
    model = load_artifact(
        spark_artifact, mmap=False, pseudonymizer=Pseudonymizer.from_file(key_file)
    ).model
    new = model.recommend_new(
        history=[{"treatment_id": "RX0101", "outcome": "responded"}],
        conditions=["C02"],
        k=2,
        condition_id="C02",
    )
    assert len(new.recommendations) == 2 and "RX0101" not in new.treatment_ids


def test_the_spark_artifact_serves_over_http(
    spark_artifact, key_file, cohort, tmp_path, monkeypatch
):
    from service import create_app
    from service.tokens import add_token

    for variable in (
        "RECOMMENDER_CONFIG",
        "RECOMMENDER_ARTIFACT",
        "RECOMMENDER_PSEUDONYM_KEY_FILE",
    ):
        monkeypatch.delenv(variable, raising=False)
    token = add_token(tmp_path / "tokens.json", "ward-1", "clinician")
    app = create_app(
        {
            "ARTIFACT": str(spark_artifact),
            "PSEUDONYM_KEY_FILE": str(key_file),
            "API_TOKENS_FILE": str(tmp_path / "tokens.json"),
            "AUDIT_LOG": str(tmp_path / "audit.log"),
            "ARTIFACT_ROOT": str(spark_artifact.parent),
        }
    )
    held = cohort.held_out.iloc[0]
    response = app.test_client().get(
        f"/v1/patients/{held.patient_id}/recommendations?k=3&condition={held.condition_id}",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.get_json()
    assert 1 <= len(response.get_json()["recommendations"]) <= 3


def test_the_recommend_command_reads_the_spark_artifact(spark_artifact, key_file, cohort, capsys):
    held = cohort.held_out.iloc[0]
    assert (
        main(
            [
                "recommend",
                "--artifact",
                str(spark_artifact),
                "--patient",
                held.patient_id,
                "--condition",
                held.condition_id,
                "-k",
                "2",
                "--pseudonym-key-file",
                str(key_file),
            ]
        )
        == 0
    )
    assert '"recommendations"' in capsys.readouterr().out


def test_ndcg_is_within_ten_percent_of_the_local_engine(spark, cohort_tables):
    """Same parameters (the local defaults) in both engines, mapped by the documented rule."""
    split = leave_last(cohort_tables)
    result = evaluate(
        {"local": ALSRecommender(random_state=0), "spark": SparkALSRecommender(random_state=0)},
        split.train,
        split.test,
        k=10,
        show_progress=False,
    )
    local = result.models["local"].summary["ndcg@10"]
    spark_ndcg = result.models["spark"].summary["ndcg@10"]
    assert local > 0.3  # the comparison means something only if the local engine learned
    assert abs(spark_ndcg - local) <= 0.10 * local, (spark_ndcg, local)


def test_without_pyspark_the_command_names_the_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark -> ImportError
    assert (
        main(["train", "--engine", "spark", "--data", str(tmp_path), "--out", str(tmp_path / "a")])
        == 2
    )
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "[spark]" in error and "pyspark" in error


def test_spark_only_parameters_are_checked_before_spark_starts(capsys, tmp_path):
    pytest.importorskip("pyspark")
    assert (
        main(
            [
                "train",
                "--engine",
                "spark",
                "--data",
                str(tmp_path),
                "--out",
                str(tmp_path / "a"),
                "--params",
                '{"spark_blocks": 0}',
            ]
        )
        == 2
    )
    assert "spark_blocks must be an int >= 1" in capsys.readouterr().err


def test_parameters_without_a_spark_counterpart_are_refused(capsys, tmp_path):
    pytest.importorskip("pyspark")
    with pytest.raises(ParameterError, match="init_fraction has no Spark counterpart"):
        SparkALSRecommender(init_fraction=0.5).check_spark_params()
    assert (
        main(
            [
                "train",
                "--engine",
                "spark",
                "--data",
                str(tmp_path),
                "--out",
                str(tmp_path / "a"),
                "--params",
                '{"early_stopping": 3}',
            ]
        )
        == 2
    )
    assert "early_stopping has no Spark counterpart" in capsys.readouterr().err
