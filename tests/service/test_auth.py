"""Bearer tokens and roles: 401 versus 403, open probes, constant-time checks, no token logged."""

from __future__ import annotations

import hmac
import json

import pytest

from service import tokens as token_module
from service.config import ConfigError
from service.tokens import Principal, TokenStore, add_token, hash_token

PROTECTED = [
    ("get", "/v1/patients/P0001/recommendations"),
    ("post", "/v1/recommendations"),
    ("get", "/v1/treatments/T0/similar"),
    ("get", "/v1/model"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("post", "/v1/admin/reload"),
]


@pytest.mark.parametrize("method, path", PROTECTED)
def test_every_endpoint_but_the_probes_needs_a_token(client, method, path):
    response = getattr(client, method)(path)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "missing_token"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer wrong-token",
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer " + "x" * 600,
        "token-without-scheme",
    ],
)
def test_invalid_credentials_are_401(client, header):
    response = client.get("/v1/model", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "invalid_token"
    assert "error=" in response.headers["WWW-Authenticate"]


def test_the_scheme_is_case_insensitive(client, site):
    response = client.get("/v1/model", headers={"Authorization": f"bearer {site.clinician}"})
    assert response.status_code == 200


def test_wrong_role_is_403(client, clinician, admin):
    reload = client.post("/v1/admin/reload", headers=clinician)
    assert reload.status_code == 403
    details = reload.get_json()["error"]["details"]
    assert details == {"role": "clinician", "allowed_roles": ["admin"]}
    patient = client.get("/v1/patients/P0001/recommendations", headers=admin)
    assert patient.status_code == 403  # operators do not read patient data
    assert client.post("/v1/recommendations", json={}, headers=admin).status_code == 403


def test_both_roles_read_the_model_metrics_and_the_document(client, clinician, admin):
    for headers in (clinician, admin):
        for path in ("/v1/model", "/metrics", "/openapi.json", "/v1/treatments/T0/similar"):
            assert client.get(path, headers=headers).status_code == 200


def test_tokens_are_compared_in_constant_time_against_every_entry(monkeypatch):
    store = TokenStore(
        [(hash_token(f"token-{i}"), Principal(f"id{i}", "clinician")) for i in range(5)]
    )
    calls, compare = [], hmac.compare_digest
    monkeypatch.setattr(
        token_module.hmac, "compare_digest", lambda a, b: calls.append(1) or compare(a, b)
    )
    assert store.authenticate("token-0") == Principal("id0", "clinician")
    assert len(calls) == 5  # no early exit on the first match
    assert store.authenticate("nope") is None


def test_no_token_reaches_the_logs_audit_or_metrics(client, clinician, site, caplog):
    caplog.set_level("DEBUG")
    client.get("/v1/patients/P0001/recommendations", headers=clinician)
    client.get("/v1/model", headers={"Authorization": "Bearer not-a-real-token-123"})
    metrics = client.get("/metrics", headers=clinician).get_data(as_text=True)
    audit = (site.root / "audit.log").read_text()
    for text in (caplog.text, audit, metrics):
        assert site.clinician not in text and "not-a-real-token-123" not in text


def test_auth_failures_are_counted_by_reason(client, clinician, admin):
    client.get("/v1/model")
    client.get("/v1/model", headers={"Authorization": "Bearer nope"})
    client.post("/v1/admin/reload", headers=clinician)
    metrics = client.get("/metrics", headers=admin).get_data(as_text=True)
    for reason in ("missing", "invalid", "forbidden"):
        assert f'recommender_auth_failures_total{{reason="{reason}"}} 1.0' in metrics


# --- the tokens file ------------------------------------------------------------------------------


def test_add_token_stores_only_the_hash(tmp_path):
    path = tmp_path / "tokens.json"
    token = add_token(path, "ward-1", "clinician")
    text = path.read_text()
    assert token not in text and hash_token(token) in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert TokenStore.from_file(path).authenticate(token) == Principal("ward-1", "clinician")


def test_tokens_cli_prints_the_token_once(tmp_path, capsys):
    assert (
        token_module.main(
            ["add", "--file", str(tmp_path / "t.json"), "--id", "ops", "--role", "admin"]
        )
        == 0
    )
    token = capsys.readouterr().out.strip()
    assert len(token) >= 40
    assert (
        token_module.main(
            ["add", "--file", str(tmp_path / "t.json"), "--id", "ops", "--role", "admin"]
        )
        == 2
    )  # the id is taken
    assert "used twice" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json", "not valid JSON"),
        ('{"tokens": {}}', 'expected {"tokens"'),
        ('{"tokens": [{"id": "a", "sha256": "abc", "role": "clinician"}]}', "64 lower-case hex"),
        (
            '{"tokens": [{"id": "a", "sha256": "%s", "role": "root"}]}' % ("0" * 64),
            "role must be one of",
        ),
        ('{"tokens": [{"id": "a b", "sha256": "%s", "role": "admin"}]}' % ("0" * 64), "id must be"),
        ('{"tokens": [{"id": "a", "token": "x", "role": "admin"}]}', "exactly the fields"),
    ],
)
def test_bad_tokens_files_are_refused_with_a_clear_message(tmp_path, content, message):
    path = tmp_path / "tokens.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("(", r"\(")):
        TokenStore.from_file(path)


def test_the_service_does_not_start_with_a_bad_tokens_file(make_app, site):
    entry = {"id": "x", "sha256": "nothex", "role": "admin"}
    site.tokens.write_text(json.dumps({"tokens": [entry]}))
    with pytest.raises(ConfigError, match="tokens"):
        make_app()
