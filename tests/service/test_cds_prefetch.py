"""Prefetch -> engine inputs: the same outcomes as the FHIR importer on the same resources."""

from __future__ import annotations

import json
from datetime import date

import pytest

from recommender.data.tables import read_tables
from recommender.importers.fhir import import_fhir
from service.cds_hooks.medications import NOT_FOUND, NOT_KNOWN, Unresolved, ingredient_reader
from service.cds_hooks.prefetch import parse_prefetch
from service.errors import ApiError

from .cds_support import (
    ALG,
    S0,
    S1,
    T0,
    T1,
    TX,
    C,
    D,
    allergy,
    bundle,
    concept,
    condition,
    medication_request,
    patient,
)

PID = "p-1"


def _prefetch() -> dict:
    """A year of care: amlodipine switched to lisinopril; metformin stopped after its episode
    resolved; sitagliptin followed by an allergy to it; insulin without a reason."""
    return {
        "patient": patient(PID),
        "conditions": bundle(
            condition(PID, "htn", D, "2019-06-01"),
            {
                **condition(PID, "dm", C, "2020-01-01", status="resolved"),
                "abatementDateTime": "2020-03-01",
            },
            condition(PID, "dm2", C, "2021-01-01"),
        ),
        "medications": bundle(
            medication_request(PID, "m1", S1, "2019-07-01", "completed", D, "2019-09-01"),
            medication_request(PID, "m2", S0, "2019-09-05", reason=D),
            medication_request(PID, "m3", T0, "2020-01-10", "completed", C, "2020-02-20"),
            medication_request(PID, "m4", T1, "2021-02-01", "stopped", C, "2021-02-20"),
            medication_request(PID, "m5", TX, "2021-03-01"),
        ),
        "allergies": bundle(allergy(PID, "a1", T1, "2021-02-10"), allergy(PID, "a2", ALG)),
    }


def test_outcomes_match_the_fhir_importer(tmp_path):
    prefetch = _prefetch()
    resources = [prefetch["patient"]] + [
        entry["resource"]
        for key in ("conditions", "medications", "allergies")
        for entry in prefetch[key]["entry"]
    ]
    (tmp_path / "bundle.json").write_text(json.dumps(bundle(*resources)))
    import_fhir(tmp_path / "bundle.json", tmp_path / "tables")
    expected = read_tables(tmp_path / "tables").outcomes
    expected = {
        (row.treatment_id, round(float(row.outcome), 3), int(row.adverse))
        for row in expected.itertuples()
    }
    parsed = parse_prefetch(prefetch, PID, lambda identifier: False, lookback_days=None)
    found = {(item["treatment_id"], item["outcome"], item["adverse"]) for item in parsed.history}
    assert found == expected
    assert found == {(S1, 0.0, 0), (S0, 0.5, 0), (T0, 1.0, 0), (T1, -1.0, 1)}


def test_conditions_allergies_active_treatments_and_demographics():
    parsed = parse_prefetch(_prefetch(), PID, {S0, S1, T0, T1, TX}.__contains__)
    assert parsed.conditions == [D, C]
    assert parsed.active_conditions == [D, C]  # the resolved episode's code is active again
    assert parsed.allergies == [T1, ALG]
    assert parsed.active_treatments == [S0, TX]  # insulin has no reason: no outcome, but active
    assert parsed.unresolved == []
    assert (parsed.sex, parsed.birth_year) == ("F", 1961)
    assert parsed.provided == {"patient", "conditions", "medications", "allergies"}
    assert parsed.names[S0] == "Lisinopril 10 MG Oral Tablet"


def test_the_coding_the_model_knows_is_preferred():
    request = medication_request(PID, "m", S0, "2020-01-01")
    request["medicationCodeableConcept"]["coding"].insert(
        0, {"system": "http://hl7.org/fhir/sid/ndc", "code": "0000-1111"}
    )
    plain = parse_prefetch(
        {"medications": bundle(request)}, PID, lambda identifier: False, is_treatment=lambda i: True
    )
    assert plain.active_treatments == [S0]  # rxnorm is preferred, as in the importer
    known = parse_prefetch(
        {"medications": bundle(request)}, PID, lambda identifier: identifier == "ndc|0000-1111"
    )
    assert known.active_treatments == ["ndc|0000-1111"]


def test_null_means_no_data_and_an_operation_outcome_means_not_provided():
    parsed = parse_prefetch(
        {
            "conditions": None,
            "allergies": {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "timeout"}],
            },
        },
        PID,
        lambda identifier: False,
    )
    assert parsed.provided == {"conditions"}
    assert parsed.missing_for_new_patient() == ["medications", "allergies"]


@pytest.mark.parametrize(
    "prefetch, message",
    [
        ({"allergies": bundle(allergy("someone-else", "a", ALG))}, "another patient"),
        ({"patient": patient("someone-else")}, "another patient"),
        ({"medications": "MedicationRequest?patient=1"}, "must be a FHIR resource"),
    ],
)
def test_invalid_prefetch_is_refused_with_the_key_named(prefetch, message):
    with pytest.raises(ApiError, match=message) as raised:
        parse_prefetch(prefetch, PID, lambda identifier: False)
    assert raised.value.status == 400 and raised.value.details["key"] in prefetch


def test_an_invalid_resource_is_skipped_and_counted():
    broken = {**medication_request(PID, "m-bad", S1, "2020-01-01"), "authoredOn": "not a date"}
    prefetch = {
        "patient": {"resourceType": "Patient", "id": PID, "birthDate": "not a date"},
        "medications": bundle(medication_request(PID, "m2", S0, "2019-09-05"), broken),
        "conditions": bundle(condition(PID, "c", C), medication_request(PID, "m3", T0, "2020")),
    }
    parsed = parse_prefetch(prefetch, PID, {S0, S1, T0}.__contains__)
    assert parsed.active_treatments == [S0]
    assert parsed.conditions == [C]
    assert parsed.skipped == {
        ("patient", "Patient"): 1,
        ("medications", "MedicationRequest"): 1,
        ("conditions", "MedicationRequest"): 1,
    }
    assert parsed.provided == {"patient", "medications", "conditions"}


# --- medication references -----------------------------------------------------------------------


def _by_reference(rid: str, reference: str, display: str | None = None, **extra) -> dict:
    request = medication_request(PID, rid, S0, "2024-01-01")
    del request["medicationCodeableConcept"]
    request["medicationReference"] = {"reference": reference}
    if display:
        request["medicationReference"]["display"] = display
    return {**request, **extra}


def _medication(mid: str, drug: str) -> dict:
    return {"resourceType": "Medication", "id": mid, "code": concept(drug)}


def test_medication_references_resolve_from_the_bundle_and_contained_resources():
    contained = _by_reference("m1", "#med", contained=[_medication("med", S1)])
    by_id = _by_reference("m2", "Medication/hctz")
    by_url = _by_reference("m3", "urn:uuid:9f1e")
    absolute = _by_reference("m4", "https://fhir.example.org/r4/Medication/t0")
    medications = bundle(contained, by_id, by_url, absolute, _medication("hctz", S0))
    medications["entry"].append({"fullUrl": "urn:uuid:9f1e", "resource": _medication("x", T1)})
    medications["entry"].append({"resource": _medication("t0", T0)})
    parsed = parse_prefetch({"medications": medications}, PID, {S0, S1, T0, T1}.__contains__)
    assert parsed.active_treatments == [S1, S0, T1, T0]
    assert parsed.unresolved == []


def test_an_unresolvable_medication_is_reported_not_dropped():
    missing = _by_reference("m1", "Medication/hctz-25", "Hydrochlorothiazide 25 MG Oral Tablet")
    bare = _by_reference("m2", "Medication/nothing")
    unknown = medication_request(PID, "m3", "rxnorm|617993", "2024-01-01")
    unknown["medicationCodeableConcept"] = {"text": "Amoxicillin 120 MG/ML Oral Suspension"}
    stopped = _by_reference("m4", "Medication/old", status="stopped")
    parsed = parse_prefetch(
        {"medications": bundle(missing, bare, unknown, stopped)}, PID, {S0}.__contains__
    )
    assert parsed.active_treatments == []
    assert parsed.unresolved == [
        Unresolved("Hydrochlorothiazide 25 MG Oral Tablet", NOT_FOUND),
        Unresolved("", NOT_FOUND),
        Unresolved("Amoxicillin 120 MG/ML Oral Suspension", NOT_KNOWN),
    ]


def test_an_unknown_medication_falls_back_to_the_ingredients_the_model_knows():
    missing = _by_reference("m1", "Medication/hctz-25", "Hydrochlorothiazide 25 MG Oral Tablet")
    combination = medication_request(PID, "m2", "rxnorm|999967", "2024-01-01")
    combination["medicationCodeableConcept"] = {
        "text": "Amlodipine 5 MG / Olmesartan medoxomil 20 MG Oral Tablet"
    }
    unknown = medication_request(PID, "m3", "rxnorm|617993", "2024-01-01")
    unknown["medicationCodeableConcept"] = {"text": "Amoxicillin 120 MG/ML Oral Suspension"}
    ingredients = {"drug|hydrochlorothiazide", "drug|amlodipine"}
    parsed = parse_prefetch(
        {"medications": bundle(missing, combination, unknown)},
        PID,
        {S0}.__contains__,
        ingredients_of=ingredient_reader(frozenset(ingredients)),
    )
    assert parsed.active_treatments == ["drug|hydrochlorothiazide", "drug|amlodipine"]
    assert parsed.unresolved == [
        Unresolved(
            "Hydrochlorothiazide 25 MG Oral Tablet", NOT_FOUND, ("drug|hydrochlorothiazide",)
        ),
        Unresolved(
            "Amlodipine 5 MG / Olmesartan medoxomil 20 MG Oral Tablet",
            NOT_KNOWN,
            ("drug|amlodipine",),
        ),
        Unresolved("Amoxicillin 120 MG/ML Oral Suspension", NOT_KNOWN),
    ]


def test_a_missing_medication_is_fetched_once_when_a_fetcher_is_given():
    asked = []

    def fetch(key):
        asked.append(key)
        return _medication("hctz", S0) if key == "Medication/hctz" else None

    requests = bundle(
        _by_reference("m1", "Medication/hctz"),
        _by_reference("m2", "Medication/hctz"),
        _by_reference("m3", "Medication/gone", "Gone 5 MG"),
    )
    parsed = parse_prefetch(
        {"medications": requests}, PID, {S0}.__contains__, fetch_medication=fetch
    )
    assert parsed.active_treatments == [S0]
    assert parsed.unresolved == [Unresolved("Gone 5 MG", NOT_FOUND)]
    assert asked == ["Medication/hctz", "Medication/gone"]


def test_medication_statements_count_as_taken():
    statement = {
        "resourceType": "MedicationStatement",
        "id": "s1",
        "status": "active",
        "subject": {"reference": f"Patient/{PID}"},
        "medicationCodeableConcept": concept(T0),
        "effectiveDateTime": "2024-02-01",
        "dosage": [{"text": "500 mg twice daily"}],
    }
    parsed = parse_prefetch({"medicationStatements": bundle(statement)}, PID, {T0}.__contains__)
    assert parsed.active_treatments == [T0]
    assert parsed.dosages[T0] == [{"text": "500 mg twice daily"}]


def test_the_look_back_window_drops_old_finished_medications_only():
    old = medication_request(PID, "m1", S1, "2001-01-01", "completed", D, "2001-03-01")
    recent = medication_request(PID, "m2", T1, "2023-01-01", "stopped", C, "2023-02-01")
    running = medication_request(PID, "m3", S0, "2001-04-01", reason=D)
    after = medication_request(PID, "m4", T0, "2023-03-01", reason=C)
    prefetch = {
        "conditions": bundle(condition(PID, "htn", D, "2000-06-01"), condition(PID, "dm", C)),
        "medications": bundle(old, recent, running, after),
    }
    kwargs = {"lookback_days": 3650, "today": date(2024, 6, 1)}
    parsed = parse_prefetch(prefetch, PID, lambda identifier: False, **kwargs)
    assert {item["treatment_id"] for item in parsed.history} == {T1, T0, S0}
    everything = parse_prefetch(prefetch, PID, lambda identifier: False, lookback_days=None)
    assert {item["treatment_id"] for item in everything.history} == {S1, T1, T0, S0}
