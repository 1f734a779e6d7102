"""Tuning: search points, a quick 3-trial search, its outputs and the CLI."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from recommender.cli import main
from recommender.evaluation.tune import (
    Dimension,
    candidate_points,
    search_space,
    train_best,
    tune,
    write_results,
)
from recommender.exceptions import ParameterError
from recommender.models.persistence import load_artifact

#: A small, fast space for the factor models.
QUICK = {
    "factors": Dimension((4, 8)),
    "iterations": Dimension((2, 3)),
    "regularization": Dimension((0.01, 0.1), log=True),
}


def test_search_space_has_only_the_models_params_plus_policy():
    assert list(search_space("als")) == [
        "factors",
        "regularization",
        "iterations",
        "alpha",
        "side_weight",
    ]
    assert set(search_space("bpr")) >= {"learning_rate"}
    assert search_space("bpr")["iterations"].values == (50, 100, 200, 400)
    assert list(search_space("cosine")) == ["K", "alpha", "side_weight"]
    assert list(search_space("popular")) == ["alpha", "side_weight"]
    with pytest.raises(ParameterError, match="unknown model"):
        search_space("nope")


def test_random_points_are_reproducible_and_within_bounds():
    space = search_space("als")
    points = candidate_points(space, 25, "random", seed=3)
    assert points == candidate_points(space, 25, "random", seed=3)
    assert points != candidate_points(space, 25, "random", seed=4)
    for point in points:
        assert point["factors"] in space["factors"].values and isinstance(point["factors"], int)
        assert 0.001 <= point["regularization"] <= 1.0
        assert 0.5 <= point["alpha"] <= 16.0 and 0.0 <= point["side_weight"] <= 2.0


def test_grid_points_cover_the_grid_in_a_seeded_order():
    space = {"a": Dimension((1, 2)), "b": Dimension((0.5, 1.5, 2.5))}
    everything = candidate_points(space, None, "grid", seed=0)
    assert sorted((p["a"], p["b"]) for p in everything) == [
        (a, b) for a in (1, 2) for b in (0.5, 1.5, 2.5)
    ]
    assert candidate_points(space, 4, "grid", seed=0) == everything[:4]
    with pytest.raises(ParameterError, match="search must be one of"):
        candidate_points(space, 3, "bayes")
    with pytest.raises(ParameterError, match="trials must be a positive int"):
        candidate_points(space, 0)


def test_tune_three_trials_and_write_results(tmp_path, tiny_tables):
    result = tune(tiny_tables, "als", trials=3, seed=1, k=3, space=QUICK)
    trials = result.trials
    assert len(trials) == 3 and sorted(trials["trial"]) == [0, 1, 2]
    assert trials["ndcg@3"].is_monotonic_decreasing
    assert result.best_params["factors"] == trials["factors"].iloc[0]
    assert isinstance(result.best_params["factors"], int)  # not a float from a mixed-dtype row
    assert result.best_params["random_state"] == 1
    assert result.best_policy.alpha == trials["alpha"].iloc[0]
    assert result.split["method"] == "leave-last"
    csv_path, json_path = write_results(result, tmp_path / "out" / "als.csv")
    assert len(pd.read_csv(csv_path)) == 3
    best = json.loads(json_path.read_text())["best"]
    assert best["params"]["factors"] == result.best_params["factors"]
    assert best["metrics"]["ndcg@3"] == pytest.approx(trials["ndcg@3"].iloc[0])
    artifact = train_best(result, tiny_tables, tmp_path / "artifact")
    loaded = load_artifact(artifact)
    assert loaded.model.factors == result.best_params["factors"]
    assert loaded.dataset.policy == result.best_policy
    assert "validation_ndcg@3" in loaded.manifest["metrics"]


def test_tune_policy_only_model(tiny_tables):
    result = tune(tiny_tables, "popular", trials=2, search="grid", seed=0, k=3)
    assert result.best_params == {} and set(result.trials.columns) >= {"alpha", "side_weight"}


def test_cli_tune_with_train_best(tmp_path, tiny_data_dir, capsys):
    out = tmp_path / "tune" / "cosine.csv"
    code = main(
        [
            "tune",
            "--data",
            str(tiny_data_dir),
            "--model",
            "cosine",
            "--trials",
            "3",
            "--seed",
            "2",
            "-k",
            "3",
            "--out",
            str(out),
            "--train-best",
            str(tmp_path / "best"),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "3 trials of cosine" in printed and "wrote cosine artifact" in printed
    assert len(pd.read_csv(out)) == 3
    best = json.loads(out.with_suffix(".json").read_text())["best"]
    assert load_artifact(tmp_path / "best").model.K == best["params"]["K"]


def test_cli_tune_rejects_unknown_model(tiny_data_dir, capsys):
    with pytest.raises(SystemExit):
        main(["tune", "--data", str(tiny_data_dir), "--model", "nope"])
    assert "invalid choice" in capsys.readouterr().err
