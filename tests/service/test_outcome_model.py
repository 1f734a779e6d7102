"""The service serving the outcome model: predicted success with its interval, in REST and cards."""

from __future__ import annotations

import pytest

from recommender.data.pseudonym import Pseudonymizer
from recommender.data.synthetic.observational import generate_observational, write_observational
from recommender.training import train_artifact
from service import create_app
from service.cds_hooks.cards import Namer, basis_markdown


@pytest.fixture(scope="module")
def outcome_artifact(tmp_path_factory):
    root = tmp_path_factory.mktemp("outcome-site")
    cohort = generate_observational(1500, seed=2)
    write_observational(cohort, root / "data")
    return root, cohort


@pytest.fixture
def outcome_app(site, outcome_artifact, monkeypatch):
    import os

    for variable in list(os.environ):
        if variable.startswith("RECOMMENDER_"):
            monkeypatch.delenv(variable)
    root, cohort = outcome_artifact
    artifact = train_artifact(
        root / "data",
        site.root / "outcome",
        kind="outcome",
        params={"n_bags": 2, "n_trees": 20},
        pseudonymizer=Pseudonymizer.from_file(site.key),
    )
    return create_app(site.config(ARTIFACT=str(artifact))), cohort


def test_rest_answers_carry_predicted_success_interval_and_overlap(outcome_app, clinician):
    app, cohort = outcome_app
    held = cohort.held_out.iloc[0]
    response = app.test_client().get(
        f"/v1/patients/{held.patient_id}/recommendations?k=3&condition={held.condition_id}",
        headers=clinician,
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["model"]["type"] == "outcome" and body["recommendations"]
    for item in body["recommendations"]:
        explanation = item["explanation"]
        low, high = explanation["predicted_success_ci95"]
        assert low <= explanation["predicted_success"] <= high
        assert abs(explanation["predicted_success"] - item["score"]) < 1e-3
        assert 0 <= explanation["harm_probability"] <= 1
        assert set(explanation["overlap"]) == {"propensity", "effective_patients", "low"}
        assert "evidence" in explanation


def test_a_card_shows_the_prediction_and_warns_of_little_evidence():
    item = {
        "explanation": {
            "basis": "predicted success for patients like this one",
            "predicted_success": 0.62,
            "predicted_success_ci95": [0.41, 0.79],
            "harm_probability": 0.05,
            "overlap": {"propensity": 0.01, "effective_patients": 3.2, "low": True},
            "contributions": [
                {
                    "source": "observation",
                    "code": "loinc|33914-3",
                    "value": 28.0,
                    "contribution": -0.12,
                },
                {"source": "age", "value": 71.0, "contribution": 0.02},
            ],
        }
    }

    class Model:
        def display_names(self):
            return {}, {"loinc|33914-3": "eGFR"}

    text = "\n".join(basis_markdown(item, "C01", Namer(Model())))
    assert "**Predicted success:** 62% (95% interval 41%-79%); chance of harm 5%." in text
    assert "Few comparable patients" in text and "propensity 1%" in text
    assert "eGFR 28.0 (lowered the score)" in text and "age 71.0 (raised the score)" in text
