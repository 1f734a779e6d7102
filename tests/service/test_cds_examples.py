"""The public CDS Hooks examples replayed verbatim (``cds_examples/``, sources in its
``SOURCES.md``), and the request shapes of the CDS Hooks sandbox (``cds-hooks/sandbox``,
written out from its source files named below: it publishes no request documents)."""

from __future__ import annotations

import copy
import time
import uuid

import jwt

from .cds_examples import example
from .cds_rules import check_discovery, check_response
from .conftest import CDS_BASE
from .fhir_server import FhirServer, certificate, start, stop
from .test_cds_fhir import TOKEN, _record

SUGGEST, CHECK = "/cds-services/therapy-suggestions", "/cds-services/therapy-order-check"


def post(client, ehr, path: str, payload: dict, token: str | None = None):
    token = token or ehr.token(CDS_BASE + path)
    return client.post(path, json=payload, headers={"Authorization": f"Bearer {token}"})


def test_the_checker_accepts_the_spec_discovery_example_and_ours_has_its_shape(cds_client):
    check_discovery(example("spec-discovery-response"))
    ours = check_discovery(cds_client.get("/cds-services").get_json())
    allowed = {key for s in example("spec-discovery-response")["services"] for key in s}
    assert all(set(service) <= allowed for service in ours)


def test_the_spec_call_example_verbatim(cds_client, cds_site):
    """An unknown patient, a plain-http fhirServer (refused: not https), only the greeter's
    prefetch key (not one of ours): 412, saying why."""
    response = post(cds_client, cds_site.ehr, SUGGEST, example("spec-call-request"))
    assert response.status_code == 412
    error = response.get_json()["error"]
    assert error["details"]["missing_prefetch"] == ["conditions", "medications", "allergies"]
    assert "not https" in error["message"]


def test_the_spec_call_example_for_a_known_patient(cds_client, cds_site):
    body = example("spec-call-request")
    body["context"]["patientId"] = "P0200"
    body["fhirAuthorization"] = example("spec-fhir-authorization")["fhirAuthorization"]
    cards = check_response(post(cds_client, cds_site.ehr, SUGGEST, body).get_json())
    assert cards and cards[0]["summary"].startswith("Consider ")


def test_the_patient_view_context_examples_verbatim(cds_client, cds_site):
    for name in ("hook-patient-view-context-1", "hook-patient-view-context-2"):
        context = example(name)["context"]
        body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": context}
        assert post(cds_client, cds_site.ehr, SUGGEST, body).status_code == 412
        known = copy.deepcopy(body)
        known["context"]["patientId"] = "P0201"
        assert check_response(post(cds_client, cds_site.ehr, SUGGEST, known).get_json())


def test_the_order_select_example_verbatim(cds_client, cds_site):
    body = {
        "hook": "order-select",
        "hookInstance": str(uuid.uuid4()),
        **example("hook-order-select-r4"),
    }
    assert post(cds_client, cds_site.ehr, CHECK, body).status_code == 412
    body["context"]["patientId"] = "P0200"
    response = post(cds_client, cds_site.ehr, CHECK, body)
    assert response.status_code == 200
    assert check_response(response.get_json()) == []  # amoxicillin: no therapy of the model


def test_the_spec_feedback_examples_verbatim(cds_client, cds_site):
    for name in (
        "spec-feedback-accepted",
        "spec-feedback-overridden",
        "spec-feedback-override-reason",
    ):
        response = post(cds_client, cds_site.ehr, SUGGEST + "/feedback", example(name))
        assert response.status_code == 404, name  # valid, but the cards are not ours
        assert response.get_json()["error"]["details"]["results"][0]["status"] == "unknown_card"


def test_our_cards_use_only_fields_the_spec_example_shows(make_cds_app, cds_site):
    client = make_cds_app(
        CDS_INFO_URL="https://cds.example.org/model-card",
        CDS_ICON_URL="https://cds.example.org/icon-100px.png",
    ).test_client()
    body = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"patientId": "P0200"},
    }
    card = check_response(post(client, cds_site.ehr, SUGGEST, body).get_json())[0]
    spec = example("spec-card-response")["cards"][0]
    assert set(spec["source"]) <= set(card["source"])  # label, url, icon (and our topic)
    assert set(spec["links"][0]) == set(card["links"][0])


# --- the sandbox ---------------------------------------------------------------------------------


def sandbox_token(ehr, audience: str) -> str:
    """src/retrieve-data-helpers/jwt-generator.js: ES384, kid and jku in the header; iss, aud,
    exp (+300 s), iat and jti in the claims."""
    now = round(time.time())
    claims = {
        "iss": ehr.issuer,
        "aud": audience,
        "exp": now + 300,
        "iat": now,
        "jti": str(uuid.uuid4()),
    }
    header = {
        "typ": "JWT",
        "kid": ehr.kid,
        "jku": "https://sandbox.cds-hooks.org/.well-known/jwks.json",
    }
    return jwt.encode(claims, ehr.key, algorithm="ES384", headers=header)


def sandbox_request(fhir_server: str, patient_id: str, expires_in=None) -> dict:
    """src/retrieve-data-helpers/service-exchange.js, callServices(): no prefetch when the
    service's templates could not be filled, fhirAuthorization with the SMART token's
    expires_in as it came (missing, or text such as '600' in its tests)."""
    authorization = {
        "access_token": TOKEN,
        "token_type": "Bearer",
        "scope": "patient/*.* user/*.* launch openid profile online_access",
        "subject": "48163c5e-88b5-4cb3-92d3-23b800caa927",
    }
    if expires_in is not None:
        authorization["expires_in"] = expires_in
    return {
        "hookInstance": str(uuid.uuid4()),
        "hook": "patient-view",
        "fhirServer": fhir_server,
        "context": {"patientId": patient_id, "userId": "Practitioner/specified-1"},
        "fhirAuthorization": authorization,
    }


def test_the_sandbox_request_shapes(make_cds_app, cds_site):
    tls = certificate(cds_site.site.root)
    state = FhirServer(token=TOKEN).add(*_record("SMART-1288992"))
    server = start(state, tls)
    try:
        client = make_cds_app(CDS_FHIR_CA_FILE=str(tls[0])).test_client()
        for expires_in in (None, "600", 600):
            body = sandbox_request(state.base, "SMART-1288992", expires_in)
            token = sandbox_token(cds_site.ehr, CDS_BASE + SUGGEST)
            response = post(client, cds_site.ehr, SUGGEST, body, token=token)
            assert response.status_code == 200, response.get_json()
            assert check_response(response.get_json())[0]["summary"].startswith("Consider ")
    finally:
        stop(server)
