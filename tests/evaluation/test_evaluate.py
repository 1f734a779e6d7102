"""Evaluation: known answers on a hand-built cohort, engine consistency, reports and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recommender.cli import main
from recommender.data import splits as S
from recommender.data.dataset import Dataset
from recommender.data.policies import SafetyPolicy
from recommender.data.tables import read_tables, validate_tables, write_tables
from recommender.evaluation.evaluate import EvaluationResult, evaluate, evaluate_split
from recommender.evaluation.planted import evaluate_planted
from recommender.evaluation.queries import build_queries
from recommender.evaluation.report import PLOT, write_report
from recommender.evaluation.spec import named_models
from recommender.exceptions import ParameterError
from recommender.models import make_model

FAST = {
    "popular": "popular",
    "condition-popular": "condition-popular",
    "als": make_model("als", factors=8, iterations=3),
    "cosine": "cosine",
}


def hand_built():
    """Popularity order A (3 worked) > B (2) > C (1) > X; patient q tried D, held out B and C.

    q is allergic to ALG, which contraindicates X, so X is never rankable for q.
    """
    rows = [(p, "A", "responded") for p in ("p1", "p2", "p3")]
    rows += [(p, "B", "responded") for p in ("p4", "p5")]
    rows += [("p6", "C", "responded"), ("p7", "X", "no_response"), ("q", "D", "responded")]
    train = validate_tables(
        {
            "outcomes": pd.DataFrame(rows, columns=["patient_id", "treatment_id", "outcome"]),
            "patient_conditions": pd.DataFrame({"patient_id": ["q"], "condition_id": ["ALG"]}),
            "contraindications": pd.DataFrame({"treatment_id": ["X"], "condition_id": ["ALG"]}),
        }
    )
    test = pd.DataFrame(
        {
            "patient_id": ["q", "q", "q"],
            "treatment_id": ["B", "C", "X"],
            "outcome": np.array([1.0, -1.0, -0.5], np.float32),
            "timestamp": pd.Series([pd.NaT] * 3, dtype="datetime64[ns, UTC]"),
            "condition_id": [None, None, None],
            "adverse": np.array([0, 1, 0], np.int8),
        }
    )
    return train, test


def test_known_answer_with_the_popularity_model():
    train, test = hand_built()
    result = evaluate("popular", train, test, k=3, ks=(1, 2), safety=SafetyPolicy(min_support=1))
    row = result.models["popular"].queries.iloc[0]
    # ranking for q: A, B, C (D tried, X contraindicated); relevant: B only
    assert (row["n_heldout"], row["n_relevant"], row["n_allowed"]) == (3, 1, 3)
    assert row["precision@1"] == 0 and row["hit@1"] == 0
    assert row["precision@2"] == 0.5 and row["recall@2"] == 1 and row["hit@2"] == 1
    assert row["map@3"] == pytest.approx(0.5)
    assert row["ndcg@3"] == pytest.approx(1 / np.log2(3))
    assert row["rr"] == pytest.approx(0.5)
    # B (worked) outscores C and the excluded X (both failed) -> AUC 1
    assert row["outcome_auc"] == 1.0
    # harmful: C (adverse flag, rank 2 of 0..2 -> 1.0) and X (outcome < 0, excluded -> 1.0)
    assert row["harm_rank"] == 1.0
    summary = result.models["popular"].summary
    assert summary["coverage@1"] == pytest.approx(1 / 5)  # A of A, B, C, D, X
    assert summary["mrr"] == pytest.approx(0.5)
    assert result.ks == (1, 2, 3)


def test_tiny_cohort_gives_sensible_numbers(tiny_tables):
    split = S.leave_k_out(tiny_tables, k=2, seed=0)
    result = evaluate_split(FAST, split, k=3)
    assert set(result.models) == set(FAST)
    n_queries = split.test.groupby(["patient_id", "condition_id"]).ngroups
    for name, model_result in result.models.items():
        summary = model_result.summary
        assert summary["n_queries"] == n_queries == len(model_result.queries)
        for key, value in summary.items():
            if not key.startswith("n_"):
                assert 0 <= value <= 1, (name, key, value)
        assert model_result.fit_seconds > 0 and model_result.rank_seconds > 0
    # the trait is learnable: the condition's success rates beat a coin flip at rank 1
    assert result.models["condition-popular"].summary["hit@1"] > 0.5
    assert result.split["method"] == "leave-k-out(k=2, seed=0)"
    frame = result.summary_frame()
    assert list(frame.index) == list(FAST) and "ndcg@3" in frame
    assert result.compare("ndcg").shape == (len(result.ks), len(FAST))


def test_evaluation_ranks_like_the_engine(tiny_tables):
    """hit@1 of each query agrees with rank 1 of recommend_many for the same fitted model."""
    train, test = S.leave_last(tiny_tables)
    model_result = evaluate({"als": FAST["als"]}, train, test, k=1).models["als"]
    queries = model_result.queries
    top = model_result.model.recommend_batch(
        queries["patient_id"].tolist(), k=1, condition_ids=queries["condition_id"].tolist()
    )
    dataset = model_result.model.dataset_
    worked = test[dataset.policy.worked(test["outcome"].to_numpy())]
    relevant = set(zip(worked["patient_id"], worked["condition_id"], worked["treatment_id"]))
    engine_hits = [
        float((p, c, t) in relevant)
        for p, c, t in zip(top["patient_id"], top["condition_id"], top["treatment_id"])
    ]
    assert engine_hits == queries["hit@1"].tolist()


def test_queries_group_by_patient_and_condition_unless_told_not_to(tiny_tables):
    train, test = S.leave_last_episode(tiny_tables)
    dataset = Dataset.from_tables(train)
    by_condition = build_queries(dataset, test)
    by_patient = build_queries(dataset, test, by_condition=False)
    assert len(by_condition) == test.groupby(["patient_id", "condition_id"]).ngroups
    assert len(by_patient) == test["patient_id"].nunique()
    assert by_patient.frame["condition"].eq(-1).all()
    assert len(by_condition.items) == len(test.drop_duplicates(["patient_id", "treatment_id"]))


def test_models_are_cloned_and_named():
    model = make_model("als", factors=4)
    named = named_models([model, "als", "popular"])
    assert list(named) == ["als", "als-2", "popular"]
    assert named["als"] is not model and named["als"].factors == 4
    with pytest.raises(ParameterError, match="unknown model 'nope'"):
        named_models(["nope"])
    with pytest.raises(ParameterError, match="k must be a positive int"):
        evaluate("popular", *hand_built(), k=0)


def test_report_folder(tmp_path, tiny_tables):
    result = evaluate_split(
        {"popular": "popular", "als": FAST["als"]}, S.leave_last(tiny_tables), k=5
    )
    out = write_report(result, tmp_path / "report")
    assert sorted(p.name for p in out.iterdir()) == [
        "metrics_vs_k.png",
        "queries",
        "report.md",
        "results.json",
    ]
    assert (out / PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / "results.json").read_text())
    assert data["k"] == 5 and set(data["models"]) == {"popular", "als"}
    assert data["models"]["als"]["summary"]["outcome_auc"] is None  # one item per query: no pairs
    text = (out / "report.md").read_text()
    assert "| model | precision@5 |" in text and "leave-last" in text
    assert (
        len(pd.read_csv(out / "queries" / "als.csv")) == result.models["als"].summary["n_queries"]
    )
    assert not list(tmp_path.glob(".report*"))  # no temporary folder left behind


def planted_folder(tmp_path, tables):
    """Tables without each patient's last episode, plus held_out.csv naming the therapy that worked."""
    train, test = S.leave_last_episode(tables)
    best = test[test["outcome"] > 0].drop_duplicates(["patient_id", "condition_id"])
    held = pd.DataFrame(
        {
            "patient_id": best["patient_id"],
            "condition_id": best["condition_id"],
            "timestamp": "2022-01-01",
            "best_treatment_id": best["treatment_id"],
            "bayes_hit_probability": 0.9,
            "popularity_hit_probability": 0.5,
        }
    )
    folder = write_tables(train, tmp_path / "planted")
    held.to_csv(folder / "held_out.csv", index=False)
    return folder, len(held)


def test_evaluate_planted(tmp_path, tiny_tables):
    folder, n = planted_folder(tmp_path, tiny_tables)
    planted = evaluate_planted(["condition-popular", "popular"], folder)
    assert planted.n_episodes == n
    assert planted.bayes_rate == pytest.approx(0.9) and planted.popularity_rate == pytest.approx(
        0.5
    )
    assert 0 <= planted.hit_at_1["popular"] <= 1
    assert planted.hit_at_1["condition-popular"] > 0.3  # 4 therapies per condition: chance 0.25
    assert planted.to_dict()["hit@1"].keys() == {"condition-popular", "popular"}
    # the same number through the engine's public batch API
    held = pd.read_csv(folder / "held_out.csv")
    model = make_model("popular").fit(Dataset.from_tables(read_tables(folder)))
    top = model.recommend_batch(
        held["patient_id"].tolist(), k=1, condition_ids=held["condition_id"].tolist()
    )
    expected = (top["treatment_id"].to_numpy() == held["best_treatment_id"].to_numpy()).mean()
    assert planted.hit_at_1["popular"] == pytest.approx(expected)


def test_cli_evaluate(tmp_path, tiny_tables, capsys):
    folder, _ = planted_folder(tmp_path, tiny_tables)
    out = tmp_path / "evaluation"
    code = main(
        [
            "evaluate",
            "--data",
            str(folder),
            "--models",
            "popular,cosine",
            "-k",
            "3",
            "--split",
            "leave-k-out",
            "--leave-out",
            "2",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "leave-k-out(k=2, seed=0)" in printed and "planted hit@1" in printed
    data = json.loads((out / "results.json").read_text())
    assert set(data["planted"]["hit@1"]) == {"popular", "cosine"}
    assert (out / PLOT).is_file()


def test_cli_evaluate_temporal_without_planted(tmp_path, tiny_data_dir, capsys):
    code = main(
        [
            "evaluate",
            "--data",
            str(tiny_data_dir),
            "--models",
            "popular",
            "--split",
            "temporal",
            "--fraction",
            "0.3",
            "--out",
            str(tmp_path / "ev"),
        ]
    )
    assert code == 0 and "temporal(cutoff=" in capsys.readouterr().out
    assert json.loads((tmp_path / "ev" / "results.json").read_text())["planted"] is None


def test_cli_evaluate_errors(tmp_path, tiny_data_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--data", str(tiny_data_dir), "--models", "als,nope"])
    assert exit_info.value.code == 2 and "unknown model(s) ['nope']" in capsys.readouterr().err
    code = main(["evaluate", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert code == 2 and capsys.readouterr().err.startswith("error: ")


def test_result_type(tiny_tables):
    result = evaluate("popular", *S.leave_last(tiny_tables))
    assert isinstance(result, EvaluationResult) and result.k == 10 and 10 in result.ks


def test_repeated_held_out_treatment_uses_its_latest_outcome():
    train, _ = hand_built()
    test = pd.DataFrame(
        {
            "patient_id": ["q", "q"],
            "treatment_id": ["B", "B"],
            "outcome": np.array([1.0, -0.5], np.float32),
            "timestamp": pd.to_datetime(["2021-02-01", "2021-01-01"], utc=True),
            "condition_id": [None, None],
            "adverse": np.array([0, 0], np.int8),
        }
    )
    items = build_queries(Dataset.from_tables(train), test).items
    assert items[["outcome", "worked", "harmful"]].values.tolist() == [[1.0, True, True]]
