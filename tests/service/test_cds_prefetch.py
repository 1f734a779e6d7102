"""Prefetch -> engine inputs: the same outcomes as the FHIR importer on the same resources."""

from __future__ import annotations

import json

import pytest

from recommender.data.tables import read_tables
from recommender.importers.fhir import import_fhir
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
    parsed = parse_prefetch(prefetch, PID, lambda identifier: False)
    found = {(item["treatment_id"], item["outcome"], item["adverse"]) for item in parsed.history}
    assert found == expected
    assert found == {(S1, 0.0, 0), (S0, 0.5, 0), (T0, 1.0, 0), (T1, -1.0, 1)}


def test_conditions_allergies_active_treatments_and_demographics():
    parsed = parse_prefetch(_prefetch(), PID, lambda identifier: False)
    assert parsed.conditions == [D, C]
    assert parsed.active_conditions == [D, C]  # the resolved episode's code is active again
    assert parsed.allergies == [T1, ALG]
    assert parsed.active_treatments == [S0, TX]  # insulin has no reason: no outcome, but active
    assert (parsed.sex, parsed.birth_year) == ("F", 1961)
    assert parsed.provided == {"patient", "conditions", "medications", "allergies"}
    assert parsed.names[S0] == "Lisinopril 10 MG Oral Tablet"


def test_the_coding_the_model_knows_is_preferred():
    request = medication_request(PID, "m", S0, "2020-01-01")
    request["medicationCodeableConcept"]["coding"].insert(
        0, {"system": "http://hl7.org/fhir/sid/ndc", "code": "0000-1111"}
    )
    plain = parse_prefetch({"medications": bundle(request)}, PID, lambda identifier: False)
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
        (
            {"patient": {"resourceType": "Patient", "id": PID, "birthDate": "not a date"}},
            "is not a valid FHIR R4 Patient",
        ),
        ({"allergies": bundle(allergy("someone-else", "a", ALG))}, "another patient"),
        ({"patient": patient("someone-else")}, "another patient"),
        ({"medications": bundle(condition(PID, "c", C))}, "expected MedicationRequest"),
        ({"medications": "MedicationRequest?patient=1"}, "must be a FHIR resource"),
    ],
)
def test_invalid_prefetch_is_refused_with_the_key_named(prefetch, message):
    with pytest.raises(ApiError, match=message) as raised:
        parse_prefetch(prefetch, PID, lambda identifier: False)
    assert raised.value.status == 400 and raised.value.details["key"] in prefetch
