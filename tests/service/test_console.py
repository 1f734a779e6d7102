"""The clinician console (``service/console``) through Flask's test client.

Sign-in and its cookie, CSRF on every form, roles, that the patient page shows what the REST
answer holds, the audit lines, escaping, the new-patient form and the model page. The real
browser tests are in ``test_console_browser.py``.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from service import ConfigError
from service.tokens import add_token

from .conftest import audit_lines

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(client, path: str = "/console/login") -> str:
    return CSRF.search(client.get(path).get_data(as_text=True)).group(1)


def sign_in(client, token: str):
    return client.post("/console/login", data={"token": token, "csrf_token": csrf_of(client)})


@pytest.fixture
def console(client, site):
    """A test client signed in as the clinician."""
    assert sign_in(client, site.clinician).status_code == 303
    return client


def test_pages_need_a_session_and_send_back_to_sign_in(client):
    response = client.get("/console/patients/P0200?condition=C")
    assert response.status_code == 303
    assert response.headers["Location"] == (
        "/console/login?next=/console/patients/P0200?condition%3DC"
    )
    assert client.get("/console/login").status_code == 200
    assert client.get("/console/static/console.css").status_code == 200  # public


def test_a_bearer_token_is_not_a_console_session(client, clinician):
    assert client.get("/console/", headers=clinician).status_code == 303


def test_requests_without_the_cookie_do_not_build_the_signer(app, client, site, monkeypatch):
    """The API's requests never carry the console cookie: no HMAC key derivation for them,
    while a signed-in console request still reads its session."""
    built = []
    interface = app.session_interface
    original = type(interface).get_signing_serializer
    monkeypatch.setattr(
        type(interface),
        "get_signing_serializer",
        lambda self, flask_app: built.append(1) or original(self, flask_app),
    )
    assert client.get("/health").status_code == 200
    assert built == []
    assert sign_in(client, site.clinician).status_code == 303
    built.clear()
    assert client.get("/console/").status_code == 200  # signed in: the cookie was read
    assert built


def test_sign_in_sets_a_strict_http_only_cookie_without_the_token(client, site):
    response = sign_in(client, site.clinician)
    assert response.status_code == 303 and response.headers["Location"] == "/console/"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain HTTP, "auto"
    assert "Expires=" in cookie
    assert site.clinician not in cookie
    assert client.get("/console/").status_code == 200


def test_the_cookie_is_secure_over_https_and_when_forced(make_app, site):
    client = make_app().test_client()
    csrf = CSRF.search(
        client.get("/console/login", base_url="https://localhost").get_data(as_text=True)
    ).group(1)
    response = client.post(
        "/console/login",
        data={"token": site.clinician, "csrf_token": csrf},
        base_url="https://localhost",
    )
    assert "Secure" in response.headers["Set-Cookie"]
    forced = make_app(CONSOLE_COOKIE_SECURE="true").test_client()
    assert "Secure" in forced.get("/console/login").headers["Set-Cookie"]


def test_a_wrong_token_is_refused_and_counted(client):
    response = client.post(
        "/console/login", data={"token": "not-a-token", "csrf_token": csrf_of(client)}
    )
    assert response.status_code == 401
    assert "not valid" in response.get_data(as_text=True)
    assert client.get("/console/").status_code == 303


def test_every_post_needs_the_csrf_token(console, site):
    for path, data in (
        ("/console/login", {"token": site.clinician}),
        ("/console/logout", {}),
        ("/console/new-patient", {"history-0-treatment": "T0", "history-0-outcome": "responded"}),
        ("/console/feedback", {"patient_id": "P0200", "treatment_id": "T0"}),
    ):
        for token in (None, "forged"):
            body = dict(data) if token is None else {**data, "csrf_token": token}
            response = console.post(path, data=body)
            assert response.status_code == 403, path
            assert "CSRF" in response.get_data(as_text=True)
    csrf = csrf_of(console, "/console/")
    response = console.post(
        "/console/logout", data={"csrf_token": csrf}, headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403
    assert console.get("/console/").status_code == 200  # still signed in


def test_sign_in_replaces_the_session_and_its_csrf_token(client, site):
    before = csrf_of(client)
    sign_in(client, site.clinician)
    assert csrf_of(client, "/console/") != before


def test_logout_ends_the_session(console):
    response = console.post("/console/logout", data={"csrf_token": csrf_of(console, "/console/")})
    assert response.status_code == 303
    assert console.get("/console/").status_code == 303


def test_the_session_ends_after_its_lifetime(make_app, site, monkeypatch):
    client = make_app(CONSOLE_SESSION_LIFETIME=60).test_client()
    sign_in(client, site.clinician)
    assert client.get("/console/").status_code == 200
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    assert client.get("/console/").status_code == 303


def test_a_revoked_token_ends_its_sessions(console, app, site):
    tokens = json.loads(site.tokens.read_text())
    tokens["tokens"] = [entry for entry in tokens["tokens"] if entry["id"] != "ward-7"]
    site.tokens.write_text(json.dumps(tokens))
    assert app.extensions["recommender"].reload().tokens["status"] == "reloaded"
    assert console.get("/console/").status_code == 303


def test_only_a_safe_next_path_is_followed(client, site):
    for target, expected in (
        ("/console/model", "/console/model"),
        ("https://evil.example/", "/console/"),
        ("//evil.example/console/", "/console/"),
        ("/v1/model", "/console/"),
    ):
        response = client.post(
            "/console/login",
            data={"token": site.clinician, "csrf_token": csrf_of(client), "next": target},
        )
        assert response.headers["Location"] == expected, target


def test_roles_are_the_apis(client, site):
    sign_in(client, site.admin)
    response = client.get("/console/patients/P0200")
    assert response.status_code == 403
    assert "clinician" in response.get_data(as_text=True)
    assert client.get("/console/model").status_code == 200
    line = audit_lines(site)[-1]
    assert line["principal"] == "ops" and line["status"] == 403
    assert line["endpoint"] == "console.patient" and line["error_code"] == "forbidden"


def test_security_headers(console):
    response = console.get("/console/patients/P0200?condition=C")
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "style-src 'self'" in policy and "unsafe-inline" not in policy
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    html = response.get_data(as_text=True)
    assert "style=" not in html and "<script>" not in html and "onclick" not in html


def _cells(html: str, css_class: str) -> list[str]:
    return re.findall(rf'<li class="{css_class}" id="therapy-(\d+)" data-treatment="([^"]+)"', html)


def test_the_patient_page_shows_the_rest_answer(console, clinician):
    query = "condition=C&k=3&include_tried=true"
    api = console.get(f"/v1/patients/P0002/recommendations?{query}", headers=clinician)
    body = api.get_json()
    html = console.get(f"/console/patients/P0002?{query}").get_data(as_text=True)
    shown = _cells(html, "therapy")
    assert shown == [(str(i["rank"]), i["treatment_id"]) for i in body["recommendations"]]
    for item in body["recommendations"]:
        assert f"Score {item['score']:.3f}" in html
        evidence = item["explanation"]["evidence"]
        low, high = evidence["response_rate_ci95"]
        assert f"95% Wilson interval {100 * low:.0f}%–{100 * high:.0f}%" in html
        assert f"{evidence['outcomes_recorded']} outcomes recorded" in html
    assert body["excluded"], "P0002 is allergic to ALG: TX is contraindicated"
    for entry in body["excluded"]:
        assert f"<code>{entry['rule']}</code>" in html and entry["detail"] in html
    assert body["model"]["disclaimer"].replace("'", "&#39;") in html
    assert body["model"]["version"] in html


def test_a_patient_page_view_is_audited_like_the_api(console, clinician, site):
    console.get("/v1/patients/P0200/recommendations?condition=C&k=2", headers=clinician)
    console.get("/console/patients/P0200?condition=C&k=2")
    api_line, page_line = audit_lines(site)[-2:]
    differ = {"time", "request_id", "endpoint"}
    assert set(api_line) == set(page_line)
    assert {k: v for k, v in api_line.items() if k not in differ} == {
        k: v for k, v in page_line.items() if k not in differ
    }
    assert page_line["endpoint"] == "console.patient"
    assert page_line["principal"] == "ward-7" and page_line["role"] == "clinician"
    assert page_line["patient_pseudonym"] != "P0200" and len(page_line["patient_pseudonym"]) == 32
    text = (site.root / "audit.log").read_text()
    assert "P0200" not in text and site.clinician not in text and "recommender_console" not in text


def test_unknown_patients_and_parameters_are_html_errors_that_are_audited(console, site):
    response = console.get("/console/patients/%3Cb%3Ex%3Cscript%3E")
    assert response.status_code == 404
    html = response.get_data(as_text=True)
    assert "&lt;b&gt;x&lt;script&gt;" in html and "<b>x" not in html
    assert audit_lines(site)[-1]["error_code"] == "unknown_patient"
    response = console.get("/console/patients/P0200?color=red")
    assert response.status_code == 400 and "unknown query parameter" in response.get_data(
        as_text=True
    )
    assert console.get("/console/patients/P0200?k=0").status_code == 400


def test_the_search_box_opens_the_patient(console):
    response = console.get("/console/patients?patient_id=P0200")
    assert response.status_code == 303 and response.headers["Location"] == "/console/patients/P0200"
    assert console.get("/console/patients?patient_id=").status_code == 400


def _decision_form(html: str, rank: int) -> dict:
    form = html.split(f'id="therapy-{rank}"')[1].split("</form>")[0]
    return dict(re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', form))


def test_a_decision_is_stored_once_in_the_feedback_store(console, site):
    html = console.get("/console/patients/P0205?condition=C&k=3").get_data(as_text=True)
    form = {**_decision_form(html, 1), "decision": "overridden", "reason_code": "cost-or-access"}
    response = console.post("/console/feedback", data=form)
    assert response.status_code == 303
    assert response.headers["Location"] == "/console/patients/P0205?condition=C&k=3"
    assert "Recorded:" in console.get(response.headers["Location"]).get_data(as_text=True)
    assert console.post("/console/feedback", data=form).status_code == 303  # a resubmission
    records = [json.loads(line) for line in (site.root / "feedback.jsonl").read_text().splitlines()]
    assert len(records) == 1
    record = records[0]
    assert record["feedback_id"] == f"console:ward-7:{form['feedback_id']}"
    assert record["source"] == "console" and record["decision"] == "overridden"
    assert record["reason"] == "Cost, coverage or availability"
    assert record["patient"] != "P0205" and record["treatment_id"] == form["treatment_id"]
    line = [entry for entry in audit_lines(site) if entry["endpoint"] == "console.feedback"][0]
    assert line["recommendation_request_id"] == form["request_id"]
    assert line["decision"] == "overridden" and line["treatment_ids"] == [form["treatment_id"]]


def test_an_override_needs_a_reason(console, site):
    html = console.get("/console/patients/P0205?condition=C").get_data(as_text=True)
    response = console.post(
        "/console/feedback", data={**_decision_form(html, 1), "decision": "overridden"}
    )
    assert response.status_code == 400
    assert "an override needs a reason" in response.get_data(as_text=True)
    assert (site.root / "feedback.jsonl").read_text() == ""


def test_the_new_patient_form_answers_as_post_recommendations(console, clinician):
    csrf = csrf_of(console, "/console/new-patient")
    form = {
        "csrf_token": csrf,
        "history-0-treatment": "S0",
        "history-0-outcome": "responded",
        "history-0-date": "2020-03-01",
        "history-1-treatment": "S1",
        "history-1-outcome": "no_response",
        "conditions": "D, C",
        "allergies": "ALG",
        "condition": "C",
        "k": "3",
    }
    html = console.post("/console/new-patient", data=form).get_data(as_text=True)
    api = console.post(
        "/v1/recommendations",
        headers=clinician,
        json={
            "history": [
                {"treatment_id": "S0", "outcome": "responded", "timestamp": "2020-03-01"},
                {"treatment_id": "S1", "outcome": "no_response"},
            ],
            "conditions": ["D", "C"],
            "allergies": ["ALG"],
            "condition": "C",
            "k": 3,
        },
    ).get_json()
    assert _cells(html, "therapy") == [
        (str(i["rank"]), i["treatment_id"]) for i in api["recommendations"]
    ]
    assert "contraindicated by ALG" in html


def test_the_new_patient_form_names_what_is_wrong(console):
    csrf = csrf_of(console, "/console/new-patient")
    response = console.post(
        "/console/new-patient",
        data={
            "csrf_token": csrf,
            "history-0-treatment": "T0",
            "history-1-outcome": "responded",
            "history-1-treatment": "T1",
            "history-1-date": "2020-13-01",
            "birth_year": "1700",
            "extra": "1",
        },
    )
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "unknown field &#39;extra&#39;" in html
    assert "history row 1: give both the therapy and its outcome" in html
    response = console.post(
        "/console/new-patient",
        data={
            "csrf_token": csrf,
            "history-0-treatment": "T1",
            "history-0-outcome": "responded",
            "history-0-date": "2020-13-01",
            "birth_year": "1700",
        },
    )
    html = response.get_data(as_text=True)
    assert "history[0].timestamp" in html and "birth_year: must be &gt;= 1850" in html
    assert 'value="T1"' in html  # what was typed is kept


def test_the_model_page_shows_the_card_and_the_reports_kept_with_the_artifact(console, site):
    html = console.get("/console/model").get_data(as_text=True)
    assert "<h2>Safety rules applied</h2>" in html and "No subgroup audit" in html
    audit = site.artifact / "reports" / "audit"
    evaluation = site.artifact / "reports" / "evaluation"
    audit.mkdir(parents=True)
    evaluation.mkdir()
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 32
    (audit / "metrics_sex.png").write_bytes(png)
    (evaluation / "ope.json").write_text(
        json.dumps(
            {
                "models": {
                    "als": {
                        "estimates": {
                            "dr": {"value": 0.61, "ci95": [0.55, 0.67], "unsupported_share": 0.1}
                        },
                        "episodes": 120,
                    }
                },
                "behaviour": {"value": 0.5},
                "split": {"method": "temporal"},
            }
        )
    )
    html = console.get("/console/model").get_data(as_text=True)
    assert "Subgroup audit: quality by sex" in html
    assert 'src="/console/model/figures/audit/metrics_sex.png"' in html
    assert "61% (55%–67%)" in html and "Clinicians' observed rate: <strong>50%</strong>" in html
    assert console.get("/console/model/figures/audit/metrics_sex.png").data == png
    assert console.get("/console/model/figures/audit/..%2Fmanifest.json").status_code == 404
    assert console.get("/console/model/figures/audit/other.png").status_code == 404


def test_the_model_card_markup_is_escaped(console, site, monkeypatch):
    from service.console import model_page

    monkeypatch.setattr(
        model_page, "model_card_markdown", lambda *a, **k: "# Card\n\n<script>alert(1)</script>"
    )
    html = console.get("/console/model").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html


def test_console_settings_are_checked(make_app, site):
    with pytest.raises(ConfigError, match="RECOMMENDER_CONSOLE_COOKIE_SECURE"):
        make_app(CONSOLE_COOKIE_SECURE="sometimes")
    with pytest.raises(ConfigError, match="RECOMMENDER_CONSOLE_SESSION_LIFETIME"):
        make_app(CONSOLE_SESSION_LIFETIME=10)
    short = site.root / "short.key"
    short.write_text("too short")
    with pytest.raises(ConfigError, match="at least 32 random bytes"):
        make_app(CONSOLE_SECRET_KEY_FILE=str(short))


def test_a_secret_key_file_keeps_sessions_across_apps(make_app, site):
    key = site.root / "console.key"
    key.write_text("k" * 64)
    first = make_app(CONSOLE_SECRET_KEY_FILE=str(key)).test_client()
    sign_in(first, site.clinician)
    second = make_app(CONSOLE_SECRET_KEY_FILE=str(key)).test_client()
    second.set_cookie(
        "recommender_console",
        first.get_cookie("recommender_console", path="/console").value,
        path="/console",
    )
    assert second.get("/console/").status_code == 200


def test_the_console_can_be_off(make_app):
    client = make_app(CONSOLE=False).test_client()
    assert client.get("/console/login").status_code == 404


def test_a_new_token_holder_can_sign_in_after_a_reload(client, app, site):
    token = add_token(site.tokens, "pharmacy", "clinician")
    assert app.extensions["recommender"].reload().tokens["status"] == "reloaded"
    assert sign_in(client, token).status_code == 303
    assert "pharmacy" in client.get("/console/").get_data(as_text=True)
