"""/openapi.json matches the service: every route documented, and a schemathesis fuzz run
(bounded) finds no 500 and no response the document does not allow."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from service.openapi import build

#: Examples per operation and mode: 11 operations x 2 modes x 40 runs in about 25 s.
EXAMPLES = 40
#: A schema-valid reload of a folder that holds no valid artifact is refused with the documented
#: 422 (the old model keeps serving); every other default expectation stands.
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "401", "403", "404", "409", "422"]
            }
        }
    }
)


def _flask_routes(app) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("console."):
            continue  # the console's HTML pages are not API operations (service/README.md)
        path = rule.rule.replace("<", "{").replace(">", "}")
        routes |= {(path, method.lower()) for method in rule.methods - {"HEAD", "OPTIONS"}}
    return routes


def test_every_route_is_documented_and_every_documented_route_exists(client, clinician, app):
    document = client.get("/openapi.json", headers=clinician).get_json()
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == _flask_routes(app)


def test_with_cds_hooks_on_its_routes_are_documented_too(make_cds_app):
    app = make_cds_app()
    document = app.test_client().get("/cds-services")  # open
    assert document.status_code == 200
    from service.openapi import build as build_document

    described = build_document(app.config)
    documented = {(path, method) for path, item in described["paths"].items() for method in item}
    assert documented == _flask_routes(app)
    assert described["paths"]["/cds-services/{service_id}"]["post"]["security"] == [{"cdsJwt": []}]


def test_the_document_follows_the_configuration(make_app):
    document = build(make_app(MAX_K=7, MAX_HISTORY=9).config)
    parameters = document["paths"]["/v1/patients/{patient_id}/recommendations"]["get"]["parameters"]
    assert {p["name"]: p for p in parameters}["k"]["schema"]["maximum"] == 7
    assert document["components"]["schemas"]["NewPatient"]["properties"]["history"]["maxItems"] == 9


def test_probes_are_open_and_the_rest_needs_a_bearer_token(client, clinician):
    document = client.get("/openapi.json", headers=clinician).get_json()
    assert document["security"] == [{"bearerAuth": []}]
    open_paths = {
        path
        for path, item in document["paths"].items()
        if all(op.get("security") == [] for op in item.values())
    }
    assert open_paths == {"/health", "/ready"}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzz_against_the_document(make_app, site, mode):
    """Every operation, valid and invalid inputs: no 500, nothing outside the document."""
    app = make_app(MAX_HISTORY=20, MAX_CONDITIONS=20, ACCESS_LOG=False, AUDIT_FSYNC=False)
    schema = schemathesis.openapi.from_wsgi(
        "/openapi.json", app, config=CONFIG, headers={"Authorization": f"Bearer {site.clinician}"}
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 10  # all but /openapi.json itself, which serves as the input
    for operation in operations:
        inputs = len(operation.path_parameters) + len(operation.query) + len(operation.body)
        if mode is GenerationMode.NEGATIVE and not inputs:
            continue  # nothing to make invalid
        token = site.admin if operation.path.startswith("/v1/admin") else site.clinician
        _fuzz(operation, mode, token)


def _fuzz(operation, mode: GenerationMode, token: str) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case):
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"})

    check()
