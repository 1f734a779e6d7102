"""GET /v1/model/card and POST /v1/feedback (the service parts of the clinical-trust issue)."""

from __future__ import annotations

import pytest

from recommender.data.feedback import read_feedback
from recommender.trust.model_card import SECTIONS

from .conftest import audit_lines


def test_the_model_card_is_markdown_for_any_token(client, clinician, admin):
    for headers in (clinician, admin):
        response = client.get("/v1/model/card", headers=headers)
        assert response.status_code == 200
        assert response.content_type == "text/markdown; charset=utf-8"
        text = response.get_data(as_text=True)
        version = client.get("/v1/model", headers=headers).get_json()["version"]
        assert text.startswith(f"# Model card: {version}")
        assert all(f"## {section}" in text for section in SECTIONS)
    assert client.get("/v1/model/card").status_code == 401


def test_the_model_card_follows_a_reload(client, admin, site):
    first = client.get("/v1/model/card", headers=admin).get_data(as_text=True)
    site_other = site.other_artifact.name
    assert (
        client.post("/v1/admin/reload", json={"artifact": site_other}, headers=admin).status_code
        == 200
    )
    second = client.get("/v1/model/card", headers=admin).get_data(as_text=True)
    assert first.splitlines()[0] != second.splitlines()[0]


DECISION = {
    "feedback_id": "fb-1",
    "request_id": "0f3c2a",
    "patient_id": "P0001",
    "treatment_id": "T0",
    "decision": "overridden",
    "reason": "patient preference",
}


def test_feedback_is_stored_once_with_the_pseudonym(client, clinician, site):
    response = client.post("/v1/feedback", json=DECISION, headers=clinician)
    assert response.status_code == 201
    assert response.get_json() == {"status": "stored", "feedback_id": "fb-1"}
    again = client.post("/v1/feedback", json=DECISION, headers=clinician)
    assert again.status_code == 200 and again.get_json()["status"] == "already_stored"
    stored = read_feedback(site.root / "feedback.jsonl")
    assert len(stored) == 1
    row = stored.iloc[0]
    assert row["feedback_id"] == "api:ward-7:fb-1"
    assert row["patient"] != "P0001" and len(row["patient"]) == 32
    assert (row["treatment_id"], row["decision"], row["principal"], row["source"]) == (
        "T0",
        "overridden",
        "ward-7",
        "api",
    )
    assert "P0001" not in (site.root / "feedback.jsonl").read_text()
    line = audit_lines(site)[-1]
    assert line["endpoint"] == "api.clinician_feedback" and line["status"] == 200
    assert line["patient_pseudonym"] == row["patient"]
    assert line["recommendation_request_id"] == "0f3c2a" and line["decision"] == "overridden"


def test_feedback_with_the_model_version(client, clinician, site):
    version = client.get("/v1/model", headers=clinician).get_json()["version"]
    body = {**DECISION, "feedback_id": "fb-2", "model_version": version, "decision": "accepted"}
    del body["request_id"], body["reason"]
    assert client.post("/v1/feedback", json=body, headers=clinician).status_code == 201
    assert read_feedback(site.root / "feedback.jsonl").iloc[0]["model_version"] == version


@pytest.mark.parametrize(
    "change, status, code",
    [
        ({"decision": "maybe"}, 400, "invalid_body"),
        ({"request_id": None}, 400, "invalid_body"),  # neither request id nor model version
        ({"colour": "blue"}, 400, "invalid_body"),
        ({"feedback_id": ""}, 400, "invalid_body"),
        ({"treatment_id": "NOPE"}, 404, "unknown_treatment"),
    ],
)
def test_bad_feedback_is_refused_and_audited(client, clinician, site, change, status, code):
    body = {**DECISION, **change}
    body = {k: v for k, v in body.items() if v is not None}
    response = client.post("/v1/feedback", json=body, headers=clinician)
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code
    assert audit_lines(site)[-1]["error_code"] == code


def test_feedback_needs_a_clinician(client, admin):
    assert client.post("/v1/feedback", json=DECISION, headers=admin).status_code == 403
    assert client.post("/v1/feedback", json=DECISION).status_code == 401


def test_feedback_file_is_configurable(make_app, clinician, site):
    path = site.root / "elsewhere" / "decisions.jsonl"
    path.parent.mkdir()
    client = make_app(FEEDBACK_LOG=str(path)).test_client()
    assert client.post("/v1/feedback", json=DECISION, headers=clinician).status_code == 201
    assert len(read_feedback(path)) == 1
