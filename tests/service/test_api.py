"""The clinical endpoints through Flask's test client: answers, validation and every error."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from recommender.ranking import RecommendationList

from .conftest import audit_lines


def test_the_right_therapy_ranks_first_for_a_probe_patient(client, clinician, site):
    for probe, best in list(site.truth.items())[:4]:
        response = client.get(
            f"/v1/patients/{probe}/recommendations?condition=C&k=2", headers=clinician
        )
        assert response.status_code == 200
        body = response.get_json()
        assert body["patient_id"] == probe and body["condition_id"] == "C"
        assert body["recommendations"][0]["treatment_id"] == best
        assert [r["rank"] for r in body["recommendations"]] == [1, 2]


def test_recommendations_report_exclusions_and_the_model(client, clinician, site):
    body = client.get("/v1/patients/P0002/recommendations?k=5", headers=clinician).get_json()
    reasons = {e["treatment_id"]: e["reason"] for e in body["excluded"]}
    assert reasons["TX"] == "contraindicated"  # P0002 carries allergy ALG
    assert "TX" not in {r["treatment_id"] for r in body["recommendations"]}
    assert body["model"]["version"].startswith("als-")
    tried = client.get(
        "/v1/patients/P0002/recommendations?k=5&include_tried=true", headers=clinician
    ).get_json()
    assert "already_tried" not in {e["reason"] for e in tried["excluded"]}


def test_the_response_is_the_engine_answer_with_any_field_it_adds(client, clinician, monkeypatch):
    original = RecommendationList.to_dict
    monkeypatch.setattr(
        RecommendationList, "to_dict", lambda self: {**original(self), "interaction_flags": ["X"]}
    )
    body = client.get("/v1/patients/P0001/recommendations", headers=clinician).get_json()
    assert body["interaction_flags"] == ["X"]


def test_responses_are_not_cached_and_carry_the_servers_own_request_id(client, clinician, site):
    """Two requests with the same client id get two server ids; the audit keeps both."""
    headers = {**clinician, "X-Request-ID": "abc-123"}
    first = client.get("/v1/patients/P0001/recommendations", headers=headers)
    second = client.get("/v1/patients/P0001/recommendations", headers=headers)
    assert first.headers["Cache-Control"] == "no-store"
    ids = [first.headers["X-Request-ID"], second.headers["X-Request-ID"]]
    # The client's id is kept aside, never echoed: a server id is 32 hex digits with no hyphen.
    assert len(set(ids)) == 2 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    lines = audit_lines(site)[-2:]
    assert [x["request_id"] for x in lines] == ids
    assert [x["client_request_id"] for x in lines] == ["abc-123", "abc-123"]
    generated = client.get("/health", headers={"X-Request-ID": "bad id with spaces"})
    assert len(generated.headers["X-Request-ID"]) == 32


def test_audit_lines_keep_only_known_ids_and_short_client_ids(client, clinician, site):
    """A free-text condition is not copied into the audit log (it could name the patient)."""
    text = "patient Jane Doe, born 1961, " + "x" * 4000
    response = client.get(
        "/v1/patients/P0001/recommendations",
        query_string={"condition": text[:200]},
        headers=clinician,
    )
    assert response.status_code in (400, 404)
    line = audit_lines(site)[-1]
    assert line["condition_id"] is None and line["unknown_ids"] == {"condition_id": 1}
    assert "Jane" not in (site.root / "audit.log").read_text()
    client.get("/v1/patients/P0001/recommendations?condition=C", headers=clinician)
    line = audit_lines(site)[-1]
    assert line["condition_id"] == "C" and "unknown_ids" not in line
    response = client.post(
        "/v1/feedback",
        json={
            "feedback_id": "f-1",
            "request_id": "a b c <script>",
            "patient_id": "P0001",
            "treatment_id": "NOPE",
            "decision": "accepted",
        },
        headers=clinician,
    )
    line = audit_lines(site)[-1]
    assert line["treatment_ids"] == [] and line["unknown_ids"] == {"treatment_ids": 1}
    if response.status_code != 400:  # the schema may refuse the request id itself
        assert line["recommendation_request_id"] is None
        assert line["invalid_fields"] == ["recommendation_request_id"]


@pytest.mark.parametrize(
    "query, code",
    [
        ("k=0", "invalid_parameter"),
        ("k=101", "invalid_parameter"),
        ("k=abc", "invalid_parameter"),
        ("k=-1", "invalid_parameter"),
        ("k=1.5", "invalid_parameter"),
        ("k=" + "9" * 5000, "invalid_parameter"),
        ("k=1&k=2", "invalid_parameter"),
        ("include_tried=maybe", "invalid_parameter"),
        ("condition=", "invalid_parameter"),
        ("colour=blue", "unknown_parameter"),
    ],
)
def test_bad_query_parameters_are_400(client, clinician, query, code):
    response = client.get(f"/v1/patients/P0001/recommendations?{query}", headers=clinician)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == code


def test_max_k_is_configurable(make_app, clinician):
    client = make_app(MAX_K=3, DEFAULT_K=2).test_client()
    response = client.get("/v1/patients/P0001/recommendations?k=3", headers=clinician)
    assert response.status_code == 200
    error = client.get("/v1/patients/P0001/recommendations?k=4", headers=clinician).get_json()
    assert error["error"]["details"]["maximum"] == 3
    default = client.get("/v1/patients/P0001/recommendations", headers=clinician).get_json()
    assert len(default["recommendations"]) <= 2


def test_unknown_patient_and_condition_are_404_with_a_clear_message(client, clinician):
    patient = client.get("/v1/patients/NOBODY/recommendations", headers=clinician)
    assert patient.status_code == 404
    assert patient.get_json()["error"]["code"] == "unknown_patient"
    assert "NOBODY" in patient.get_json()["error"]["message"]
    condition = client.get("/v1/patients/P0001/recommendations?condition=ZZ", headers=clinician)
    assert condition.status_code == 404
    assert condition.get_json()["error"]["code"] == "unknown_condition"


def test_an_overlong_patient_id_is_400(client, clinician):
    response = client.get(f"/v1/patients/{'P' * 300}/recommendations", headers=clinician)
    assert response.status_code == 400


# --- POST /v1/recommendations ------------------------------------------------------------------

NEW_PATIENT = {
    "history": [
        {"treatment_id": "S0", "outcome": "responded", "timestamp": "2020-03-01"},
        {"treatment_id": "S1", "outcome": -0.2, "timestamp": "2020-01-01T10:00:00Z"},
    ],
    "conditions": ["D", "C"],
    "condition": "C",
    "k": 2,
}


def test_a_new_patient_gets_the_same_answer_shape(client, clinician):
    response = client.post("/v1/recommendations", json=NEW_PATIENT, headers=clinician)
    assert response.status_code == 200
    body = response.get_json()
    assert body["patient_id"] is None and body["condition_id"] == "C"
    assert body["recommendations"][0]["treatment_id"] == "T0"  # S0 worked: group A, T0 works


def test_allergies_and_adverse_outcomes_exclude_therapies(client, clinician):
    body = {
        "history": [{"treatment_id": "T0", "outcome": 0.5, "adverse": True}],
        "conditions": ["C"],
        "allergies": ["ALG"],
        "k": 10,
        "include_tried": True,
    }
    answer = client.post("/v1/recommendations", json=body, headers=clinician).get_json()
    offered = {r["treatment_id"] for r in answer["recommendations"]}
    reasons = {e["treatment_id"]: e["reason"] for e in answer["excluded"]}
    assert "T0" not in offered and reasons["T0"] == "previous_harm"
    assert "TX" not in offered and reasons["TX"] == "contraindicated"


def test_unknown_ids_in_a_history_are_ignored_and_noted(client, clinician):
    body = {"history": [{"treatment_id": "NEW-DRUG", "outcome": "partial"}], "conditions": ["C"]}
    answer = client.post("/v1/recommendations", json=body, headers=clinician).get_json()
    assert any("NEW-DRUG" in note for note in answer["notes"])


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"history": [{"treatment_id": "S0", "outcome": "great"}]}, "history[0].outcome"),
        ({"history": [{"treatment_id": "S0", "outcome": 2}]}, "history[0].outcome"),
        ({"history": [{"treatment_id": "S0"}]}, "missing required field 'outcome'"),
        ({"history": [{"treatment_id": "S0", "outcome": 1, "dose": 5}]}, "unknown field 'dose'"),
        ({"history": [{"treatment_id": "S0", "outcome": 1, "timestamp": "yesterday"}]}, "ISO-8601"),
        (
            {"history": [{"treatment_id": "S0", "outcome": 1, "timestamp": "2020-02-30"}]},
            "ISO-8601",
        ),
        ({"history": [{"treatment_id": "", "outcome": 1}]}, "must not be empty"),
        ({"history": {"treatment_id": "S0"}}, "expected array"),
        ({"k": 0}, "$.k"),
        ({"k": True}, "expected integer"),
        ({"include_tried": "yes"}, "expected boolean"),
        ({"patient_id": "P1"}, "unknown field 'patient_id'"),
        ([1, 2], "expected object"),
    ],
)
def test_invalid_bodies_are_400_naming_the_field(client, clinician, body, fragment):
    response = client.post("/v1/recommendations", json=body, headers=clinician)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_body"
    assert fragment in json.dumps(error)


def test_history_length_is_limited(make_app, clinician):
    client = make_app(MAX_HISTORY=3).test_client()
    history = [{"treatment_id": "S0", "outcome": 1}] * 4
    response = client.post("/v1/recommendations", json={"history": history}, headers=clinician)
    assert response.status_code == 400
    assert "at most 3 items" in response.get_json()["error"]["message"]


@pytest.mark.parametrize(
    "data, content_type, status, code",
    [
        ("{not json", "application/json", 400, "malformed_json"),
        ('{"k": NaN}', "application/json", 400, "malformed_json"),
        (b"\xff\xfe", "application/json", 400, "malformed_json"),
        ("[" * 150_000 + "]" * 150_000, "application/json", 413, "body_too_large"),
        ('{"k": 1}', "text/plain", 415, "unsupported_media_type"),
        ('{"k": 1}', None, 415, "unsupported_media_type"),
    ],
)
def test_body_errors(client, clinician, data, content_type, status, code):
    headers = dict(clinician)
    if content_type:
        headers["Content-Type"] = content_type
    response = client.post("/v1/recommendations", data=data, headers=headers)
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code


def test_deeply_nested_json_is_400_not_500(make_app, clinician):
    client = make_app(MAX_BODY_BYTES=1_000_000).test_client()
    response = client.post(
        "/v1/recommendations",
        data="[" * 200_000 + "]" * 200_000,
        headers={**clinician, "Content-Type": "application/json"},
    )
    assert response.status_code == 400


def test_oversized_body_is_413(make_app, clinician):
    client = make_app(MAX_BODY_BYTES=2048).test_client()
    body = {"history": [{"treatment_id": "S0", "outcome": 1}] * 200}
    response = client.post("/v1/recommendations", json=body, headers=clinician)
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "body_too_large"


# --- similar, model, routing -------------------------------------------------------------------


def test_similar_treatments(client, clinician):
    response = client.get("/v1/treatments/T0/similar?k=3", headers=clinician)
    assert response.status_code == 200
    body = response.get_json()
    assert body["treatment_id"] == "T0" and len(body["similar"]) == 3
    assert "T0" not in {s["treatment_id"] for s in body["similar"]}
    assert client.get("/v1/treatments/NOPE/similar", headers=clinician).status_code == 404
    assert client.get("/v1/treatments/T0/similar?k=0", headers=clinician).status_code == 400


def test_model_description(client, clinician, site):
    body = client.get("/v1/model", headers=clinician).get_json()
    assert body["type"] == "als" and body["version"].startswith("als-")
    assert len(body["data"]["fingerprint"]) == 64
    assert {"created", "metrics", "params", "loaded_at"} <= set(body)
    assert body["pseudonyms"]["key_fingerprint"]
    assert str(site.root) not in json.dumps(body)  # no server paths


def test_health_and_ready_are_open(client):
    assert client.get("/health").get_json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"


def test_ready_is_503_when_the_audit_log_cannot_be_written(make_app, site):
    (site.root / "logs").mkdir()
    app = make_app(AUDIT_LOG=str(site.root / "logs" / "audit.log"))
    shutil.rmtree(site.root / "logs")  # the audit log and the feedback file beside it
    response = app.test_client().get("/ready")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "not_ready"


@pytest.mark.parametrize(
    "method, path, status, code",
    [
        ("get", "/nowhere", 404, "not_found"),
        ("get", "/v1/patients//recommendations", 404, "not_found"),
        ("delete", "/v1/model", 405, "method_not_allowed"),
        ("get", "/v1/recommendations", 405, "method_not_allowed"),
    ],
)
def test_routing_errors_use_the_json_format(client, clinician, method, path, status, code):
    response = getattr(client, method)(path, headers=clinician)
    assert response.status_code == status
    assert response.is_json and response.get_json()["error"]["code"] == code
    if status == 405:
        assert "Allow" in response.headers


def test_an_engine_bug_is_a_json_500_without_a_traceback(client, clinician, monkeypatch, caplog):
    def broken(self):
        raise RuntimeError("secret detail " + self.patient_id)

    monkeypatch.setattr(RecommendationList, "to_dict", broken)
    response = client.get("/v1/patients/P0001/recommendations", headers=clinician)
    assert response.status_code == 500
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and "secret" not in text
    assert response.get_json()["error"]["code"] == "internal_error"
    assert "RuntimeError" in caplog.text and "P0001" not in caplog.text


def test_active_treatments_of_a_new_patient_are_never_offered_again(client, clinician):
    body = {**NEW_PATIENT, "k": 10, "active_treatments": ["T0", "NOT-KNOWN"]}
    answer = client.post("/v1/recommendations", json=body, headers=clinician).get_json()
    assert "T0" not in {r["treatment_id"] for r in answer["recommendations"]}
    reasons = {e["treatment_id"]: e["reason"] for e in answer["excluded"]}
    assert reasons["T0"] == "duplicate_therapy"
    assert any("NOT-KNOWN" in note and "not checked" in note for note in answer["notes"])


def test_active_treatments_of_a_known_patient_in_the_query(client, clinician):
    query = "k=10&condition=C&include_tried=true&active=T0,T2"
    answer = client.get(f"/v1/patients/P0002/recommendations?{query}", headers=clinician).get_json()
    offered = {r["treatment_id"] for r in answer["recommendations"]}
    reasons = {e["treatment_id"]: e["reason"] for e in answer["excluded"]}
    assert not offered & {"T0", "T2"}
    assert reasons["T0"] == reasons["T2"] == "duplicate_therapy"
    error = client.get(
        "/v1/patients/P0002/recommendations?active=T0,,T2", headers=clinician
    ).get_json()
    assert error["error"]["code"] == "invalid_parameter" and "active" in error["error"]["message"]
