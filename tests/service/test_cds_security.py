"""The EHR's signed JWT on CDS Hooks calls: keys generated here, every refusal named."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
import uuid

import jwt
import pytest

from service import ConfigError, create_app

from .cds_support import Ehr, write_jwks
from .conftest import CDS_BASE, EHR_ISSUER, audit_lines

PATH = "/cds-services/therapy-suggestions"
BODY = {
    "hook": "patient-view",
    "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
    "context": {"userId": "Practitioner/example", "patientId": "P0200"},
}


def post(client, token: str | None, path: str = PATH):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.post(path, json=BODY, headers=headers)


def refused(response, fragment: str) -> None:
    assert response.status_code == 401, response.get_json()
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert fragment in response.get_json()["error"]["message"]


def test_a_valid_es384_token_is_accepted(cds_client, cds_site):
    response = post(cds_client, cds_site.ehr.token(CDS_BASE + PATH, tenant="hospital-a"))
    assert response.status_code == 200
    line = audit_lines(cds_site.site)[-1]
    assert line["principal"] == EHR_ISSUER and line["tenant"] == "hospital-a"


def test_an_rs384_token_is_accepted(make_cds_app, cds_site):
    rsa_ehr = Ehr(EHR_ISSUER, kind="rsa", kid="rsa-1")
    jwks = write_jwks(cds_site.site.root / "both.json", cds_site.ehr, rsa_ehr)
    client = make_cds_app(CDS_JWKS=str(jwks)).test_client()
    assert post(client, rsa_ehr.token(CDS_BASE + PATH)).status_code == 200
    assert post(client, cds_site.ehr.token(CDS_BASE + PATH)).status_code == 200


def test_an_audience_given_as_a_list_is_accepted(cds_client, cds_site):
    assert post(cds_client, cds_site.ehr.token([CDS_BASE + PATH])).status_code == 200


def test_missing_token_is_401(cds_client):
    response = post(cds_client, None)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "missing_token"


def test_expired_token_is_refused(cds_client, cds_site):
    now = int(time.time())
    refused(
        post(cds_client, cds_site.ehr.token(CDS_BASE + PATH, exp=now - 120, iat=now - 400)),
        "expired",
    )


def test_wrong_audience_is_refused(cds_client, cds_site):
    refused(
        post(cds_client, cds_site.ehr.token(CDS_BASE + "/cds-services/other-service")),
        "'aud' is not this endpoint's URL",
    )
    refused(post(cds_client, cds_site.ehr.token("https://elsewhere.example.org" + PATH)), "'aud'")


def test_unknown_issuer_is_refused(cds_client, cds_site):
    stranger = Ehr("https://stranger.example.org")
    refused(post(cds_client, stranger.token(CDS_BASE + PATH)), "is not allowed")
    # an allowed issuer name with a key that is not in its JWK Set
    impostor = Ehr(EHR_ISSUER)
    refused(post(cds_client, impostor.token(CDS_BASE + PATH)), "signature does not verify")


def test_a_replayed_jti_is_refused(cds_client, cds_site):
    token = cds_site.ehr.token(CDS_BASE + PATH)
    assert post(cds_client, token).status_code == 200
    refused(post(cds_client, token), "already used")


def test_the_replay_cache_is_shared_between_workers(make_cds_app, cds_site):
    """Two apps over the same store stand for two gunicorn workers."""
    token = cds_site.ehr.token(CDS_BASE + PATH)
    first, second = make_cds_app().test_client(), make_cds_app().test_client()
    assert post(first, token).status_code == 200
    refused(post(second, token), "already used")


def _unsigned(claims: dict) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT', 'kid': 'ehr-key-1'})}.{part(claims)}."


def _claims(**overrides) -> dict:
    now = int(time.time())
    return {
        "iss": EHR_ISSUER,
        "aud": CDS_BASE + PATH,
        "exp": now + 300,
        "iat": now,
        "jti": str(uuid.uuid4()),
        **overrides,
    }


def test_alg_none_is_refused(cds_client):
    refused(post(cds_client, _unsigned(_claims())), "algorithm 'none' is refused")


def test_symmetric_algorithms_are_refused(cds_client):
    token = jwt.encode(
        _claims(),
        "a shared secret of enough length 0123456789",
        algorithm="HS256",
        headers={"kid": "ehr-key-1"},
    )
    refused(post(cds_client, token), "algorithm 'HS256' is refused")


@pytest.mark.parametrize("claim", ["jti", "exp", "iat", "aud"])
def test_required_claims(cds_client, cds_site, claim):
    refused(post(cds_client, cds_site.ehr.token(CDS_BASE + PATH, **{claim: None})), claim)


def test_a_token_living_too_long_is_refused(cds_client, cds_site):
    refused(
        post(cds_client, cds_site.ehr.token(CDS_BASE + PATH, exp=int(time.time()) + 86_400)),
        "RECOMMENDER_CDS_JWT_MAX_LIFETIME",
    )


def test_an_algorithm_that_does_not_fit_the_key_is_refused(cds_client, cds_site):
    """An RS384 header over the EHR's EC key id: the key type decides, not the header."""
    rsa_ehr = Ehr(EHR_ISSUER, kind="rsa", kid=cds_site.ehr.kid)
    refused(post(cds_client, rsa_ehr.token(CDS_BASE + PATH)), "does not fit algorithm RS384")


def test_garbage_is_refused(cds_client):
    refused(post(cds_client, "not-a-jwt"), "not a JWT")
    assert post(cds_client, "x" * 20_000).status_code == 401


def test_an_api_token_does_not_open_cds_hooks(cds_client, cds_site):
    refused(post(cds_client, cds_site.site.clinician), "not a JWT")


def test_feedback_accepts_the_feedback_url_or_the_service_url_as_audience(cds_client, cds_site):
    body = {
        "feedback": [
            {
                "card": str(uuid.uuid4()),
                "outcome": "overridden",
                "outcomeTimestamp": "2024-01-01T00:00:00Z",
            }
        ]
    }
    for audience in (CDS_BASE + PATH + "/feedback", CDS_BASE + PATH):
        response = cds_client.post(
            PATH + "/feedback",
            json=body,
            headers={"Authorization": f"Bearer {cds_site.ehr.token(audience)}"},
        )
        assert response.status_code == 404  # authenticated; the card is unknown
    response = cds_client.post(
        PATH + "/feedback",
        json=body,
        headers={"Authorization": f"Bearer {cds_site.ehr.token(CDS_BASE + '/cds-services')}"},
    )
    assert response.status_code == 401


# --- key configuration ---------------------------------------------------------------------------


def test_several_issuers_with_a_mapping_file(make_cds_app, cds_site):
    second = Ehr("https://second-ehr.example.org", kind="rsa", kid="k2")
    mapping = write_jwks(cds_site.site.root / "issuers.json", cds_site.ehr, second, mapping=True)
    client = make_cds_app(
        CDS_ISSUERS=(EHR_ISSUER, second.issuer), CDS_JWKS=str(mapping)
    ).test_client()
    assert post(client, second.token(CDS_BASE + PATH)).status_code == 200
    assert post(client, cds_site.ehr.token(CDS_BASE + PATH)).status_code == 200
    # the second EHR's key does not vouch for the first issuer
    forged = Ehr(EHR_ISSUER, kind="rsa", kid="k2")
    forged.key = second.key
    refused(post(client, forged.token(CDS_BASE + PATH)), "")


@pytest.mark.parametrize(
    "content, message",
    [
        ({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "x"}]}, "asymmetric keys"),
        ("private", "private key"),
        ({"https://someone-else.example.org": {"keys": []}}, "not in RECOMMENDER_CDS_ISSUERS"),
        ({"keys": []}, "not a JWK Set"),
    ],
)
def test_bad_key_files_stop_the_start(cds_site, make_app, content, message):
    path = cds_site.site.root / "bad.json"
    if content == "private":
        private = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(cds_site.ehr.key))
        content = {"keys": [private]}
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=message):
        create_app(cds_site.config(CDS_JWKS=str(path)))


def test_cds_needs_keys_and_the_public_url(cds_site, make_app):
    with pytest.raises(ConfigError, match="RECOMMENDER_CDS_BASE_URL"):
        create_app(cds_site.config(CDS_BASE_URL=None))


def test_cds_is_off_without_issuers(client):
    assert client.get("/cds-services").status_code == 404


def test_a_jwks_url_is_fetched_and_cached(make_cds_app, cds_site):
    served = []
    keys = json.dumps(cds_site.ehr.jwks()).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the standard library's name
            served.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(keys)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/jwks.json"
        client = make_cds_app(CDS_JWKS=url).test_client()
        assert post(client, cds_site.ehr.token(CDS_BASE + PATH)).status_code == 200
        assert post(client, cds_site.ehr.token(CDS_BASE + PATH)).status_code == 200
        assert served == ["/jwks.json"]  # fetched once, then cached
    finally:
        server.shutdown()
        server.server_close()


def test_a_plain_http_jwks_url_elsewhere_is_refused(cds_site, make_app):
    with pytest.raises(ConfigError, match="must use https"):
        create_app(cds_site.config(CDS_JWKS="http://keys.example.org/jwks.json"))


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
@pytest.mark.parametrize("value", [str(int(time.time()) + 60), True, float("inf"), [1], {"t": 1}])
def test_time_claims_that_are_not_numbers_are_refused(cds_client, cds_site, claim, value):
    token = cds_site.ehr.token(CDS_BASE + PATH, **{claim: value})
    refused(post(cds_client, token), f"the JWT '{claim}' claim must be a NumericDate")


def test_a_numeric_nbf_in_the_past_is_accepted(cds_client, cds_site):
    token = cds_site.ehr.token(CDS_BASE + PATH, nbf=time.time() - 5)
    assert post(cds_client, token).status_code == 200


# --- issuers, jku allow-lists and audiences ------------------------------------------------------


def _signed(ehr, claims: dict, **header) -> str:
    return jwt.encode(
        claims, ehr.key, algorithm=ehr.algorithm, headers={"kid": ehr.kid, "typ": "JWT", **header}
    )


def test_the_issuer_matches_with_or_without_a_trailing_slash(make_cds_app, cds_site):
    client = make_cds_app(CDS_ISSUERS=(EHR_ISSUER + "/",)).test_client()
    assert post(client, cds_site.ehr.token(CDS_BASE + PATH)).status_code == 200
    assert audit_lines(cds_site.site)[-1]["principal"] == EHR_ISSUER + "/"
    slashed = _signed(cds_site.ehr, _claims(iss=EHR_ISSUER + "/"))
    assert post(make_cds_app().test_client(), slashed).status_code == 200


def test_an_audience_with_a_trailing_slash_is_the_same_endpoint(cds_client, cds_site):
    assert post(cds_client, cds_site.ehr.token(CDS_BASE + PATH + "/")).status_code == 200


def test_jku_is_ignored_for_configured_keys(cds_client, cds_site):
    """The sandbox's header names its jku; a site with the keys configured does not follow it."""
    token = _signed(
        cds_site.ehr, _claims(), jku="https://sandbox.cds-hooks.org/.well-known/jwks.json"
    )
    assert post(cds_client, token).status_code == 200


@pytest.fixture
def jwks_server(cds_site):
    served = []
    keys = json.dumps(cds_site.ehr.jwks()).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the standard library's name
            served.append(self.path)
            self.send_response(200 if self.path == "/ehr/jwks.json" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(keys if self.path == "/ehr/jwks.json" else b"{}")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", served
    server.shutdown()
    server.server_close()


def test_jku_is_followed_only_within_the_issuers_allow_list(make_cds_app, cds_site, jwks_server):
    base, served = jwks_server
    listed = f"{base}/ehr/jwks.json"
    mapping = cds_site.site.root / "issuers.json"
    mapping.write_text(
        json.dumps({EHR_ISSUER: {"jwks_urls": [listed], "audiences": ["https://cds.example.org"]}})
    )
    client = make_cds_app(CDS_JWKS=str(mapping)).test_client()
    assert post(client, _signed(cds_site.ehr, _claims(), jku=listed)).status_code == 200
    assert post(client, _signed(cds_site.ehr, _claims())).status_code == 200  # no jku: the list
    refused(
        post(client, _signed(cds_site.ehr, _claims(), jku=f"{base}/evil/jwks.json")),
        "not on this issuer's allow-list",
    )
    assert served == ["/ehr/jwks.json"]  # the other URL was never fetched
    # the issuer's configured audience (Epic-style) is accepted for any endpoint
    assert (
        post(client, _signed(cds_site.ehr, _claims(aud="https://cds.example.org"))).status_code
        == 200
    )
    refused(post(client, _signed(cds_site.ehr, _claims(aud="https://other.example.org"))), "'aud'")


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"jwks_urls": ["http://keys.example.org/jwks.json"]}, "must use https"),
        ({"jwks_urls": [], "audiences": ["x"]}, "either jwks"),
        ({"jwks_urls": ["https://a.example.org/k"], "colour": 1}, "unknown member"),
        ({"jwks": {"keys": []}, "jwks_urls": ["https://a.example.org/k"]}, "either jwks"),
    ],
)
def test_bad_issuer_entries_stop_the_start(cds_site, make_app, entry, message):
    path = cds_site.site.root / "issuers.json"
    path.write_text(json.dumps({EHR_ISSUER: entry}))
    with pytest.raises(ConfigError, match=message):
        create_app(cds_site.config(CDS_JWKS=str(path)))
