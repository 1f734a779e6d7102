"""Early stopping and warm start of ALS: the validation metric, when it stops, what it keeps."""

from __future__ import annotations

import numpy as np
import pytest
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from recommender.data.dataset import Dataset
from recommender.data.splits import leave_last, leave_last_episode
from recommender.data.synthetic.planted import generate_cohort
from recommender.data.tables import validate_tables
from recommender.evaluation.evaluate import evaluate
from recommender.evaluation.validation import Validation
from recommender.exceptions import ParameterError
from recommender.models import make_model
from recommender.models.persistence import load_artifact


@pytest.fixture(scope="module")
def split():
    cohort = generate_cohort(1500, seed=4, n_conditions=6, treatments_per_condition=5)
    return leave_last_episode(validate_tables(cohort.tables))


@pytest.fixture(scope="module")
def dataset(split):
    return Dataset.from_tables(split.train)


@pytest.mark.parametrize("by_condition", [True, False])
def test_validation_score_is_evaluate_ndcg(split, dataset, by_condition):
    params = {"factors": 8, "iterations": 3}
    model = make_model("als", **params).fit(dataset)
    score = Validation(split.test, k=10, by_condition=by_condition).score(model)
    report = evaluate(
        {"als": make_model("als", **params)}, split.train, split.test, by_condition=by_condition
    )
    assert score == report.models["als"].summary["ndcg@10"]


def test_early_stopping_needs_validation_rows(dataset):
    with pytest.raises(ParameterError, match="early_stopping needs validation rows"):
        make_model("als", early_stopping=2).fit(dataset)


def test_stops_on_a_plateau_and_keeps_the_best_sweep(split, dataset):
    validation = Validation(split.test)
    model = make_model("als", factors=8, iterations=40, early_stopping=1, tol=1e-3)
    model.fit(dataset, callback=validation.callback(model))
    scores = model.validation_scores_
    assert model.n_iterations_ == len(scores) < 40
    assert model.best_iteration_ <= model.n_iterations_
    assert scores[-1] <= scores[model.best_iteration_ - 1] + 1e-3  # the last sweep did not gain
    assert validation.score(model) == scores[model.best_iteration_ - 1]  # best factors restored
    assert model.is_fitted and model.dataset_ is dataset


def test_patience_counts_sweeps_without_a_gain(split, dataset):
    model = make_model("als", factors=8, iterations=40, early_stopping=3, tol=1.0)  # never gains
    model.fit(dataset, callback=Validation(split.test).callback(model))
    assert model.best_iteration_ == 1 and model.n_iterations_ == 4


def test_without_early_stopping_the_fit_is_implicit_s(dataset):
    model = make_model("als", factors=8, iterations=4, random_state=3).fit(dataset)
    with threadpool_limits(1, "blas"):
        bare = AlternatingLeastSquares(
            factors=8, regularization=0.1, alpha=1.0, iterations=4, random_state=3
        )
        bare.fit(dataset.matrix, show_progress=False)
    np.testing.assert_array_equal(model.user_factors_, bare.user_factors)
    np.testing.assert_array_equal(model.item_factors_, bare.item_factors)
    assert model.n_iterations_ == 4


def test_warm_start_is_seeded_and_reaches_quality_in_fewer_sweeps(split, dataset):
    validation = Validation(split.test)
    warm = [
        make_model("als", factors=8, iterations=2, init_fraction=0.2, random_state=1).fit(dataset)
        for _ in range(2)
    ]
    np.testing.assert_array_equal(warm[0].item_factors_, warm[1].item_factors_)
    cold = make_model("als", factors=8, iterations=2, random_state=1).fit(dataset)
    assert validation.score(warm[0]) > validation.score(cold)


def test_a_failed_fit_leaves_no_fitted_model(split, dataset):
    class Broken(Validation):
        def score(self, model):
            raise RuntimeError("boom")

    model = make_model("als", factors=4, early_stopping=1)
    with pytest.raises(RuntimeError, match="boom"):
        model.fit(dataset, callback=Broken(split.test).callback(model))
    assert not model.is_fitted


def test_validation_without_a_relevant_query_is_refused(split, dataset):
    failed = split.test.assign(outcome=-1.0)
    with pytest.raises(ParameterError, match="nothing to stop on"):
        model = make_model("als", factors=4, early_stopping=1)
        model.fit(dataset, callback=Validation(failed).callback(model))


@pytest.mark.parametrize(
    "param,value",
    [
        ("early_stopping", 0),
        ("tol", -1.0),
        ("init_fraction", 0.0),
        ("init_fraction", 1.5),
        ("init_iterations", 0),
    ],
)
def test_new_parameters_are_validated(dataset, param, value):
    with pytest.raises(ParameterError, match=f"The '{param}' parameter of ALSRecommender"):
        make_model("als", **{param: value}).fit(dataset)


def test_params_round_trip_and_artifacts_load(split, dataset, tmp_path):
    validation = Validation(leave_last(split.train).test)
    model = make_model("als", factors=4, iterations=6, early_stopping=2, init_fraction=0.5)
    assert model.clone().get_params() == model.get_params()
    model.fit(dataset, callback=validation.callback(model))
    loaded = load_artifact(model.save(tmp_path / "a")).model
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.item_factors_, model.item_factors_)
    old = {
        k: v
        for k, v in model.get_params().items()
        if k not in ("early_stopping", "tol", "init_fraction", "init_iterations")
    }
    assert make_model("als", **old).early_stopping is None  # manifests written before still load
