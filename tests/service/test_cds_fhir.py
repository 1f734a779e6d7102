"""CDS Hooks with the EHR's FHIR server: what the prefetch lacks is fetched from a local FHIR
test server (``fhir_server.py``, https with its own certificate authority, or plain http where
the site allows it), within the site's bounds, with only the token given; medication references
are resolved; what cannot be resolved is said on a card."""

from __future__ import annotations

import json
import logging
import time
import uuid

import pytest

from .cds_rules import check_response
from .cds_support import ALG, S0, T2, C, D, allergy, bundle, concept, condition, patient
from .cds_support import medication_request as request_of
from .conftest import CDS_BASE, audit_lines
from .fhir_server import FhirServer, certificate, start, stop

SUGGEST, CHECK = "/cds-services/therapy-suggestions", "/cds-services/therapy-order-check"
TOKEN = "fhir-access-token-" + uuid.uuid4().hex
PID = "NEW-F1"


def _record(pid: str = PID) -> list[dict]:
    """A group-A patient on lisinopril (given by reference), with hypertension and diabetes."""
    lisinopril = request_of(pid, "m-lis", S0, "2019-09-05", reason=D)
    del lisinopril["medicationCodeableConcept"]
    lisinopril["medicationReference"] = {"reference": "Medication/lis-10"}
    amlodipine = request_of(
        pid, "m-aml", "rxnorm|17767", "2019-07-01", "completed", D, "2019-09-01"
    )
    return [
        patient(pid),
        condition(pid, "c-htn", D, "2019-06-01"),
        condition(pid, "c-dm2", C, "2022-01-10"),
        amlodipine,
        lisinopril,
        {"resourceType": "Medication", "id": "lis-10", "code": concept(S0)},
        allergy(pid, "a1", ALG),
    ]


def body(hook: str, server: str | None, pid: str = PID, prefetch: dict | None = None, **auth):
    context = {"userId": "Practitioner/7", "patientId": pid}
    if hook == "order-select":
        draft = request_of(pid, "draft-1", T2, "2024-03-01", status="draft", reason=C)
        context.update(selections=["MedicationRequest/draft-1"], draftOrders=bundle(draft))
    call = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context}
    if server is not None:
        call["fhirServer"] = server
        call["fhirAuthorization"] = {
            "access_token": TOKEN,
            "token_type": "Bearer",
            "scope": "patient/*.read",
            "subject": "treatment-recommender",
            **auth,
        }
    if prefetch is not None:
        call["prefetch"] = prefetch
    return call


def post(client, ehr, path: str, payload: dict):
    token = ehr.token(CDS_BASE + path)
    return client.post(path, json=payload, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def tls(cds_site):
    return certificate(cds_site.site.root)


@pytest.fixture
def https_server(tls):
    state = FhirServer(token=TOKEN).add(*_record())
    server = start(state, tls)
    yield state
    stop(server)


@pytest.fixture
def http_server():
    state = FhirServer(token=TOKEN).add(*_record())
    server = start(state)
    yield state
    stop(server)


def test_missing_prefetch_is_fetched_over_https_with_the_token_only(
    make_cds_app, cds_site, https_server, tls, caplog
):
    client = make_cds_app(CDS_FHIR_CA_FILE=str(tls[0])).test_client()
    with caplog.at_level(logging.DEBUG):
        response = post(client, cds_site.ehr, SUGGEST, body("patient-view", https_server.base))
    assert response.status_code == 200, response.get_json()
    cards = check_response(response.get_json())
    assert cards[0]["summary"].startswith("Consider Metformin")  # as for group A
    # the templates' keys, each once; the reference was in the _include
    assert sorted(https_server.paths()) == sorted(
        [
            "/fhir/Patient/NEW-F1",
            "/fhir/Condition",
            "/fhir/MedicationRequest",
            "/fhir/MedicationStatement",
            "/fhir/AllergyIntolerance",
        ]
    )
    assert {seen.authorization for seen in https_server.seen} == {f"Bearer {TOKEN}"}
    medications = next(s for s in https_server.seen if s.path == "/fhir/MedicationRequest")
    assert medications.query["_include"] == ["MedicationRequest:medication"]
    assert medications.query["status"] == ["active,on-hold,completed,stopped"]
    line = audit_lines(cds_site.site)[-1]
    assert line["fhir_calls"] == 5
    everything = (cds_site.site.root / "audit.log").read_text() + caplog.text
    assert TOKEN not in everything and PID not in caplog.text


def test_a_medication_reference_is_fetched_when_the_bundle_lacks_it(
    make_cds_app, cds_site, https_server, tls
):
    """The safety defect of issue 19: lisinopril given by reference must reach the
    interaction check, so glipizide (severe interaction with it) is warned about."""
    record = _record()
    prefetch = {
        "patient": record[0],
        "conditions": bundle(*record[1:3]),
        "medications": bundle(*record[3:5]),  # no Medication: not _included
        "allergies": bundle(record[6]),
    }
    client = make_cds_app(CDS_FHIR_CA_FILE=str(tls[0])).test_client()
    response = post(
        client, cds_site.ehr, CHECK, body("order-select", https_server.base, prefetch=prefetch)
    )
    cards = check_response(response.get_json())
    assert cards[0]["indicator"] == "warning" and "severe interaction" in cards[0]["summary"]
    assert https_server.paths() == ["/fhir/MedicationStatement", "/fhir/Medication/lis-10"]
    assert "Could not check" not in json.dumps(cards)


def _unresolvable_prefetch(display: str | None) -> dict:
    """The record with lisinopril by a reference neither the Bundle nor a server resolves."""
    record = _record()
    prefetch = {
        "patient": record[0],
        "conditions": bundle(*record[1:3]),
        "medications": bundle(*record[3:5]),
        "allergies": bundle(record[6]),
    }
    if display is not None:
        prefetch["medications"]["entry"][1]["resource"]["medicationReference"]["display"] = display
    return prefetch


def test_an_unresolvable_medication_is_said_on_a_card(cds_client, cds_site):
    prefetch = _unresolvable_prefetch(None)
    response = post(cds_client, cds_site.ehr, CHECK, body("order-select", None, prefetch=prefetch))
    cards = check_response(response.get_json())
    # without the Medication the severe interaction cannot be seen: never silence
    assert [card["indicator"] for card in cards] == ["warning"]
    assert cards[0]["summary"].startswith("Safety checks incomplete")
    detail = cards[0]["detail"]
    assert "**Could not check** interactions and duplicate therapy with 1 active" in detail
    assert "a medication without a name (its Medication resource is neither" in detail
    suggestions = post(
        cds_client, cds_site.ehr, SUGGEST, body("patient-view", None, prefetch=prefetch)
    ).get_json()["cards"]
    assert suggestions and all("Could not check" in card["detail"] for card in suggestions)


def test_an_unresolvable_medication_is_still_checked_for_duplicates_by_its_name(
    cds_client, cds_site
):
    """The reference's display names lisinopril: the same ingredient is never suggested again,
    and the cards say interactions were not checked."""
    prefetch = _unresolvable_prefetch("Lisinopril 20 MG Oral Tablet")
    cards = check_response(
        post(
            cds_client, cds_site.ehr, CHECK, body("order-select", None, prefetch=prefetch)
        ).get_json()
    )
    assert cards[0]["summary"].startswith("Safety checks incomplete")
    detail = cards[0]["detail"]
    assert "**Checked for duplicate therapy by active ingredient only**, not for" in detail
    assert "Lisinopril 20 MG Oral Tablet (its Medication resource is neither" in detail
    assert "; lisinopril)" in detail and "**Could not check** interactions" not in detail
    unchecked = post(
        cds_client,
        cds_site.ehr,
        SUGGEST,
        body("patient-view", None, prefetch=_unresolvable_prefetch(None)),
    ).get_json()["cards"]
    # the defect: lisinopril suggested to a patient on it
    assert any(card["summary"].startswith("Consider Lisinopril") for card in unchecked)
    code = '"code": "' + S0.split("|")[1] + '"'
    assert code in json.dumps([s for card in unchecked for s in card.get("suggestions", [])])
    suggestions = post(
        cds_client, cds_site.ehr, SUGGEST, body("patient-view", None, prefetch=prefetch)
    ).get_json()["cards"]
    assert suggestions and not any("Lisinopril" in card["summary"] for card in suggestions)
    assert code not in json.dumps([s for card in suggestions for s in card.get("suggestions", [])])
    assert all("Checked for duplicate therapy" in card["detail"] for card in suggestions)


def test_plain_http_is_refused_unless_the_site_allows_it(make_cds_app, cds_site, http_server):
    refused = post(
        make_cds_app().test_client(), cds_site.ehr, SUGGEST, body("patient-view", http_server.base)
    )
    assert refused.status_code == 412
    assert "not https" in refused.get_json()["error"]["message"]
    assert http_server.seen == []  # not even tried
    allowed = make_cds_app(CDS_FHIR_ALLOW_HTTP=True).test_client()
    assert (
        post(allowed, cds_site.ehr, SUGGEST, body("patient-view", http_server.base)).status_code
        == 200
    )


def test_an_unreachable_server_is_412_quickly(make_cds_app, cds_site):
    client = make_cds_app(CDS_FHIR_ALLOW_HTTP=True).test_client()
    started = time.monotonic()
    response = post(client, cds_site.ehr, SUGGEST, body("patient-view", "http://127.0.0.1:9/fhir"))
    assert response.status_code == 412
    assert "could not be reached" in response.get_json()["error"]["message"]
    assert time.monotonic() - started < 3


def test_the_time_and_call_limits_hold(make_cds_app, cds_site, http_server):
    http_server.delay = 0.4
    client = make_cds_app(CDS_FHIR_ALLOW_HTTP=True, CDS_FHIR_TIMEOUT=0.6).test_client()
    started = time.monotonic()
    response = post(client, cds_site.ehr, SUGGEST, body("patient-view", http_server.base))
    assert response.status_code == 412 and time.monotonic() - started < 2
    assert "time limit" in response.get_json()["error"]["message"]
    http_server.delay, http_server.seen = 0.0, []
    client = make_cds_app(CDS_FHIR_ALLOW_HTTP=True, CDS_FHIR_MAX_CALLS=2).test_client()
    response = post(client, cds_site.ehr, SUGGEST, body("patient-view", http_server.base))
    assert response.status_code == 412 and len(http_server.seen) == 2
    assert "call limit (2)" in response.get_json()["error"]["message"]


def test_a_refused_query_leaves_its_key_missing(make_cds_app, cds_site, http_server):
    http_server.refuse["AllergyIntolerance"] = 403
    client = make_cds_app(CDS_FHIR_ALLOW_HTTP=True).test_client()
    response = post(client, cds_site.ehr, SUGGEST, body("patient-view", http_server.base))
    assert response.status_code == 412
    error = response.get_json()["error"]
    assert error["details"]["missing_prefetch"] == ["allergies"]
    assert "AllergyIntolerance: the FHIR server refused the query" in error["message"]


def test_redirects_are_not_followed_so_the_token_stays_with_the_server(
    make_cds_app, cds_site, http_server
):
    elsewhere = FhirServer()
    other = start(elsewhere)
    try:
        http_server.redirect["Condition"] = elsewhere.base + "/Condition?patient=" + PID
        client = make_cds_app(CDS_FHIR_ALLOW_HTTP=True).test_client()
        response = post(client, cds_site.ehr, SUGGEST, body("patient-view", http_server.base))
        assert response.status_code == 412
        assert elsewhere.seen == []
    finally:
        stop(other)


def test_pages_are_followed_on_the_same_server_only(make_cds_app, cds_site, http_server):
    http_server.page_size = 1
    client = make_cds_app(CDS_FHIR_ALLOW_HTTP=True).test_client()
    response = post(client, cds_site.ehr, CHECK, body("order-select", http_server.base))
    cards = check_response(response.get_json())
    assert "severe interaction" in cards[0]["summary"]  # lisinopril was on page 2
    assert http_server.paths().count("/fhir/MedicationRequest") == 2  # one request a page
    http_server.seen, http_server.next_base = [], "http://127.0.0.2:1/fhir"
    response = post(client, cds_site.ehr, CHECK, body("order-select", http_server.base))
    cards = check_response(response.get_json())
    assert "a next page on another server was not read" in json.dumps(cards)


def test_an_expired_or_untyped_authorization_is_not_used(make_cds_app, cds_site, http_server):
    client = make_cds_app(CDS_FHIR_ALLOW_HTTP=True).test_client()
    response = post(
        client, cds_site.ehr, SUGGEST, body("patient-view", http_server.base, expires_in=0)
    )
    assert response.status_code == 412 and http_server.seen == []
    text = post(
        client, cds_site.ehr, SUGGEST, body("patient-view", http_server.base, expires_in="600")
    )
    assert text.status_code == 200  # the sandbox sends expires_in as text
    assert (
        post(client, cds_site.ehr, SUGGEST, body("patient-view", http_server.base)).status_code
        == 200
    )


def test_the_tls_certificate_is_verified(make_cds_app, cds_site, https_server):
    client = make_cds_app().test_client()  # the system's authorities do not know the test CA
    response = post(client, cds_site.ehr, SUGGEST, body("patient-view", https_server.base))
    assert response.status_code == 412
    assert "could not be reached" in response.get_json()["error"]["message"]
