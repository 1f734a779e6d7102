"""CDS Hooks 2.0 through Flask's test client: the specification's examples replayed, both hooks
on the coded cohort (known answers), the response rules, feedback, audit and CORS.

The request examples below are written out from the CDS Hooks 2.0 specification ("Calling a
CDS Service") and the patient-view and order-select hook definitions (R4 example).
"""

from __future__ import annotations

import copy
import json
import logging
import uuid
from datetime import datetime, timezone

import pytest

from recommender.data.feedback import read_feedback

from .cds_rules import check_discovery, check_response
from .cds_support import (
    ALG,
    S0,
    S1,
    T0,
    T1,
    T2,
    TX,
    C,
    D,
    allergy,
    bundle,
    group_a_prefetch,
    medication_request,
)
from .conftest import CDS_BASE, EHR_ISSUER, audit_lines

SUGGEST, CHECK = "/cds-services/therapy-suggestions", "/cds-services/therapy-order-check"
FHIR_TOKEN = "some-opaque-fhir-access-token"

#: CDS Hooks 2.0, "Calling a CDS Service", example request.
SPEC_CALL_EXAMPLE = {
    "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
    "fhirServer": "http://hooks.smarthealthit.org:9080",
    "hook": "patient-view",
    "fhirAuthorization": {
        "access_token": FHIR_TOKEN,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "user/Patient.read user/Observation.read",
        "subject": "cds-service4",
    },
    "context": {"userId": "Practitioner/example", "patientId": "1288992", "encounterId": "89284"},
    "prefetch": {
        "patientToGreet": {
            "resourceType": "Patient",
            "gender": "male",
            "birthDate": "1925-12-23",
            "id": "1288992",
            "active": True,
        }
    },
}
#: patient-view hook definition, context examples.
PATIENT_VIEW_CONTEXTS = [
    {"userId": "PractitionerRole/123", "patientId": "1288992"},
    {"userId": "PractitionerRole/123", "patientId": "1288992", "encounterId": "456"},
]
#: order-select hook definition, R4 example (context), abridged to the fields it defines.
ORDER_SELECT_EXAMPLE = {
    "userId": "PractitionerRole/123",
    "patientId": "1288992",
    "encounterId": "89284",
    "selections": [
        "NutritionOrder/pureeddiet-simple",
        "MedicationRequest/smart-MedicationRequest-103",
    ],
    "draftOrders": {
        "resourceType": "Bundle",
        "entry": [
            {
                "resource": {
                    "resourceType": "NutritionOrder",
                    "id": "pureeddiet-simple",
                    "status": "draft",
                    "intent": "order",
                    "patient": {"reference": "Patient/1288992"},
                    "dateTime": "2014-09-17",
                    "oralDiet": {
                        "type": [
                            {
                                "coding": [
                                    {
                                        "system": "http://snomed.info/sct",
                                        "code": "226211001",
                                        "display": "Pureed diet",
                                    }
                                ],
                                "text": "Pureed diet",
                            }
                        ]
                    },
                }
            },
            {
                "resource": {
                    "resourceType": "MedicationRequest",
                    "id": "smart-MedicationRequest-103",
                    "status": "draft",
                    "intent": "order",
                    "medicationCodeableConcept": {
                        "coding": [
                            {
                                "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                "code": "617993",
                                "display": "Amoxicillin 120 MG/ML / clavulanate potassium 8.58 MG/ML "
                                "Oral Suspension",
                            }
                        ],
                        "text": "Amoxicillin 120 MG/ML / clavulanate potassium 8.58 MG/ML Oral "
                        "Suspension",
                    },
                    "subject": {"reference": "Patient/1288992"},
                    "dosageInstruction": [
                        {
                            "text": "5 mL bid x 10 days",
                            "timing": {
                                "repeat": {
                                    "boundsPeriod": {"start": "2005-01-04"},
                                    "frequency": 2,
                                    "period": 1,
                                    "periodUnit": "d",
                                }
                            },
                        }
                    ],
                }
            },
        ],
    },
}


@pytest.fixture
def full_client(make_cds_app):
    """A client of a site that shows the full basis in every card (RECOMMENDER_CDS_DETAIL)."""
    return make_cds_app(ACCESS_LOG=False, CDS_DETAIL="full").test_client()


def call(client, ehr, path: str, body: dict, **claims):
    token = ehr.token(CDS_BASE + path, **claims)
    return client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})


def hook(name: str, context: dict, prefetch: dict | None = None) -> dict:
    body = {"hook": name, "hookInstance": str(uuid.uuid4()), "context": context}
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def order(
    pid: str, drug: str, prefetch: dict | None, reason: str | None = C, others: tuple = ()
) -> dict:
    draft = medication_request(pid, "draft-1", drug, "2024-03-01", status="draft", reason=reason)
    context = {
        "userId": "Practitioner/7",
        "patientId": pid,
        "selections": ["MedicationRequest/draft-1"],
        "draftOrders": bundle(draft, *others),
    }
    return hook("order-select", context, prefetch)


def suggested(card: dict) -> list[str]:
    """The therapies a card's suggestions create, in order."""
    found = []
    for suggestion in card.get("suggestions", []):
        for action in suggestion["actions"]:
            if action["type"] == "create":
                coding = action["resource"]["medicationCodeableConcept"]["coding"][0]
                found.append(f"rxnorm|{coding['code']}")
    return found


# --- discovery and the specification's examples ------------------------------------------------


def test_discovery_lists_both_services_with_the_prefetch_templates(cds_client):
    response = cds_client.get("/cds-services")  # open: no patient data
    assert response.status_code == 200
    services = {s["id"]: s for s in check_discovery(response.get_json())}
    assert services["therapy-suggestions"]["hook"] == "patient-view"
    assert services["therapy-order-check"]["hook"] == "order-select"
    prefetch = services["therapy-suggestions"]["prefetch"]
    assert set(prefetch) == {
        "patient",
        "conditions",
        "medications",
        "medicationStatements",
        "allergies",
    }
    assert prefetch["medications"] == (
        "MedicationRequest?patient={{context.patientId}}"
        "&status=active,on-hold,completed,stopped&_include=MedicationRequest:medication"
    )
    assert "resolved" in prefetch["conditions"] and "completed" in prefetch["medicationStatements"]
    assert "3650 days" in services["therapy-suggestions"]["usageRequirements"]


def test_the_spec_call_example_for_a_patient_the_model_does_not_know_is_412(cds_client, cds_site):
    response = call(cds_client, cds_site.ehr, SUGGEST, SPEC_CALL_EXAMPLE)
    assert response.status_code == 412
    error = response.get_json()["error"]
    assert error["code"] == "prefetch_missing"
    assert error["details"]["missing_prefetch"] == ["conditions", "medications", "allergies"]


def test_the_spec_call_example_for_a_known_patient_answers_cards(cds_client, cds_site):
    body = copy.deepcopy(SPEC_CALL_EXAMPLE)
    body["context"]["patientId"] = "P0200"
    body["prefetch"] = {"patient": {**body["prefetch"]["patientToGreet"], "id": "P0200"}}
    response = call(cds_client, cds_site.ehr, SUGGEST, body)
    assert response.status_code == 200
    cards = check_response(response.get_json())
    assert suggested(cards[0])[0] == cds_site.truth["P0200"]


@pytest.mark.parametrize("context", PATIENT_VIEW_CONTEXTS)
def test_the_patient_view_hook_examples(cds_client, cds_site, context):
    assert call(cds_client, cds_site.ehr, SUGGEST, hook("patient-view", context)).status_code == 412
    known = {**context, "patientId": "P0201"}
    response = call(cds_client, cds_site.ehr, SUGGEST, hook("patient-view", known))
    cards = check_response(response.get_json())
    assert [suggested(card)[0] for card in cards] == [cds_site.truth["P0201"]]


def test_the_order_select_hook_example(cds_client, cds_site):
    response = call(cds_client, cds_site.ehr, CHECK, hook("order-select", ORDER_SELECT_EXAMPLE))
    assert response.status_code == 412  # patient unknown to the model, no prefetch
    known = copy.deepcopy(ORDER_SELECT_EXAMPLE)
    known["patientId"] = "P0200"
    response = call(cds_client, cds_site.ehr, CHECK, hook("order-select", known))
    assert response.status_code == 200
    assert check_response(response.get_json()) == []  # amoxicillin: not a therapy the model knows


# --- patient-view -------------------------------------------------------------------------------


def test_patient_view_for_probe_patients_suggests_the_planted_therapy_first(cds_client, cds_site):
    for probe, best in list(cds_site.truth.items())[:4]:
        response = call(
            cds_client,
            cds_site.ehr,
            SUGGEST,
            hook("patient-view", {"userId": "Practitioner/7", "patientId": probe}),
        )
        cards = check_response(response.get_json())
        assert len(cards) == 1  # diabetes; both hypertension drugs are tried already
        assert suggested(cards[0])[0] == best
        assert cards[0]["summary"].startswith("Consider ")


def test_patient_view_detail_shows_the_basis(full_client, cds_site):
    response = call(
        full_client,
        cds_site.ehr,
        SUGGEST,
        hook("patient-view", {"userId": "Practitioner/7", "patientId": "P0200"}),
    )
    card = check_response(response.get_json())[0]
    detail = card["detail"]
    assert "Lisinopril 10 MG Oral Tablet: responded" in detail  # the contributing outcome
    assert "200 outcomes recorded" in detail and "95% Wilson interval 43%-57%" in detail
    assert "Model `als-" in detail and "supports, rather than replaces" in detail
    assert "Glipizide 5 MG Oral Tablet (severe interaction" in detail  # excluded and why
    assert card["overrideReasons"] and card["selectionBehavior"] == "at-most-one"
    proposal = card["suggestions"][0]["actions"][0]["resource"]
    assert proposal["intent"] == "proposal"
    assert proposal["subject"] == {"reference": "Patient/P0200"}


def test_patient_view_for_a_new_patient_from_prefetch(full_client, cds_site):
    body = hook(
        "patient-view", {"userId": "Practitioner/7", "patientId": "NEW1"}, group_a_prefetch("NEW1")
    )
    cards = check_response(call(full_client, cds_site.ehr, SUGGEST, body).get_json())
    assert suggested(cards[0])[0] == T0  # group A: lisinopril worked, amlodipine switched away
    assert "Lisinopril 10 MG Oral Tablet: partial response" in cards[0]["detail"]


def test_a_new_allergy_in_the_prefetch_reaches_a_known_patient(full_client, cds_site):
    """The prefetch is fresher than the training data: an allergy recorded since is applied."""
    pid = "P0001"  # has a positive insulin outcome on record
    plain = call(
        full_client, cds_site.ehr, SUGGEST, hook("patient-view", {"patientId": pid})
    ).get_json()
    assert "(contraindicated" not in json.dumps(plain)
    body = hook(
        "patient-view",
        {"patientId": pid},
        {"allergies": bundle(allergy(pid, "a1", ALG, "2024-01-01"))},
    )
    card = check_response(call(full_client, cds_site.ehr, SUGGEST, body).get_json())[0]
    assert TX not in suggested(card)
    assert "Insulin Glargine 100 UNT/ML Injectable Solution (contraindicated" in card["detail"]


def test_info_link_and_source_url_when_configured(make_cds_app, cds_site):
    client = make_cds_app(CDS_INFO_URL="https://intranet.example.org/model-card").test_client()
    response = call(client, cds_site.ehr, SUGGEST, hook("patient-view", {"patientId": "P0200"}))
    card = check_response(response.get_json())[0]
    assert card["source"]["url"] == "https://intranet.example.org/model-card"
    assert card["links"][0]["type"] == "absolute"


def test_no_cards_is_an_empty_list(cds_client, cds_site):
    body = hook(
        "patient-view",
        {"patientId": "NEW2"},
        {"conditions": None, "medications": None, "allergies": None},
    )
    response = call(cds_client, cds_site.ehr, SUGGEST, body)
    assert response.status_code == 200 and response.get_json() == {"cards": []}


# --- order-select -------------------------------------------------------------------------------


def test_order_select_warns_about_a_contraindicated_draft_and_offers_alternatives(
    full_client, cds_site
):
    prefetch = group_a_prefetch("NEW1", allergies=(allergy("NEW1", "a1", ALG),))
    cards = check_response(
        call(full_client, cds_site.ehr, CHECK, order("NEW1", TX, prefetch)).get_json()
    )
    warning, alternatives = cards
    assert warning["indicator"] == "warning" and "contraindicated" in warning["summary"]
    assert "contraindicated by" in warning["detail"] and warning["overrideReasons"]
    assert "suggestions" not in warning
    assert suggested(alternatives)[0] == T0
    first = alternatives["suggestions"][0]["actions"]
    assert [a["type"] for a in first] == ["delete", "create"]
    assert first[0]["resourceId"] == "MedicationRequest/draft-1"
    assert first[1]["resource"]["status"] == "draft" and first[1]["resource"]["intent"] == "order"


def test_order_select_warns_about_past_harm(cds_client, cds_site):
    harmed = medication_request(
        "NEW3", "m-sit", T1, "2023-01-01", status="stopped", reason=C, stop="2023-01-20"
    )
    prefetch = group_a_prefetch(
        "NEW3", allergies=(allergy("NEW3", "a2", T1, "2023-01-10"),), extra_meds=(harmed,)
    )
    cards = check_response(
        call(cds_client, cds_site.ehr, CHECK, order("NEW3", T1, prefetch)).get_json()
    )
    assert cards[0]["indicator"] == "warning"
    assert "adverse outcome" in cards[0]["summary"]
    assert suggested(cards[1])[0] == T0


def test_order_select_warns_about_a_severe_interaction_with_an_active_therapy(cds_client, cds_site):
    cards = check_response(
        call(
            cds_client, cds_site.ehr, CHECK, order("NEW4", T2, group_a_prefetch("NEW4"))
        ).get_json()
    )
    assert cards[0]["indicator"] == "warning" and "severe interaction" in cards[0]["summary"]


def test_order_select_checks_interactions_with_other_draft_orders(cds_client, cds_site):
    prefetch = {"conditions": bundle(), "medications": None, "allergies": None}
    other = medication_request("NEW5", "draft-2", S0, "2024-03-01", status="draft")
    body = order("NEW5", T2, prefetch, others=(other,))
    cards = check_response(call(cds_client, cds_site.ehr, CHECK, body).get_json())
    assert cards and cards[0]["indicator"] == "warning"
    assert "severe interaction" in cards[0]["summary"]


def test_order_select_offers_a_better_supported_alternative(cds_client, cds_site):
    """Group A: the model ranks metformin above sitagliptin, with the same response rate."""
    cards = check_response(
        call(
            cds_client, cds_site.ehr, CHECK, order("NEW6", T1, group_a_prefetch("NEW6"))
        ).get_json()
    )
    assert [c["indicator"] for c in cards] == ["info"]
    assert suggested(cards[0]) == [T0]


def test_order_select_is_silent_for_the_best_order(cds_client, cds_site):
    response = call(cds_client, cds_site.ehr, CHECK, order("NEW7", T0, group_a_prefetch("NEW7")))
    assert response.get_json() == {"cards": []}


def test_order_select_for_a_known_patient_without_prefetch(cds_client, cds_site):
    """P0002 carries the penicillin allergy in the training data."""
    cards = check_response(
        call(cds_client, cds_site.ehr, CHECK, order("P0002", TX, None)).get_json()
    )
    assert cards[0]["indicator"] == "warning"


def test_moderate_interactions_are_shown_as_a_caution(full_client, cds_site):
    """Group B takes amlodipine; sitagliptin (their best) interacts moderately with it."""
    response = call(
        full_client, cds_site.ehr, SUGGEST, hook("patient-view", {"patientId": "P0201"})
    )
    card = check_response(response.get_json())[0]
    assert suggested(card)[0] == T1
    assert "**Caution:** moderate interaction with Amlodipine 5 MG Oral Tablet" in card["detail"]


# --- requests that are refused ----------------------------------------------------------------


@pytest.mark.parametrize(
    "mutate, status, code",
    [
        (lambda b: b.update(hook="order-select"), 400, "invalid_body"),
        (lambda b: b.pop("hookInstance"), 400, "invalid_body"),
        (lambda b: b["context"].pop("patientId"), 400, "invalid_body"),
        (
            lambda b: b.update(
                fhirAuthorization={
                    "access_token": FHIR_TOKEN,
                    "token_type": "Bearer",
                    "expires_in": 300,
                    "scope": "x",
                    "subject": "y",
                }
            ),
            400,
            "invalid_body",
        ),  # fhirServer is required with it
        (
            lambda b: b.update(prefetch={"allergies": bundle(allergy("SOMEONE-ELSE", "a", ALG))}),
            400,
            "invalid_prefetch",
        ),
    ],
)
def test_bad_requests_are_400(cds_client, cds_site, mutate, status, code):
    body = hook("patient-view", {"patientId": "P0200"})
    mutate(body)
    response = call(cds_client, cds_site.ehr, SUGGEST, body)
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code


def test_unknown_service_is_404(cds_client, cds_site):
    response = call(
        cds_client, cds_site.ehr, "/cds-services/nope", hook("patient-view", {"patientId": "P0200"})
    )
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "unknown_service"


def test_an_operation_outcome_in_the_prefetch_counts_as_missing(cds_client, cds_site):
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout"}],
    }
    prefetch = {**group_a_prefetch("NEW8"), "allergies": outcome}
    response = call(
        cds_client, cds_site.ehr, SUGGEST, hook("patient-view", {"patientId": "NEW8"}, prefetch)
    )
    assert response.status_code == 412
    assert response.get_json()["error"]["details"]["missing_prefetch"] == ["allergies"]


# --- audit, secrets, CORS ------------------------------------------------------------------------


def test_every_call_is_audited_with_the_issuer_and_pseudonym(cds_client, cds_site, caplog):
    body = copy.deepcopy(SPEC_CALL_EXAMPLE)
    body["context"]["patientId"] = "P0200"
    body["prefetch"] = {}
    with caplog.at_level(logging.DEBUG):
        response = call(cds_client, cds_site.ehr, SUGGEST, body)
        refused = call(cds_client, cds_site.ehr, SUGGEST, SPEC_CALL_EXAMPLE)
    assert response.status_code == 200 and refused.status_code == 412
    lines = audit_lines(cds_site.site)
    ok, failed = lines[-2], lines[-1]
    assert ok["principal"] == EHR_ISSUER and ok["role"] == "cds-client"
    assert ok["endpoint"] == "cds.call_service" and ok["hook"] == "patient-view"
    assert ok["user"] == "Practitioner/example" and ok["treatment_ids"][0] == T0
    assert ok["condition_ids"] == [D, C]  # both asked about; hypertension drugs all tried
    assert ok["patient_pseudonym"] and "P0200" not in json.dumps(ok)
    assert failed["status"] == 412 and failed["error_code"] == "prefetch_missing"
    everything = (cds_site.site.root / "audit.log").read_text() + caplog.text
    assert FHIR_TOKEN not in everything and FHIR_TOKEN not in response.get_data(as_text=True)


def test_cors_is_off_by_default_and_answers_configured_origins(make_cds_app, cds_site):
    plain = make_cds_app().test_client()
    assert (
        "Access-Control-Allow-Origin"
        not in plain.get("/cds-services", headers={"Origin": "https://ehr.example.org"}).headers
    )
    client = make_cds_app(CDS_CORS_ORIGINS=("https://ehr.example.org",)).test_client()
    preflight = client.options(
        SUGGEST,
        headers={
            "Origin": "https://ehr.example.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://ehr.example.org"
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
    other = client.options(
        SUGGEST,
        headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in other.headers
    response = call(client, cds_site.ehr, SUGGEST, hook("patient-view", {"patientId": "P0200"}))
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in client.get("/v1/model").headers


# --- feedback -----------------------------------------------------------------------------------


def counts(response) -> dict:
    """The counts of a feedback answer (its per-item ``results`` aside)."""
    return {k: v for k, v in response.get_json().items() if k != "results"}


def feedback_call(client, ehr, path: str, items: list[dict]):
    return call(client, ehr, path + "/feedback", {"feedback": items})


def test_feedback_accepted_and_overridden_reach_the_feedback_store(cds_client, cds_site):
    body = hook("patient-view", {"patientId": "P0200"})
    card = call(cds_client, cds_site.ehr, SUGGEST, body).get_json()["cards"][0]
    accepted = {
        "card": card["uuid"],
        "outcome": "accepted",
        "outcomeTimestamp": "2024-03-01T10:05:31Z",
        "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
    }
    response = feedback_call(cds_client, cds_site.ehr, SUGGEST, [accepted])
    assert response.status_code == 200
    assert counts(response) == {"stored": 1, "already_stored": 0, "audit_only": 0}
    again = feedback_call(cds_client, cds_site.ehr, SUGGEST, [accepted])  # a client's retry
    assert counts(again) == {"stored": 0, "already_stored": 1, "audit_only": 0}
    overridden = {
        "card": card["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": "2024-03-01T10:06:00Z",
        "overrideReason": {
            "reason": card["overrideReasons"][0],
            "userComment": "Mrs Smith prefers tablets",
        },
    }
    assert feedback_call(cds_client, cds_site.ehr, SUGGEST, [overridden]).get_json()[
        "stored"
    ] == len(card["suggestions"])
    stored = read_feedback(cds_site.site.root / "feedback.jsonl")
    first = stored.iloc[0]
    assert first["decision"] == "accepted" and first["treatment_id"] == T0
    assert first["principal"] == EHR_ISSUER and first["source"] == "cds-hooks:therapy-suggestions"
    assert first["patient"] != "P0200" and len(first["patient"]) == 32  # the pseudonym
    overrides = stored[stored["decision"] == "overridden"]
    assert set(overrides["treatment_id"]) == set(suggested(card))
    assert overrides.iloc[0]["reason"] == "patient-preference (Patient preference)"
    assert "Smith" not in (cds_site.site.root / "feedback.jsonl").read_text()
    line = audit_lines(cds_site.site)[-1]
    assert line["endpoint"] == "cds.feedback" and line["cards"] == [card["uuid"]]
    assert line["patient_pseudonym"] == first["patient"]


def test_an_overridden_warning_is_stored_as_its_own_kind_not_as_a_preference(cds_client, cds_site):
    prefetch = group_a_prefetch("NEW1", allergies=(allergy("NEW1", "a1", ALG),))
    answer = call(cds_client, cds_site.ehr, CHECK, order("NEW1", TX, prefetch)).get_json()
    warning = answer["cards"][0]
    assert warning["indicator"] == "warning"
    overridden = {
        "card": warning["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": "2024-03-01T10:00:00Z",
        "overrideReason": {
            "reason": warning["overrideReasons"][1],
            "userComment": "allergy refuted by Dr Jones",
        },
    }
    response = feedback_call(cds_client, cds_site.ehr, CHECK, [overridden])
    assert counts(response) == {"stored": 1, "already_stored": 0, "audit_only": 0}
    again = feedback_call(cds_client, cds_site.ehr, CHECK, [overridden])
    assert counts(again) == {"stored": 0, "already_stored": 1, "audit_only": 0}
    stored = read_feedback(cds_site.site.root / "feedback.jsonl")
    assert len(stored) == 1
    row = stored.iloc[0]
    assert row["decision"] == "warning_overridden" and row["treatment_id"] == TX
    assert row["reason"] == "record-incorrect (The record is incorrect (e.g. allergy refuted))"
    assert row["source"] == "cds-hooks:therapy-order-check" and row["patient"] != "NEW1"
    assert "Jones" not in (cds_site.site.root / "feedback.jsonl").read_text()
    assert audit_lines(cds_site.site)[-1]["treatment_ids"] == [TX]


def test_an_accepted_warning_is_audited_only(cds_client, cds_site):
    prefetch = group_a_prefetch("NEW1", allergies=(allergy("NEW1", "a1", ALG),))
    answer = call(cds_client, cds_site.ehr, CHECK, order("NEW1", TX, prefetch)).get_json()
    response = feedback_call(
        cds_client,
        cds_site.ehr,
        CHECK,
        [
            {
                "card": answer["cards"][0]["uuid"],
                "outcome": "accepted",
                "outcomeTimestamp": "2024-03-01T10:00:00Z",
            }
        ],
    )
    assert counts(response) == {"stored": 0, "already_stored": 0, "audit_only": 1}
    assert not (cds_site.site.root / "feedback.jsonl").read_text()
    assert audit_lines(cds_site.site)[-1]["treatment_ids"] == [TX]


@pytest.mark.parametrize(
    "item, status, code",
    [
        (
            {
                "card": "4e0a3a1e-3283-4575-ab82-028d55fe2719",
                "outcome": "overridden",
                "outcomeTimestamp": "2021-12-11T10:05:31Z",
            },
            404,
            "unknown_card",
        ),
        (
            {"card": "x", "outcome": "maybe", "outcomeTimestamp": "2021-12-11T10:05:31Z"},
            400,
            "invalid_body",
        ),
        (
            {"card": "x", "outcome": "accepted", "outcomeTimestamp": "yesterday"},
            400,
            "invalid_body",
        ),
    ],
)
def test_bad_feedback_is_refused(cds_client, cds_site, item, status, code):
    response = feedback_call(cds_client, cds_site.ehr, SUGGEST, [item])
    assert response.status_code == status and response.get_json()["error"]["code"] == code


def test_feedback_names_cards_of_its_own_service_only(cds_client, cds_site):
    card = call(
        cds_client, cds_site.ehr, SUGGEST, hook("patient-view", {"patientId": "P0200"})
    ).get_json()["cards"][0]
    item = {
        "card": card["uuid"],
        "outcome": "accepted",
        "outcomeTimestamp": "2024-03-01T10:05:31Z",
        "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
    }
    assert feedback_call(cds_client, cds_site.ehr, CHECK, [item]).status_code == 404
    no_suggestion = {**item, "acceptedSuggestions": []}
    assert feedback_call(cds_client, cds_site.ehr, SUGGEST, [no_suggestion]).status_code == 400
    wrong = {**item, "acceptedSuggestions": [{"id": str(uuid.uuid4())}]}
    assert feedback_call(cds_client, cds_site.ehr, SUGGEST, [wrong]).status_code == 404


def test_the_spec_feedback_examples_validate(cds_client, cds_site):
    """The specification's three feedback examples pass validation (their cards are unknown)."""
    examples = [
        {
            "card": "4e0a3a1e-3283-4575-ab82-028d55fe2719",
            "outcome": "accepted",
            "acceptedSuggestions": [{"id": "e56e1945-20b3-4393-8503-a1a20fd73152"}],
            "outcomeTimestamp": "2021-12-11T10:05:31Z",
        },
        {
            "card": "f6b95768-b1c8-40dc-8385-bf3504b82ffb",
            "outcome": "overridden",
            "outcomeTimestamp": "2020-12-11T00:00:00Z",
        },
        {
            "card": "9368d37b-283f-44a0-93ea-547cebab93ed",
            "outcome": "overridden",
            "overrideReason": {
                "reason": {
                    "code": "d7ecf885",
                    "system": "https://example.com/cds-hooks/override-reason-system",
                },
                "userComment": "A comment entered by the clinician.",
            },
            "outcomeTimestamp": "2020-12-11T00:00:00Z",
        },
    ]
    for item in examples:
        response = feedback_call(cds_client, cds_site.ehr, SUGGEST, [item])
        assert response.get_json()["error"]["code"] == "unknown_card"


def test_order_select_warns_about_a_draft_of_an_active_therapy(cds_client, cds_site):
    """Lisinopril is active in the prefetch: a new order of it is duplicate therapy."""
    cards = check_response(
        call(
            cds_client, cds_site.ehr, CHECK, order("NEW9", S0, group_a_prefetch("NEW9"))
        ).get_json()
    )
    assert cards[0]["indicator"] == "warning"
    assert "same active ingredient as an active therapy" in cards[0]["summary"]
    assert "duplicate therapy" in cards[0]["detail"]


def test_order_select_checks_duplicates_between_draft_orders(cds_client, cds_site):
    prefetch = {"conditions": bundle(), "medications": None, "allergies": None}
    other = medication_request("NEW10", "draft-2", T0, "2024-03-01", status="draft")
    body = order("NEW10", T0, prefetch, others=(other,))
    cards = check_response(call(cds_client, cds_site.ehr, CHECK, body).get_json())
    assert cards and cards[0]["indicator"] == "warning"
    assert "same active ingredient" in cards[0]["summary"]


def test_a_batch_is_processed_item_by_item(cds_client, cds_site):
    card = call(
        cds_client, cds_site.ehr, SUGGEST, hook("patient-view", {"patientId": "P0200"})
    ).get_json()["cards"][0]
    good = {
        "card": card["uuid"],
        "outcome": "accepted",
        "outcomeTimestamp": "2024-03-01T10:05:31Z",
        "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
    }
    unknown = {**good, "card": str(uuid.uuid4())}
    broken = {"card": card["uuid"], "outcome": "maybe", "outcomeTimestamp": "2024-03-01"}
    response = feedback_call(cds_client, cds_site.ehr, SUGGEST, [unknown, good, broken])
    assert response.status_code == 200
    answer = response.get_json()
    assert counts(response) == {"stored": 1, "already_stored": 0, "audit_only": 0}
    assert [r["status"] for r in answer["results"]] == ["unknown_card", "stored", "invalid"]
    assert answer["results"][0]["card"] == unknown["card"]
    assert "feedback[2].outcome" in answer["results"][2]["message"]
    again = feedback_call(cds_client, cds_site.ehr, SUGGEST, [good]).get_json()
    assert again["results"] == [{"card": card["uuid"], "status": "already_stored"}]
    assert len(read_feedback(cds_site.site.root / "feedback.jsonl")) == 1


def test_a_later_override_with_a_coded_reason_is_not_a_duplicate(cds_client, cds_site):
    card = call(
        cds_client, cds_site.ehr, SUGGEST, hook("patient-view", {"patientId": "P0200"})
    ).get_json()["cards"][0]
    plain = {
        "card": card["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": "2024-03-01T10:00:00Z",
    }
    coded = {
        **plain,
        "outcomeTimestamp": "2024-03-01T10:01:00Z",
        "overrideReason": {"reason": card["overrideReasons"][2]},
    }
    offered = len(card["suggestions"])
    assert counts(feedback_call(cds_client, cds_site.ehr, SUGGEST, [plain]))["stored"] == offered
    assert counts(feedback_call(cds_client, cds_site.ehr, SUGGEST, [coded]))["stored"] == offered
    assert counts(feedback_call(cds_client, cds_site.ehr, SUGGEST, [coded]))["stored"] == 0
    reasons = read_feedback(cds_site.site.root / "feedback.jsonl")["reason"].tolist()
    assert reasons.count("tried-before (Already tried (not in the record))") == offered


# --- liberal in what is accepted ---------------------------------------------------------------


def test_a_body_without_content_type_is_read_as_json(cds_client, cds_site):
    token = cds_site.ehr.token(CDS_BASE + SUGGEST)
    response = cds_client.post(
        SUGGEST,
        data=json.dumps(hook("patient-view", {"patientId": "P0200"})),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200 and response.get_json()["cards"]
    token = cds_site.ehr.token(CDS_BASE + SUGGEST)
    other = cds_client.post(
        SUGGEST,
        data="hook=patient-view",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"},
    )
    assert other.status_code == 415


def test_unknown_top_level_fields_are_ignored_and_logged_by_name(cds_client, cds_site, caplog):
    body = hook("patient-view", {"patientId": "P0200"})
    body["colour"] = "a secret value"
    with caplog.at_level(logging.INFO, logger="service.cds_hooks.views"):
        response = call(cds_client, cds_site.ehr, SUGGEST, body)
    assert response.status_code == 200
    assert "unknown top-level field(s) ignored: 'colour'" in caplog.text
    assert "a secret value" not in caplog.text


def test_a_fhir_authorization_without_expires_in_is_accepted(cds_client, cds_site):
    body = hook("patient-view", {"patientId": "P0200"})
    body["fhirServer"] = "https://fhir.example.org/r4"
    body["fhirAuthorization"] = {"access_token": FHIR_TOKEN, "token_type": "Bearer"}
    body["prefetch"] = {"conditions": None}  # the FHIR server is not needed for a known patient
    response = call(cds_client, cds_site.ehr, SUGGEST, body)
    assert response.status_code == 200


def test_an_invalid_prefetched_resource_is_skipped_and_counted_on_the_card(cds_client, cds_site):
    prefetch = group_a_prefetch("NEW9")
    prefetch["patient"]["gender"] = 12
    prefetch["conditions"]["entry"].append(
        {"resource": medication_request("NEW9", "m-x", S1, "2020-01-01")}
    )
    response = call(
        cds_client, cds_site.ehr, SUGGEST, hook("patient-view", {"patientId": "NEW9"}, prefetch)
    )
    card = check_response(response.get_json())[0]
    assert suggested(card)[0] == T0
    assert "2 prefetched resource(s) were not valid FHIR R4" in card["detail"]
    assert "1 `Patient` in `patient`, 1 `MedicationRequest` in `conditions`" in card["detail"]


# --- cards ----------------------------------------------------------------------------------------


def test_cards_mark_the_top_suggestion_and_draft_full_orders(make_cds_app, cds_site):
    client = make_cds_app(CDS_ICON_URL="https://cds.example.org/icon-100px.png").test_client()
    context = {"patientId": "P0200", "userId": "PractitionerRole/123", "encounterId": "89284"}
    card = check_response(
        call(client, cds_site.ehr, SUGGEST, hook("patient-view", context)).get_json()
    )[0]
    assert card["source"]["icon"] == "https://cds.example.org/icon-100px.png"
    assert [s.get("isRecommended", False) for s in card["suggestions"]] == [True] + [False] * (
        len(card["suggestions"]) - 1
    )
    resource = card["suggestions"][0]["actions"][0]["resource"]
    assert resource["requester"] == {"reference": "PractitionerRole/123"}
    assert resource["encounter"] == {"reference": "Encounter/89284"}
    authored = datetime.fromisoformat(resource["authoredOn"])
    assert abs((datetime.now(timezone.utc) - authored).total_seconds()) < 60
    assert len(card["detail"]) <= 400
    assert "rxnorm|" not in card["detail"] and "snomed|" not in card["detail"]
    assert "Metformin 500 MG Oral Tablet (50% responded (n=200))" in card["detail"]


def test_an_alternative_carries_the_patients_earlier_dosage(cds_client, cds_site):
    earlier = medication_request(
        "NEW10", "m-met", T0, "2021-01-01", status="stopped", reason=C, stop="2021-02-01"
    )
    earlier["dosageInstruction"][0]["text"] = "500 mg twice daily with meals"
    prefetch = group_a_prefetch("NEW10", extra_meds=(earlier,))
    cards = check_response(
        call(cds_client, cds_site.ehr, CHECK, order("NEW10", T1, prefetch)).get_json()
    )
    create = cards[-1]["suggestions"][0]["actions"][1]["resource"]
    assert create["dosageInstruction"][0]["text"] == "500 mg twice daily with meals"
    assert "copied from the patient's latest earlier order" in create["note"][0]["text"]
    assert create["requester"] == {"reference": "Practitioner/7"}
