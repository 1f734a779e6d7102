"""Policy value against the truth, and off-policy evaluation, on a generated observational cohort."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recommender.cli import main
from recommender.data.dataset import Dataset
from recommender.data.synthetic.observational import generate_observational, write_observational
from recommender.data.tables import read_tables
from recommender.evaluation.off_policy import off_policy_evaluation
from recommender.evaluation.truth import evaluate_against_truth
from recommender.exceptions import DataValidationError
from recommender.models import make_model

QUICK = {"n_bags": 2, "n_trees": 60}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("cohort") / "obs"
    write_observational(generate_observational(4000, seed=8), path)
    return path


def test_the_outcome_model_beats_the_guideline_and_popularity(folder):
    dataset = Dataset.from_tables(read_tables(folder))
    models = {"outcome": make_model("outcome", **QUICK), "condition-popular": "condition-popular"}
    result = evaluate_against_truth(models, dataset, folder)
    assert result.gaps["outcome"]["all"] > 0.3
    assert result.gaps["outcome"]["all"] > result.gaps["condition-popular"]["all"] + 0.2
    ref = result.reference
    assert ref["guideline"]["all"] < ref["bound"]["all"] < ref["oracle"]["all"]
    assert result.n_episodes["all"] == result.n_episodes["warm"] + result.n_episodes["cold"]


def test_off_policy_files_follow_the_contract(folder, tmp_path):
    out = tmp_path / "report"
    code = main(
        [
            "evaluate",
            "--data",
            str(folder),
            "--models",
            "condition-popular,als",
            "--split",
            "temporal",
            "--fraction",
            "0.3",
            "--ope",
            "--bootstrap",
            "50",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    ope = json.loads((out / "ope.json").read_text())
    assert set(ope["models"]) == {"condition-popular", "als"}
    for entry in ope["models"].values():
        assert entry["episodes"] > 100
        for estimator in ("ips", "snips", "dr"):
            value, (low, high) = (
                entry["estimates"][estimator]["value"],
                entry["estimates"][estimator]["ci95"],
            )
            assert low <= value <= high
    assert 0 < ope["behaviour"]["value"] < 1
    decisions = pd.read_csv(out / "ope_decisions_als.csv", dtype=str, keep_default_na=False)
    assert list(decisions.columns) == ["patient_id", "condition_id", "treatment_id"]
    assert len(decisions) == ope["models"]["als"]["episodes"]
    treatments = set(read_tables(folder).treatments.treatment_id)
    assert set(decisions.treatment_id) - {""} <= treatments
    assert "Off-policy evaluation" in (out / "ope.md").read_text()
    assert "Policy value against the truth" in (out / "report.md").read_text()


def test_dr_is_close_to_the_true_value_of_the_logged_decisions(folder):
    tables = read_tables(folder)
    truth = pd.read_csv(folder / "truth_logged.csv")
    result = off_policy_evaluation(
        ["condition-popular"],
        tables,
        fraction=0.3,
        n_bootstrap=100,
        nuisance=make_model("outcome", **QUICK),
    )
    chosen = result.choices["condition-popular"]
    p = truth.set_index(["patient_id", "condition_id", "treatment_id"]).p_success
    true = np.nan_to_num(p.reindex(pd.MultiIndex.from_frame(chosen)).to_numpy(), nan=0.0).mean()
    dr = result.estimates["condition-popular"]["dr"]
    assert abs(dr.value - true) < 0.05
    assert dr.ci95[0] - 0.02 <= true <= dr.ci95[1] + 0.02


def test_no_first_line_decision_after_the_cutoff_is_a_clear_error(folder):
    tables = read_tables(folder)
    with pytest.raises(DataValidationError, match="no first-line decision after the cutoff"):
        off_policy_evaluation(["condition-popular"], tables, cutoff="2100-01-01")


def test_generate_writes_either_story(tmp_path):
    assert main(["generate", "--out", str(tmp_path / "o"), "--patients", "300", "--seed", "1"]) == 0
    assert (tmp_path / "o" / "truth_held_out.csv").is_file()
    assert (tmp_path / "o" / "observations.csv").is_file()
    assert (
        main(["generate", "--cohort", "planted", "--out", str(tmp_path / "p"), "--patients", "300"])
        == 0
    )
    assert (tmp_path / "p" / "held_out.csv").is_file() and not (
        tmp_path / "p" / "observations.csv"
    ).exists()


def test_a_condition_without_candidates_values_as_a_failure(folder):
    """A decision for a condition the training part never treated (here a comorbidity, known
    only from diagnoses), where the policy chose nothing: q = e = 0, no crash."""
    from recommender.evaluation.policy_value import LoggedDecisions, nuisance

    dataset = Dataset.from_tables(read_tables(folder))
    model = make_model("outcome", **QUICK).fit(dataset)
    untreated = [c for c in range(len(dataset.conditions)) if not len(dataset.candidates(c))]
    assert untreated
    treated = next(c for c in range(len(dataset.conditions)) if len(dataset.candidates(c)))
    decisions = LoggedDecisions(
        frame=pd.DataFrame(),
        patient=np.array([0, 1]),
        condition=np.array([untreated[0], treated]),
        treatment=np.array([-1, int(dataset.candidates(treated)[0])]),
        time=np.full(2, dataset.latest_time),
        success=np.array([0.0, 1.0]),
    )
    q, e = nuisance(model, decisions, decisions.treatment)
    assert q[0] == 0.0 and e[0] == 0.0
    assert 0 < q[1] < 1 and 0 < e[1] <= 1
