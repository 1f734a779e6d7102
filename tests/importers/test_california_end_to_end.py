"""Import the Synthea California population, train, and ask for a patient's recommendations
through the CLI and the service: treatment names are shown."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from recommender.cli import main
from recommender.data.pseudonym import create_key_file
from service import create_app
from service.tokens import add_token
from tests.importers.conftest import shared_dataset


@pytest.fixture(scope="module")
def california(tmp_path_factory):
    source = shared_dataset("synthea_ibm_california_1000")
    root = tmp_path_factory.mktemp("california")
    key = create_key_file(root / "key")
    assert main(["import", "synthea", str(source), "--out", str(root / "data")]) == 0
    assert (
        main(
            [
                "train",
                "--data",
                str(root / "data"),
                "--out",
                str(root / "model"),
                "--model",
                "als",
                "--factors",
                "16",
                "--pseudonym-key-file",
                str(key),
            ]
        )
        == 0
    )
    outcomes = pd.read_csv(root / "data" / "outcomes.csv", dtype=str)
    hypertension = outcomes[outcomes.condition_id == "snomed|38341003"]
    patient = hypertension.patient_id.value_counts().index[0]
    names = pd.read_csv(root / "data" / "treatments.csv", dtype=str).set_index("treatment_id")[
        "name"
    ]
    return root, key, patient, names


def test_cli_shows_names(california, capsys):
    root, key, patient, names = california
    capsys.readouterr()
    assert (
        main(
            [
                "recommend",
                "--artifact",
                str(root / "model"),
                "--patient",
                patient,
                "-k",
                "3",
                "--pseudonym-key-file",
                str(key),
            ]
        )
        == 0
    )
    answer = json.loads(capsys.readouterr().out)
    assert answer["recommendations"], answer
    for item in answer["recommendations"]:
        assert item["treatment_name"] == names[item["treatment_id"]]
    for item in answer["excluded"]:
        assert item["treatment_name"] == names[item["treatment_id"]]


def test_service_shows_names(california):
    root, key, patient, names = california
    token = add_token(root / "tokens.json", "dr", "clinician")
    app = create_app(
        {
            "ARTIFACT": str(root / "model"),
            "API_TOKENS_FILE": str(root / "tokens.json"),
            "PSEUDONYM_KEY_FILE": str(key),
            "AUDIT_LOG": str(root / "audit.log"),
        }
    )
    response = app.test_client().get(
        f"/v1/patients/{patient}/recommendations?k=3", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["recommendations"]
    assert all(
        item["treatment_name"] == names[item["treatment_id"]] for item in body["recommendations"]
    )
    assert patient not in (root / "audit.log").read_text()  # pseudonymous audit trail


def test_a_patient_on_hydrochlorothiazide_25_is_not_offered_6_25(california):
    """The issue's example on real Synthea data: the 25 MG (rxnorm|316049) and the 6.25 MG
    (rxnorm|316052) products are one ingredient; the CLI's --active reaches the rule."""
    from recommender.models.persistence import load_artifact

    root, key, patient, names = california
    hctz_25, hctz_6 = "rxnorm|316049", "rxnorm|316052"
    model = load_artifact(root / "model").model
    dataset = model.dataset_
    assert {hctz_25, hctz_6} <= set(dataset.treatments.external_ids)
    answer = model.recommend_new(
        [], ["snomed|38341003"], k=50, condition_id=None, active_treatments=[hctz_25]
    )
    assert hctz_6 not in answer.treatment_ids and hctz_25 not in answer.treatment_ids
    detail = {e.treatment_id: e.detail for e in answer.excluded}[hctz_6]
    assert "drug|hydrochlorothiazide" in detail and "Hydrochlorothiazide 25 MG" in detail
    dataset.safety = dataclasses.replace(dataset.safety, duplicates="flag")
    flagged = model.recommend_new(
        [], ["snomed|38341003"], k=50, condition_id=None, active_treatments=[hctz_25]
    )
    (item,) = [r for r in flagged.recommendations if r.treatment_id == hctz_6]  # 78 patients
    assert item.flags == [
        {
            "type": "duplicate_therapy",
            "action": "dose_change",
            "with": hctz_25,
            "ingredient": "drug|hydrochlorothiazide",
        }
    ]
    assert hctz_25 not in flagged.treatment_ids
