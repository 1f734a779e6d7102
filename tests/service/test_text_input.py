"""Text at the boundary: a lone surrogate or a control character is a 400 naming the field,
never a 500 (REST API, feedback, CDS Hooks); property tests send arbitrary Unicode."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import schemas

from .conftest import CDS_BASE

CDS_PATH = "/cds-services/therapy-suggestions"
#: Every code point, lone surrogates and control characters included.
ANY_TEXT = st.text(st.characters(codec=None, categories=None), max_size=12)
PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def post_raw(client, path: str, document, headers: dict):
    """POST ``document`` as JSON with ``\\uXXXX`` escapes, as a client can send a surrogate."""
    body = json.dumps(document, ensure_ascii=True)
    return client.post(path, data=body, content_type="application/json", headers=headers)


def assert_refused(response, field: str, code: str = "invalid_body") -> None:
    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == code and field in json.dumps(error), error


@pytest.mark.parametrize(
    "body,field,code",
    [
        ({"conditions": ["C\ud800"]}, "$.conditions[0]", "invalid_text"),
        (
            {"history": [{"treatment_id": "\udfff", "outcome": 1}]},
            "$.history[0].treatment_id",
            "invalid_text",
        ),
        ({"sex": "F\ud800"}, "$.sex", "invalid_text"),
        ({"conditions": ["C"], "condition": "C\x00"}, "$.condition", "invalid_body"),
        ({"sex": "F\nM"}, "$.sex", "invalid_body"),
    ],
)
def test_new_patient_bodies_with_bad_text_are_400(client, clinician, body, field, code):
    assert_refused(post_raw(client, "/v1/recommendations", body, clinician), field, code)


def test_a_surrogate_in_a_field_name_is_400(client, clinician):
    response = post_raw(client, "/v1/recommendations", {"conditions": [], "\ud800": 1}, clinician)
    assert_refused(response, "$ (a key)", "invalid_text")


def test_a_surrogate_pair_is_proper_text(client, clinician):
    body = {"conditions": ["C"], "sex": "\U0001f600"}  # sent as the escapes \ud83d\ude00
    assert post_raw(client, "/v1/recommendations", body, clinician).status_code == 200


@pytest.mark.parametrize(
    "change,field,code",
    [
        ({"patient_id": "P\ud800"}, "$.patient_id", "invalid_text"),
        ({"treatment_id": "T0\x1b"}, "$.treatment_id", "invalid_body"),
        ({"reason": "bad\x00reason"}, "$.reason", "invalid_body"),
    ],
)
def test_feedback_with_bad_text_is_400(client, clinician, change, field, code):
    body = {
        "feedback_id": "fb-1",
        "patient_id": "P0001",
        "treatment_id": "T0",
        "decision": "overridden",
        "model_version": "v",
        **change,
    }
    assert_refused(post_raw(client, "/v1/feedback", body, clinician), field, code)


def test_a_reason_may_span_lines(client, clinician):
    body = {
        "feedback_id": "fb-2",
        "patient_id": "P0001",
        "treatment_id": "T0",
        "decision": "overridden",
        "model_version": "v",
        "reason": "first line\nsecond line\tindented",
    }
    assert post_raw(client, "/v1/feedback", body, clinician).status_code == 201


def test_control_characters_in_paths_and_queries_are_400(client, clinician):
    response = client.get("/v1/patients/P%00/recommendations", headers=clinician)
    assert_refused(response, "patient_id", "invalid_parameter")
    response = client.get("/v1/patients/P0001/recommendations?condition=C%0A", headers=clinician)
    assert_refused(response, "condition", "invalid_parameter")


def test_a_cds_patient_id_with_a_surrogate_is_400(cds_client, cds_site):
    token = cds_site.ehr.token(CDS_BASE + CDS_PATH)
    body = {"hook": "patient-view", "hookInstance": "h-1", "context": {"patientId": "\ud800"}}
    response = post_raw(cds_client, CDS_PATH, body, {"Authorization": f"Bearer {token}"})
    assert_refused(response, "$.context.patientId", "invalid_text")


def test_a_surrogate_deep_in_a_cds_prefetch_is_400(cds_client, cds_site):
    token = cds_site.ehr.token(CDS_BASE + CDS_PATH)
    body = {
        "hook": "patient-view",
        "hookInstance": "h-1",
        "context": {"patientId": "P1"},
        "prefetch": {"patient": {"resourceType": "Patient", "id": "P1", "gender": "\udc00"}},
    }
    response = post_raw(cds_client, CDS_PATH, body, {"Authorization": f"Bearer {token}"})
    assert_refused(response, "$.prefetch.patient.gender", "invalid_text")


# --- properties ------------------------------------------------------------------------------


def assert_answered(response) -> None:
    """A client's text gets an answer or a JSON client error, never a 500."""
    assert response.status_code < 500, response.get_json()
    if response.status_code >= 400:
        assert set(response.get_json()["error"]) >= {"code", "message"}


@PROPERTY
@given(text=ANY_TEXT)
def test_the_checker_accepts_exactly_proper_text(text):
    problems = schemas.check(text, {"type": "string"}, "$.x")
    proper = all(not ("\ud800" <= c <= "\udfff" or c < " " or "\x7f" <= c <= "\x9f") for c in text)
    assert problems == ([] if proper else problems) and bool(problems) != proper
    assert all(problem.startswith("$.x: ") for problem in problems)


def improper(text: str, free_text: bool = False) -> bool:
    """What the boundary refuses: a lone surrogate or a control character (in free text, one
    other than tab and line breaks)."""
    allowed = "\t\n\r" if free_text else ""
    return any(
        "\ud800" <= c <= "\udfff" or (c < " " or "\x7f" <= c <= "\x9f") and c not in allowed
        for c in text
    )


NEW_PATIENT = {
    "history": [{"treatment_id": "S0", "outcome": 1, "timestamp": "2024-01-01"}],
    "conditions": ["C", "ALG"],
    "allergies": ["ALG"],
    "condition": "C",
    "sex": "F",
}
FEEDBACK = {
    "feedback_id": "fb-1",
    "patient_id": "P0001",
    "treatment_id": "T0",
    "decision": "accepted",
    "model_version": "v",
    "reason": "why",
}
CDS_CALL = {
    "hook": "patient-view",
    "hookInstance": "h-1",
    "context": {"patientId": "P0200", "userId": "Practitioner/1", "selections": ["x"]},
}


def poison(document: dict, path: tuple, text: str) -> dict:
    """A deep copy of ``document`` with the string at ``path`` replaced by ``text``."""
    copy = json.loads(json.dumps(document))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = text
    return copy


def json_path(path: tuple) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def check_poisoned(response, path: tuple, text: str, free_text: bool = False) -> None:
    """Never a 500; improper text is a 400 naming its field; proper text is not refused as text."""
    assert_answered(response)
    error = response.get_json().get("error", {}) if response.status_code >= 400 else {}
    if improper(text, free_text):
        assert response.status_code == 400 and json_path(path) in json.dumps(error), error
    elif error:
        assert error["code"] != "invalid_text" and "control character" not in error["message"]


NEW_PATIENT_PATHS = [
    ("history", 0, "treatment_id"),
    ("conditions", 0),
    ("conditions", 1),
    ("allergies", 0),
    ("condition",),
    ("sex",),
]


@PROPERTY
@given(path=st.sampled_from(NEW_PATIENT_PATHS), text=ANY_TEXT)
def test_any_unicode_in_a_new_patient_body_is_answered_not_crashed(client, clinician, path, text):
    response = post_raw(client, "/v1/recommendations", poison(NEW_PATIENT, path, text), clinician)
    check_poisoned(response, path, text)


@PROPERTY
@given(
    path=st.sampled_from([("feedback_id",), ("patient_id",), ("treatment_id",), ("reason",)]),
    text=ANY_TEXT,
    n=st.integers(0, 10**9),
)
def test_any_unicode_in_feedback_is_answered_not_crashed(client, clinician, path, text, n):
    body = poison({**FEEDBACK, "feedback_id": f"fb-{n}"}, path, text)
    response = post_raw(client, "/v1/feedback", body, clinician)
    check_poisoned(response, path, text, free_text=path == ("reason",))


@PROPERTY
@given(
    path=st.sampled_from(
        [("context", "patientId"), ("context", "userId"), ("context", "selections", 0)]
    ),
    text=ANY_TEXT,
)
def test_any_unicode_in_a_cds_call_is_answered_not_crashed(cds_client, cds_site, path, text):
    token = cds_site.ehr.token(CDS_BASE + CDS_PATH)
    body = poison(CDS_CALL, path, text)
    response = post_raw(cds_client, CDS_PATH, body, {"Authorization": f"Bearer {token}"})
    check_poisoned(response, path, text)


@PROPERTY
@given(patient=ANY_TEXT.filter(bool), condition=ANY_TEXT)
def test_any_unicode_in_a_path_or_query_is_answered_not_crashed(
    client, clinician, patient, condition
):
    from urllib.parse import quote

    path = quote(patient.encode("utf-8", "surrogatepass"), safe="")
    query = quote(condition.encode("utf-8", "surrogatepass"), safe="")
    response = client.get(
        f"/v1/patients/{path}/recommendations?condition={query}", headers=clinician
    )
    assert_answered(response)
