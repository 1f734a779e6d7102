"""FHIR importer: a hand-written Bundle (and the same as NDJSON) with known outcomes, validation
in lenient and strict mode, and the Nebraska Synthea set converted to FHIR by this test."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

from recommender.data.tables import read_tables
from recommender.exceptions import DataValidationError
from recommender.importers import import_fhir, import_synthea

from .conftest import shared_dataset

pytest.importorskip(
    "fhir.resources",
    reason="the FHIR importer needs fhir.resources (pip install 'fhir.resources>=8,<9')",
)

SNOMED, RXNORM = "http://snomed.info/sct", "http://www.nlm.nih.gov/research/umls/rxnorm"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"


def cc(system, code, display=""):
    """A CodeableConcept (FHIR forbids empty strings, so no display when there is none)."""
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def patient_ref(pid):
    return {"reference": f"Patient/{pid}"}


RESOURCES = [
    {
        "resourceType": "Patient",
        "id": "p1",
        "gender": "female",
        "birthDate": "1970-04-05",
        "extension": [
            {
                "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
                "extension": [{"url": "text", "valueString": "White"}],
            },
            {
                "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity",
                "extension": [
                    {
                        "url": "ombCategory",
                        "valueCoding": {
                            "system": "urn:oid:2.16.840.1.113883.6.238",
                            "code": "2186-5",
                            "display": "Not Hispanic or Latino",
                        },
                    }
                ],
            },
        ],
    },
    {
        "resourceType": "Patient",
        "id": "p2",
        "gender": "male",
        "birthDate": "1940-01-01",
        "deceasedDateTime": "2020-03-15T00:00:00Z",
    },
    {"resourceType": "Patient", "id": "p3", "gender": "other", "birthDate": "2001"},
    # p1: strep throat resolved 8 days after penicillin; hypertension open (ICD-10-CM only).
    {
        "resourceType": "Condition",
        "id": "c1",
        "subject": patient_ref("p1"),
        "code": cc(SNOMED, "43878008", "Streptococcal sore throat"),
        "onsetDateTime": "2020-01-01T09:00:00Z",
        "abatementDateTime": "2020-01-09T09:00:00Z",
    },
    {
        "resourceType": "Condition",
        "id": "c2",
        "subject": patient_ref("p1"),
        "code": cc(ICD10CM, "I10", "Essential hypertension"),
        "onsetDateTime": "2015-01-01",
    },
    {
        "resourceType": "Condition",
        "id": "c4",
        "subject": patient_ref("p1"),
        "code": cc(SNOMED, "22298006", "Myocardial infarction"),
        "onsetDateTime": "2019-01-01",
        "verificationStatus": {"coding": [{"code": "entered-in-error"}]},
    },
    {
        "resourceType": "Condition",
        "id": "c3",
        "subject": patient_ref("p2"),
        "code": cc(SNOMED, "233604007", "Pneumonia"),
        "onsetDateTime": "2020-03-01",
    },
    {
        "resourceType": "Condition",
        "id": "c5",
        "subject": patient_ref("p3"),
        "code": cc(SNOMED, "444814009", "Viral sinusitis"),
        "onsetPeriod": {"start": "2021-06-01"},
        "abatementPeriod": {"end": "2021-06-20"},
    },
    {
        "resourceType": "Condition",
        "id": "c6",
        "subject": patient_ref("p3"),
        "code": cc("http://example.org/codes", "X1", "Local code"),
        "onsetDateTime": "2021-01-01",
    },
    # Treatments.
    {
        "resourceType": "MedicationRequest",
        "id": "m1",
        "status": "completed",
        "intent": "order",
        "subject": patient_ref("p1"),
        "authoredOn": "2020-01-01T10:00:00Z",
        "medicationCodeableConcept": cc(
            RXNORM, "834061", "Penicillin V Potassium 250 MG Oral Tablet"
        ),
        "reasonReference": [{"reference": "Condition/c1"}],
    },
    {
        "resourceType": "MedicationRequest",
        "id": "m2",
        "status": "stopped",
        "intent": "order",
        "subject": patient_ref("p1"),
        "authoredOn": "2015-01-01",
        "contained": [
            {
                "resourceType": "Medication",
                "id": "med1",
                "code": cc(RXNORM, "310798", "Hydrochlorothiazide 25 MG Oral Tablet"),
            }
        ],
        "medicationReference": {"reference": "#med1"},
        "reasonCode": [cc(ICD10CM, "I10")],
    },
    {
        "resourceType": "MedicationStatement",
        "id": "s3",
        "status": "active",
        "subject": patient_ref("p1"),
        "effectivePeriod": {"start": "2015-03-01"},
        "medicationCodeableConcept": cc(RXNORM, "314076", "lisinopril 10 MG Oral Tablet"),
        "reasonCode": [cc(ICD10CM, "I10")],
    },
    {
        "resourceType": "MedicationRequest",
        "id": "m4",
        "status": "completed",
        "intent": "order",
        "subject": patient_ref("p2"),
        "authoredOn": "2020-03-01",
        "medicationCodeableConcept": cc(RXNORM, "308182", "Amoxicillin 250 MG Oral Capsule"),
        "reasonReference": [{"reference": "Condition/c3"}],
    },
    {
        "resourceType": "Medication",
        "id": "medx",
        "code": cc("http://hl7.org/fhir/sid/ndc", "0002-1234", "Some drug"),
    },
    {
        "resourceType": "MedicationRequest",
        "id": "m5",
        "status": "stopped",
        "intent": "order",
        "subject": patient_ref("p2"),
        "authoredOn": "2019-01-01",
        "medicationReference": {"reference": "Medication/medx"},
        "reasonCode": [cc(SNOMED, "233604007")],
    },  # pneumonia only starts in 2020
    {
        "resourceType": "MedicationRequest",
        "id": "m6",
        "status": "completed",
        "intent": "order",
        "subject": patient_ref("p1"),
        "authoredOn": "2020-01-01",
        "medicationCodeableConcept": cc(RXNORM, "313782", "Acetaminophen 325 MG Oral Tablet"),
    },
    {
        "resourceType": "MedicationRequest",
        "id": "m7",
        "status": "entered-in-error",
        "intent": "order",
        "subject": patient_ref("p1"),
        "authoredOn": "2020-01-01",
        "medicationCodeableConcept": cc(RXNORM, "313782"),
        "reasonCode": [cc(SNOMED, "43878008")],
    },
    {
        "resourceType": "MedicationRequest",
        "id": "m8",
        "status": "completed",
        "intent": "order",
        "subject": patient_ref("p3"),
        "authoredOn": "2021-06-01",
        "medicationCodeableConcept": cc(RXNORM, "200346", "cefdinir 300 MG Oral Capsule"),
        "reasonCode": [cc(SNOMED, "444814009")],
    },
    {
        "resourceType": "AllergyIntolerance",
        "id": "a1",
        "patient": patient_ref("p1"),
        "code": cc(SNOMED, "91935009", "Allergy to peanuts"),
        "onsetDateTime": "2020-01-02",
    },
    {
        "resourceType": "AllergyIntolerance",
        "id": "a2",
        "patient": patient_ref("p3"),
        "code": cc(SNOMED, "294532003", "Cephalosporin allergy"),
        "onsetDateTime": "2021-06-05",
        "reaction": [
            {"substance": cc(RXNORM, "200346"), "manifestation": [cc(SNOMED, "271807003", "Rash")]}
        ],
    },
    {
        "resourceType": "Procedure",
        "id": "pr1",
        "status": "completed",
        "subject": patient_ref("p1"),
        "code": cc(SNOMED, "117015009", "Throat culture"),
        "performedDateTime": "2020-01-02",
        "reasonReference": [{"reference": "Condition/c1"}],
    },
    {"resourceType": "Observation", "id": "o1", "status": "final", "code": cc(SNOMED, "1")},
]
BAD = {
    "resourceType": "MedicationRequest",
    "id": "bad",
    "status": "completed",
    "intent": "order",
    "subject": patient_ref("p1"),
    "authoredOn": "2020-13-45",
    "medicationCodeableConcept": cc(RXNORM, "1"),
    "reasonCode": [cc(SNOMED, "43878008")],
}

#: (patient, treatment, indication) -> (outcome, adverse, rule), derived by hand.
EXPECTED = {
    ("p1", "rxnorm|834061", "snomed|43878008"): (1.0, 0, "resolved"),
    ("p1", "rxnorm|310798", "icd10|I10"): (0.0, 0, "switched"),  # lisinopril 59 days later
    ("p1", "rxnorm|314076", "icd10|I10"): (0.5, 0, "chronic"),  # active, no switch
    ("p2", "rxnorm|308182", "snomed|233604007"): (-1.0, 1, "adverse"),  # died 14 days later
    ("p3", "rxnorm|200346", "snomed|444814009"): (-1.0, 1, "adverse"),  # allergy to it
}


def write_bundle(path, resources):
    """A collection Bundle whose references all use the entries' urn:uuid fullUrls."""
    urls = {
        f"{r['resourceType']}/{r['id']}": f"urn:uuid:{r['resourceType'].lower()}-{r['id']}"
        for r in resources
    }
    text = json.dumps(resources)
    for key, url in urls.items():
        text = text.replace(f'"reference": "{key}"', f'"reference": "{url}"')
    entries = [
        {"fullUrl": urls[f"{r['resourceType']}/{r['id']}"], "resource": r} for r in json.loads(text)
    ]
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}))
    return path


def write_ndjson_folder(folder, resources):
    """One NDJSON file per resource type (Bulk Data layout), the Conditions gzip-compressed."""
    folder.mkdir(parents=True)
    by_type = {}
    for resource in resources:
        by_type.setdefault(resource["resourceType"], []).append(json.dumps(resource))
    for rtype, lines in by_type.items():
        text = "\n".join(lines) + "\n\n"
        if rtype == "Condition":
            with gzip.open(folder / f"{rtype}.ndjson.gz", "wt") as handle:
                handle.write(text)
        else:
            (folder / f"{rtype}.ndjson").write_text(text)
    return folder


def outcome_map(out) -> dict:
    frame = pd.read_csv(out / "outcomes.csv", dtype=str, keep_default_na=False)
    return {
        (r.patient_id, r.treatment_id, r.condition_id): (float(r.outcome), int(r.adverse), r.rule)
        for r in frame.itertuples()
    }


def test_bundle_known_outcomes(tmp_path):
    src = write_bundle(tmp_path / "bundle.json", RESOURCES)
    report = import_fhir(src, tmp_path / "out")

    assert outcome_map(tmp_path / "out") == EXPECTED
    assert (
        report.dropped["MedicationRequest: no reasonCode or reasonReference (no indication)"] == 1
    )
    assert report.dropped["MedicationRequest: status entered-in-error"] == 1
    assert report.dropped["Condition: entered-in-error or refuted"] == 1
    assert report.dropped["Procedure: include_procedures is off"] == 1
    assert report.dropped["observations (Observation): no patient"] == 1  # o1 has no subject
    assert report.dropped["courses: no outcome evidence (no rule applied)"] == 1  # m5
    assert report.unmatched == {
        "treatments: reasonCode without a Condition of that code with "
        "onset on or before the start": 1
    }
    assert report.rows_read["MedicationRequest"] == 7
    assert any("example.org/codes" in w for w in report.warnings)


def test_tables_from_the_bundle(tmp_path):
    import_fhir(write_bundle(tmp_path / "bundle.json", RESOURCES), tmp_path / "out")
    tables = read_tables(tmp_path / "out")

    patients = tables.patients.set_index("patient_id")
    assert patients.loc["p1", ["sex", "birth_year", "race", "ethnicity"]].tolist() == [
        "F",
        1970,
        "white",
        "not hispanic or latino",
    ]
    assert patients.loc["p2", "death_date"] == "2020-03-15" and patients.loc["p3", "sex"] == "O"
    pairs = set(
        zip(tables.patient_conditions["patient_id"], tables.patient_conditions["condition_id"])
    )
    assert pairs == {
        ("p1", "snomed|43878008"),
        ("p1", "icd10|I10"),
        ("p1", "snomed|91935009"),
        ("p2", "snomed|233604007"),
        ("p3", "snomed|444814009"),
        ("p3", "example.org/codes|X1"),
        ("p3", "snomed|294532003"),
    }
    names = tables.treatments.set_index("treatment_id")["name"]
    assert names["rxnorm|310798"] == "Hydrochlorothiazide 25 MG Oral Tablet"  # contained
    ingredients = tables.treatments.set_index("treatment_id")["ingredients"]
    assert ingredients["rxnorm|310798"] == "drug|hydrochlorothiazide"
    assert (
        tables.conditions.set_index("condition_id")["name"]["snomed|91935009"]
        == "Allergy to peanuts"
    )


def test_ndjson_folder_gives_the_same_result(tmp_path):
    folder = write_ndjson_folder(tmp_path / "ndjson", RESOURCES)
    import_fhir(folder, tmp_path / "out")
    assert outcome_map(tmp_path / "out") == EXPECTED
    import_fhir(folder / "MedicationRequest.ndjson", tmp_path / "meds_only")
    assert read_tables(tmp_path / "meds_only").patients is None  # no Patient resource given


def test_procedures_when_asked(tmp_path):
    src = write_bundle(tmp_path / "bundle.json", RESOURCES)
    import_fhir(src, tmp_path / "out", include_procedures=True)
    got = outcome_map(tmp_path / "out")
    assert got[("p1", "snomed|117015009", "snomed|43878008")] == (1.0, 0, "resolved")
    assert got[("p1", "rxnorm|834061", "snomed|43878008")] == (1.0, 0, "resolved")


def test_invalid_resource_is_skipped_with_a_warning_or_raises_when_strict(tmp_path):
    src = write_bundle(tmp_path / "bundle.json", RESOURCES + [BAD])
    report = import_fhir(src, tmp_path / "out")
    assert outcome_map(tmp_path / "out") == EXPECTED
    assert report.dropped["MedicationRequest: invalid FHIR resource (skipped)"] == 1
    warning = next(w for w in report.warnings if "MedicationRequest/bad" in w)
    assert "field 'authoredOn'" in warning and "entry 22" in warning

    with pytest.raises(DataValidationError, match=r"MedicationRequest/bad .*field 'authoredOn'"):
        import_fhir(src, tmp_path / "strict", strict=True)
    assert not (tmp_path / "strict").exists()


def test_broken_json_line(tmp_path):
    folder = write_ndjson_folder(tmp_path / "ndjson", RESOURCES)
    with open(folder / "MedicationRequest.ndjson", "a") as handle:
        handle.write('{"resourceType": "MedicationRequest", \n')
    report = import_fhir(folder, tmp_path / "out")
    assert report.dropped["JSON documents: not valid JSON"] == 1
    with pytest.raises(
        DataValidationError, match=r"MedicationRequest.ndjson line 9.*not valid JSON"
    ):
        import_fhir(folder, tmp_path / "strict", strict=True)


def test_missing_path(tmp_path):
    with pytest.raises(DataValidationError, match="does not exist"):
        import_fhir(tmp_path / "nothing.json", tmp_path / "out")


def test_cli_subcommand(tmp_path, import_cli, capsys):
    src = write_bundle(tmp_path / "bundle.json", RESOURCES + [BAD])
    args = import_cli(["import", "fhir", str(src), "--out", str(tmp_path / "out")])
    assert args.func(args) == 0
    assert "fhir (fhir-r4): 5 outcome rows, 3 patients" in capsys.readouterr().out
    args = import_cli(["import", "fhir", str(src), "--out", str(tmp_path / "o2"), "--strict"])
    with pytest.raises(DataValidationError, match="MedicationRequest/bad"):
        args.func(args)


# --- observations and onsets ------------------------------------------------------------------

LOINC = "http://loinc.org"


def observation(rid, pid, code, time=None, **fields):
    """An Observation of patient ``pid`` coded ``code`` (a LOINC code or a CodeableConcept)."""
    resource = {
        "resourceType": "Observation",
        "id": rid,
        "status": fields.pop("status", "final"),
        "code": cc(LOINC, code) if isinstance(code, str) else code,
    }
    if pid:
        resource["subject"] = patient_ref(pid)
    if time:
        resource["effectiveDateTime"] = time
    resource.update(fields)
    return resource


def quantity(value, unit, **more):
    return {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", **more}


OBSERVATIONS = [
    observation(  # a blood-pressure panel: one row per component, the panel's time in UTC
        "bp",
        "p1",
        "85354-9",
        "2020-01-01T10:30:00+01:00",
        component=[
            {"code": cc(LOINC, "8480-6"), "valueQuantity": quantity(120, "mm[Hg]")},
            {"code": cc(LOINC, "8462-4"), "valueQuantity": quantity(80, "mm[Hg]")},
        ],
    ),
    observation(
        "hb",
        "p1",
        "718-7",
        effectivePeriod={"start": "2020-02-01T08:00:00Z"},
        valueQuantity=quantity(13.5, "g/dL"),
    ),
    observation(  # only issued: the time the result was released
        "glu", "p2", "2339-0", issued="2020-04-01T07:00:00Z", valueQuantity=quantity(95, "mg/dL")
    ),
    observation(  # a date stays a date; valueInteger is a number
        "pain", "p3", "72514-3", "2020-05-01", valueInteger=3
    ),
    observation(  # unit from the UCUM code when there is no unit text
        "wt",
        "p3",
        "29463-7",
        "2020-05-01T09:00:00Z",
        valueQuantity={"value": 70.5, "system": "http://unitsofmeasure.org", "code": "kg"},
    ),
    observation(  # censored
        "egfr", "p1", "33914-3", "2020-03-01", valueQuantity=quantity(60, "mL/min", comparator=">")
    ),
    observation(  # text result
        "smoke", "p1", "72166-2", "2020-03-01", valueCodeableConcept=cc(SNOMED, "266919005")
    ),
    observation(  # a code without a system
        "score", "p1", {"text": "pain score"}, "2020-03-01", valueInteger=4
    ),
    observation("late", "p1", "2339-0", valueQuantity=quantity(100, "mg/dL")),  # no time
    observation("year", "p1", "2339-0", "2020", valueQuantity=quantity(100, "mg/dL")),
    observation(
        "err",
        "p1",
        "2339-0",
        "2020-03-01",
        status="entered-in-error",
        valueQuantity=quantity(1, "mg/dL"),
    ),
    observation("p9", "p9", "2339-0", "2020-03-01", valueQuantity=quantity(1, "mg/dL")),
    observation(
        "absent",
        "p2",
        "2339-0",
        "2020-03-01",
        dataAbsentReason=cc("http://terminology.hl7.org/CodeSystem/data-absent-reason", "error"),
    ),
    {  # a Condition known only by its recorded date, an allergy with neither date
        "resourceType": "Condition",
        "id": "c7",
        "subject": patient_ref("p3"),
        "code": cc(SNOMED, "38341003", "Hypertension"),
        "recordedDate": "2021-02-03T04:05:06Z",
    },
    {
        "resourceType": "AllergyIntolerance",
        "id": "a3",
        "patient": patient_ref("p2"),
        "code": cc(SNOMED, "91935009", "Allergy to peanuts"),
    },
]
KEPT = [  # (patient, code, value, unit, timestamp), by patient and time
    ("p1", "loinc|8480-6", 120.0, "mm[Hg]", "2020-01-01T09:30:00Z"),
    ("p1", "loinc|8462-4", 80.0, "mm[Hg]", "2020-01-01T09:30:00Z"),
    ("p1", "loinc|718-7", 13.5, "g/dL", "2020-02-01T08:00:00Z"),
    ("p2", "loinc|2339-0", 95.0, "mg/dL", "2020-04-01T07:00:00Z"),
    ("p3", "loinc|72514-3", 3.0, "", "2020-05-01"),
    ("p3", "loinc|29463-7", 70.5, "kg", "2020-05-01T09:00:00Z"),
]


def observation_list(out) -> list:
    frame = pd.read_csv(out / "observations.csv", dtype=str, keep_default_na=False)
    return [(r.patient_id, r.code, float(r.value), r.unit, r.timestamp) for r in frame.itertuples()]


@pytest.mark.parametrize("layout", ["bundle", "ndjson"])
def test_observations_numbers_components_and_drops(tmp_path, layout):
    resources = RESOURCES + OBSERVATIONS
    src = (
        write_bundle(tmp_path / "bundle.json", resources)
        if layout == "bundle"
        else write_ndjson_folder(tmp_path / "ndjson", resources)
    )
    report = import_fhir(src, tmp_path / "out")

    assert observation_list(tmp_path / "out") == KEPT
    tables = read_tables(tmp_path / "out")  # the canonical reader validates the folder
    assert tables.observations["value"].tolist() == [value for _, _, value, _, _ in KEPT]
    assert tables.observations["timestamp"].iloc[0] == pd.Timestamp("2020-01-01 09:30", tz="UTC")
    source = "observations (Observation)"
    assert {k: v for k, v in report.dropped.items() if "Observation" in k} == {
        "Observation: status entered-in-error": 1,
        f"{source}: no patient": 1,  # o1 of RESOURCES
        f"{source}: censored value such as <5 or >300 (a bound, not a measurement)": 1,
        f"{source}: not numeric (valueCodeableConcept)": 1,
        f"{source}: code without a code system (text only or no system)": 1,
        f"{source}: no time": 1,
        f"{source}: time coarser than a day": 1,
        f"{source}: patient not among the imported patients": 1,
        f"{source}: no value": 1,
    }
    assert report.rows_read["Observation"] == 14
    assert report.derived["observations kept (Observation)"] == 6
    assert outcome_map(tmp_path / "out") == EXPECTED  # observations change no outcome


def test_onsets_of_conditions_and_allergies(tmp_path):
    import_fhir(write_bundle(tmp_path / "bundle.json", RESOURCES + OBSERVATIONS), tmp_path / "out")
    written = pd.read_csv(
        tmp_path / "out" / "patient_conditions.csv", dtype=str, keep_default_na=False
    )
    onset = written.set_index(["patient_id", "condition_id"])["timestamp"]
    assert onset[("p1", "snomed|43878008")] == "2020-01-01T09:00:00Z"  # onsetDateTime, a time
    assert onset[("p1", "icd10|I10")] == "2015-01-01"  # a date stays a date
    assert onset[("p3", "snomed|444814009")] == "2021-06-01"  # onsetPeriod.start
    assert onset[("p3", "snomed|38341003")] == "2021-02-03T04:05:06Z"  # recordedDate
    assert onset[("p1", "snomed|91935009")] == "2020-01-02"  # an allergy's onsetDateTime
    assert onset[("p2", "snomed|91935009")] == ""  # no onset, no recordedDate: unknown
    parsed = read_tables(tmp_path / "out").patient_conditions
    parsed = parsed.set_index(["patient_id", "condition_id"])["timestamp"]
    assert parsed[("p1", "snomed|43878008")] == pd.Timestamp("2020-01-01 09:00", tz="UTC")
    assert pd.isna(parsed[("p2", "snomed|91935009")])


def test_observations_in_strict_mode_and_switched_off(tmp_path):
    src = write_bundle(tmp_path / "bundle.json", RESOURCES[:3] + OBSERVATIONS)
    with pytest.raises(DataValidationError, match="Observation/late: no subject or effective"):
        import_fhir(src, tmp_path / "strict", strict=True)
    fine = [r for r in OBSERVATIONS if r["id"] not in ("late", "year", "p9")]
    strict = write_bundle(tmp_path / "fine.json", RESOURCES[:3] + fine)
    report = import_fhir(strict, tmp_path / "strict", strict=True)  # text codes are only dropped
    assert report.rows_kept["observations"] == 6

    report = import_fhir(src, tmp_path / "off", include_observations=False)
    assert read_tables(tmp_path / "off").observations is None
    assert report.dropped["Observation: include_observations is off"] == 13


def test_observation_without_patients_is_kept(tmp_path):
    """Without Patient resources no patients table is written, and no patient is unknown."""
    src = write_bundle(tmp_path / "bundle.json", [r for r in OBSERVATIONS if r["id"] == "p9"])
    import_fhir(src, tmp_path / "out")
    assert observation_list(tmp_path / "out") == [
        ("p9", "loinc|2339-0", 1.0, "mg/dL", "2020-03-01")
    ]


# --- Synthea Nebraska as FHIR: the same outcomes as its CSV import ----------------------------


def synthea_to_ndjson(src, path) -> int:
    """Write the Synthea CSV export at ``src`` as FHIR R4 NDJSON (a test-side converter)."""

    def read(name):
        for suffix in (".csv", ".csv.gz"):
            if (src / f"{name}{suffix}").exists():
                frame = pd.read_csv(src / f"{name}{suffix}", dtype=str, keep_default_na=False)
                frame.columns = [c.upper() for c in frame.columns]
                return frame

    lines = []
    for r in read("patients").itertuples():
        patient = {
            "resourceType": "Patient",
            "id": r.ID,
            "birthDate": r.BIRTHDATE,
            "gender": {"M": "male", "F": "female"}[r.GENDER],
        }
        if r.DEATHDATE:
            patient["deceasedDateTime"] = r.DEATHDATE
        lines.append(patient)
    for i, r in enumerate(read("conditions").itertuples()):
        condition = {
            "resourceType": "Condition",
            "id": f"c{i}",
            "onsetDateTime": r.START,
            "subject": patient_ref(r.PATIENT),
            "code": cc(SNOMED, r.CODE, r.DESCRIPTION),
        }
        if r.STOP:
            condition["abatementDateTime"] = r.STOP
        lines.append(condition)
    for i, r in enumerate(read("medications").itertuples()):
        request = {
            "resourceType": "MedicationRequest",
            "id": f"m{i}",
            "intent": "order",
            "status": "stopped" if r.STOP else "active",
            "authoredOn": r.START,
            "subject": patient_ref(r.PATIENT),
            "medicationCodeableConcept": cc(RXNORM, r.CODE, r.DESCRIPTION),
        }
        if r.STOP:
            request["dosageInstruction"] = [
                {"timing": {"repeat": {"boundsPeriod": {"start": r.START, "end": r.STOP}}}}
            ]
        if r.REASONCODE:
            request["reasonCode"] = [
                cc(SNOMED, r.REASONCODE.removesuffix(".0"), r.REASONDESCRIPTION)
            ]
        lines.append(request)
    for i, r in enumerate(read("allergies").itertuples()):
        system = RXNORM if getattr(r, "SYSTEM", "") == "RxNorm" else SNOMED
        lines.append(
            {
                "resourceType": "AllergyIntolerance",
                "id": f"a{i}",
                "patient": patient_ref(r.PATIENT),
                "onsetDateTime": r.START,
                "code": cc(system, r.CODE, r.DESCRIPTION),
            }
        )
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return len(lines)


@pytest.mark.shared_data
def test_nebraska_as_fhir_matches_the_csv_import(tmp_path):
    src = shared_dataset("synthea_nebraska_111")
    count = synthea_to_ndjson(src, tmp_path / "nebraska.ndjson")
    fhir_report = import_fhir(tmp_path / "nebraska.ndjson", tmp_path / "fhir")
    csv_report = import_synthea(src, tmp_path / "csv")

    assert sum(fhir_report.rows_read.values()) == count
    assert fhir_report.warning_count == 0
    columns = ["patient_id", "treatment_id", "condition_id", "outcome", "adverse", "timestamp"]
    fhir_rows, csv_rows = (
        read_tables(tmp_path / name).outcomes[columns].sort_values(columns).reset_index(drop=True)
        for name in ("fhir", "csv")
    )
    pd.testing.assert_frame_equal(fhir_rows, csv_rows)
    assert fhir_report.outcomes["distribution"] == csv_report.outcomes["distribution"]
    for table in ("patient_conditions", "conditions"):
        assert pd.read_csv(tmp_path / "fhir" / f"{table}.csv").equals(
            pd.read_csv(tmp_path / "csv" / f"{table}.csv")
        )
