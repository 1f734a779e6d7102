"""The service on a full disk (a real 64 KiB tmpfs): 503s, never a lost or torn record."""

from __future__ import annotations

import pytest

from recommender.data.feedback import read_feedback
from recommender.utils.jsonlines import read_records
from service import audit as audit_module


def decision(i: int) -> dict:
    return {
        "feedback_id": f"fb-{i}",
        "patient_id": "P0001",
        "treatment_id": "T0",
        "decision": "overridden",
        "model_version": "v",
        "reason": "r" * 300,
    }


@pytest.fixture
def full_disk_client(make_app, tiny_disk, monkeypatch):
    monkeypatch.setattr(audit_module, "PROBE_INTERVAL", 0.0)  # /ready re-checks every call
    app = make_app(
        AUDIT_LOG=str(tiny_disk.path / "audit.log"),
        FEEDBACK_LOG=str(tiny_disk.path / "feedback.jsonl"),
    )
    return app.test_client()


def test_feedback_and_audit_survive_a_full_disk(full_disk_client, tiny_disk, clinician):
    client = full_disk_client
    assert client.get("/ready").status_code == 200
    tiny_disk.fill()
    assert client.get("/ready").status_code == 503  # what patient requests would get
    answers = {}
    for i in range(60):
        response = client.post("/v1/feedback", json=decision(i), headers=clinician)
        answers[i] = response.status_code
        assert response.status_code in (201, 503), response.get_json()
        if response.status_code == 503:
            code = response.get_json()["error"]["code"]
            assert code in ("feedback_unavailable", "audit_unavailable")
    assert 503 in answers.values()
    tiny_disk.free()
    assert client.get("/ready").status_code == 200
    for i in range(60):  # the client retries what was refused; what was stored stays once
        retry = client.post("/v1/feedback", json=decision(i), headers=clinician).status_code
        if answers[i] == 201:
            assert retry == 200  # already stored: the "stored" answer was not lost
        else:  # 201, or 200 when the decision was stored but its audit line was refused
            assert retry in (200, 201)
    stored = read_feedback(tiny_disk.path / "feedback.jsonl")
    assert sorted(stored.feedback_id) == sorted(f"api:ward-7:fb-{i}" for i in range(60))
    assert stored.attrs["skipped_lines"] == []
    audit = read_records(tiny_disk.path / "audit.log")
    assert audit.unparsable == [] and audit.end == (tiny_disk.path / "audit.log").stat().st_size
    assert sum(line["status"] in (200, 201) for _, line in audit.records) >= 60
