"""Test support for CDS Hooks: a FHIR-coded cohort with known answers, EHR keys and JWTs,
and builders of FHIR R4 prefetch resources.

The cohort is the checkerboard of ``tests/cohorts.py`` in RxNorm / SNOMED codes: two hidden
groups; for hypertension (D) group A responded to lisinopril (S0) and not to amlodipine (S1),
group B the opposite; for type 2 diabetes (C) group A responds to metformin (T0) and not to
sitagliptin (T1), group B the opposite. Glipizide (T2) is mediocre for everyone; insulin
glargine (TX) is contraindicated by a penicillin allergy (ALG, carried by P0002). Glipizide
interacts severely with lisinopril; sitagliptin moderately with amlodipine. Probe patients
P0200-P0209 have only their hypertension outcomes and both diagnoses; the right diabetes
therapy for them is known (``truth``).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import jwt
import pandas as pd
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from recommender.data.ingredients import ingredient_ids
from recommender.data.tables import validate_tables

RX = "http://www.nlm.nih.gov/research/umls/rxnorm"
SCT = "http://snomed.info/sct"
S0, S1 = "rxnorm|29046", "rxnorm|17767"
T0, T1, T2, TX = "rxnorm|860975", "rxnorm|665033", "rxnorm|310488", "rxnorm|261551"
D, C, ALG = "snomed|38341003", "snomed|44054006", "rxnorm|7980"
NAMES = {
    S0: "Lisinopril 10 MG Oral Tablet",
    S1: "Amlodipine 5 MG Oral Tablet",
    T0: "Metformin 500 MG Oral Tablet",
    T1: "Sitagliptin 100 MG Oral Tablet",
    T2: "Glipizide 5 MG Oral Tablet",
    TX: "Insulin Glargine 100 UNT/ML Injectable Solution",
}
CONDITION_NAMES = {D: "Hypertension", C: "Diabetes mellitus type 2", ALG: "Penicillin G allergy"}


def coded_cohort(n_patients: int = 200, n_probes: int = 10):
    rows, conditions, truth = [], [], {}
    for i in range(n_patients + n_probes):
        group, pid = i % 2, f"P{i:04d}"
        good_d, bad_d = (S0, S1) if group == 0 else (S1, S0)
        good_c, bad_c = (T0, T1) if group == 0 else (T1, T0)
        rows += [
            (pid, bad_d, "no_response", "2020-01-01", D),
            (pid, good_d, "responded", "2020-03-01", D),
        ]
        conditions += [(pid, D), (pid, C)]
        if i >= n_patients:
            truth[pid] = good_c
            continue
        if i % 5 == 0:
            rows.append((pid, T2, "partial", "2021-01-01", C))
        rows += [
            (pid, bad_c, "no_response", "2021-02-01", C),
            (pid, good_c, "responded", "2021-04-01", C),
        ]
    outcomes = pd.DataFrame(
        rows, columns=["patient_id", "treatment_id", "outcome", "timestamp", "condition_id"]
    )
    outcomes.loc[len(outcomes)] = ["P0001", TX, "responded", "2019-01-01", C]
    conditions.append(("P0002", ALG))
    frames = {
        "outcomes": outcomes,
        "patient_conditions": pd.DataFrame(conditions, columns=["patient_id", "condition_id"]),
        "contraindications": pd.DataFrame({"treatment_id": [TX], "condition_id": [ALG]}),
        "interactions": pd.DataFrame(
            {"treatment_a": [T2, T1], "treatment_b": [S0, S1], "severity": ["severe", "moderate"]}
        ),
        "treatments": pd.DataFrame(
            {
                "treatment_id": list(NAMES),
                "name": list(NAMES.values()),
                "ingredients": [";".join(ingredient_ids(name)) for name in NAMES.values()],
            }
        ),
        "conditions": pd.DataFrame(
            {"condition_id": list(CONDITION_NAMES), "name": list(CONDITION_NAMES.values())}
        ),
    }
    return validate_tables(frames), truth


# --- the EHR's keys and tokens -------------------------------------------------------------------


class Ehr:
    """An EHR with its own key pair, signing JWTs as CDS Hooks describes."""

    def __init__(self, issuer: str, kind: str = "ec", kid: str = "ehr-key-1"):
        self.issuer, self.kid = issuer, kid
        if kind == "ec":
            self.key, self.algorithm = ec.generate_private_key(ec.SECP384R1()), "ES384"
        else:
            self.key, self.algorithm = rsa.generate_private_key(65537, 2048), "RS384"

    def jwks(self) -> dict:
        public = json.loads(
            jwt.algorithms.get_default_algorithms()[self.algorithm].to_jwk(self.key.public_key())
        )
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": self.algorithm}]}

    def token(self, audience: str, **overrides) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": audience,
            "exp": now + 300,
            "iat": now,
            "jti": str(uuid.uuid4()),
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(
            claims, self.key, algorithm=self.algorithm, headers={"kid": self.kid, "typ": "JWT"}
        )


def write_jwks(path: Path, *ehrs: Ehr, mapping: bool = False) -> Path:
    if mapping:
        path.write_text(json.dumps({ehr.issuer: ehr.jwks() for ehr in ehrs}))
    else:
        path.write_text(json.dumps({"keys": [k for ehr in ehrs for k in ehr.jwks()["keys"]]}))
    return path


# --- FHIR R4 resources ----------------------------------------------------------------------------


def concept(identifier: str) -> dict:
    system, code = identifier.split("|")
    url = {"rxnorm": RX, "snomed": SCT}[system]
    display = NAMES.get(identifier) or CONDITION_NAMES.get(identifier)
    return {"coding": [{"system": url, "code": code, "display": display}], "text": display}


def patient(pid: str, gender: str = "female", birth: str = "1961-04-02") -> dict:
    return {"resourceType": "Patient", "id": pid, "gender": gender, "birthDate": birth}


def condition(
    pid: str, rid: str, code: str, onset: str = "2019-06-01", status: str = "active"
) -> dict:
    return {
        "resourceType": "Condition",
        "id": rid,
        "subject": {"reference": f"Patient/{pid}"},
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": status,
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": "confirmed",
                }
            ]
        },
        "code": concept(code),
        "onsetDateTime": onset,
    }


def medication_request(
    pid: str,
    rid: str,
    drug: str,
    start: str,
    status: str = "active",
    reason: str | None = None,
    stop: str | None = None,
    intent: str = "order",
) -> dict:
    resource = {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": status,
        "intent": intent,
        "subject": {"reference": f"Patient/{pid}"},
        "medicationCodeableConcept": concept(drug),
        "authoredOn": start,
    }
    if reason:
        resource["reasonCode"] = [concept(reason)]
    if stop:
        resource["dosageInstruction"] = [
            {"timing": {"repeat": {"boundsPeriod": {"start": start, "end": stop}}}}
        ]
    return resource


def allergy(pid: str, rid: str, substance: str, onset: str = "2018-01-01") -> dict:
    return {
        "resourceType": "AllergyIntolerance",
        "id": rid,
        "patient": {"reference": f"Patient/{pid}"},
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                    "code": "active",
                }
            ]
        },
        "code": concept(substance),
        "onsetDateTime": onset,
    }


def bundle(*resources: dict) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"resource": r} for r in resources],
    }


def group_a_prefetch(pid: str, allergies: tuple = (), extra_meds: tuple = ()) -> dict:
    """A group-A patient the model has never seen: lisinopril ongoing (partial response after
    amlodipine was switched away), hypertension and diabetes active."""
    return {
        "patient": patient(pid),
        "conditions": bundle(
            condition(pid, "c-htn", D, "2019-06-01"), condition(pid, "c-dm2", C, "2022-01-10")
        ),
        "medications": bundle(
            medication_request(
                pid, "m-aml", S1, "2019-07-01", status="completed", reason=D, stop="2019-09-01"
            ),
            medication_request(pid, "m-lis", S0, "2019-09-05", reason=D),
            *extra_meds,
        ),
        "allergies": bundle(*allergies) if allergies else None,
    }
