"""Configuration: the contract's names, precedence, checks, and clear startup failures."""

from __future__ import annotations

import json

import pytest

from service import create_app
from service.config import DEFAULTS, ENVIRONMENT, ConfigError, load_config

CONTRACT = {
    "RECOMMENDER_ARTIFACT": "ARTIFACT",
    "RECOMMENDER_API_TOKENS_FILE": "API_TOKENS_FILE",
    "RECOMMENDER_PSEUDONYM_KEY_FILE": "PSEUDONYM_KEY_FILE",
    "RECOMMENDER_AUDIT_LOG": "AUDIT_LOG",
    "RECOMMENDER_MAX_K": "MAX_K",
}
REQUIRED = {
    "RECOMMENDER_ARTIFACT": "/a",
    "RECOMMENDER_API_TOKENS_FILE": "/t",
    "RECOMMENDER_PSEUDONYM_KEY_FILE": "/k",
    "RECOMMENDER_AUDIT_LOG": "/l",
}


def test_the_contract_names_are_read():
    for variable, key in CONTRACT.items():
        assert ENVIRONMENT[variable][0] == key
    config = load_config(environ={**REQUIRED, "RECOMMENDER_MAX_K": "7"})
    assert (config["ARTIFACT"], config["API_TOKENS_FILE"], config["MAX_K"]) == ("/a", "/t", 7)


def test_precedence_defaults_file_environment_mapping(tmp_path):
    file = tmp_path / "config.json"
    file.write_text(json.dumps({"MAX_K": 50, "DEFAULT_K": 5, "MAX_HISTORY": 10}))
    environ = {**REQUIRED, "RECOMMENDER_CONFIG": str(file), "RECOMMENDER_MAX_K": "40"}
    config = load_config({"MAX_K": 30}, environ=environ)
    assert config["MAX_K"] == 30  # mapping beats environment beats file
    assert config["DEFAULT_K"] == 5 and config["MAX_HISTORY"] == 10  # file beats defaults
    assert config["MAX_CONDITIONS"] == DEFAULTS["MAX_CONDITIONS"]
    assert load_config(environ=environ)["MAX_K"] == 40


def test_the_artifact_root_defaults_to_the_artifact_folder_parent(tmp_path):
    artifact = str(tmp_path / "models" / "v1")
    config = load_config(environ={**REQUIRED, "RECOMMENDER_ARTIFACT": artifact})
    assert config["ARTIFACT_ROOT"] == str(tmp_path / "models")


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"RECOMMENDER_MAX_K": "ten"}, "RECOMMENDER_MAX_K='ten'"),
        (
            {"RECOMMENDER_MAX_K": "0"},
            r"RECOMMENDER_MAX_K \(MAX_K\) must be a whole number in \[1, 10000\]",
        ),
        ({"RECOMMENDER_DEFAULT_K": "200"}, "must not exceed"),
        ({"RECOMMENDER_AUDIT_FSYNC": "perhaps"}, "expected true/false"),
        (
            {"RECOMMENDER_AUDIT_FSYNC_INTERVAL_MS": "soon"},
            "RECOMMENDER_AUDIT_FSYNC_INTERVAL_MS='soon'",
        ),
        (
            {"RECOMMENDER_AUDIT_FSYNC_INTERVAL_MS": "60000"},
            r"RECOMMENDER_AUDIT_FSYNC_INTERVAL_MS \(AUDIT_FSYNC_INTERVAL_MS\) must be a whole number in "
            r"\[0, 10000\]",
        ),
        ({"RECOMMENDER_AUDIT_LOG": ""}, r"missing required setting\(s\): RECOMMENDER_AUDIT_LOG"),
    ],
)
def test_wrong_values_name_the_variable(environ, message):
    with pytest.raises(ConfigError, match=message):
        load_config(environ={**REQUIRED, **environ})


def test_missing_settings_are_listed():
    with pytest.raises(
        ConfigError, match="RECOMMENDER_API_TOKENS_FILE.*RECOMMENDER_PSEUDONYM_KEY_FILE"
    ):
        load_config(environ={"RECOMMENDER_ARTIFACT": "/a"})


def test_unknown_settings_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config({"MAXK": 3}, environ=REQUIRED)
    file = tmp_path / "c.json"
    file.write_text('{"ARTIFACTS": "x"}')
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(environ={**REQUIRED, "RECOMMENDER_CONFIG": str(file)})
    file.write_text("[1]")
    with pytest.raises(ConfigError, match="JSON object"):
        load_config(environ={**REQUIRED, "RECOMMENDER_CONFIG": str(file)})


def test_create_app_reads_the_environment(make_app, site, monkeypatch):  # make_app: clean env
    for variable, key in CONTRACT.items():
        if key == "MAX_K":
            continue
        monkeypatch.setenv(variable, site.config()[key])
    monkeypatch.setenv("RECOMMENDER_MAX_K", "4")
    client = create_app().test_client()
    response = client.get(
        "/v1/patients/P0001/recommendations?k=5",
        headers={"Authorization": f"Bearer {site.clinician}"},
    )
    assert response.get_json()["error"]["details"]["maximum"] == 4


# --- startup failures -----------------------------------------------------------------------------


def test_a_key_mismatch_stops_the_service_with_a_clear_message(make_app, site):
    with pytest.raises(ConfigError, match="pseudonymisation key does not match"):
        make_app(ARTIFACT=str(site.foreign_artifact))


def test_an_artifact_with_raw_ids_is_refused(make_app, site):
    with pytest.raises(ConfigError, match="not pseudonymised"):
        make_app(ARTIFACT=str(site.raw_artifact))


def test_missing_key_file_artifact_or_audit_folder(make_app, site):
    with pytest.raises(ConfigError, match="pseudonymisation key file"):
        make_app(PSEUDONYM_KEY_FILE=str(site.root / "missing-key"))
    with pytest.raises(ConfigError, match="no artifact folder"):
        make_app(ARTIFACT=str(site.root / "missing"))
    with pytest.raises(ConfigError, match="RECOMMENDER_AUDIT_LOG"):
        make_app(AUDIT_LOG=str(site.root / "no-such-folder" / "audit.log"))


def test_a_tampered_artifact_is_refused(make_app, site):
    array = site.artifact / "model" / "user_factors.npy"
    array.write_bytes(array.read_bytes()[:-4] + b"\0\0\0\1")
    with pytest.raises(ConfigError, match="does not match its checksum"):
        make_app()


def test_feedback_and_cds_files_default_beside_the_audit_log():
    config = load_config(environ={**REQUIRED, "RECOMMENDER_AUDIT_LOG": "/var/log/rec/audit.log"})
    assert config["FEEDBACK_LOG"] == "/var/log/rec/feedback.jsonl"
    assert config["CDS_STORE"] == "/var/log/rec/cds.sqlite"
    assert config["CDS_ISSUERS"] == ()  # CDS Hooks off


def test_cds_settings_from_the_environment():
    config = load_config(
        environ={
            **REQUIRED,
            "RECOMMENDER_CDS_ISSUERS": "https://a.example.org, https://b.example.org",
            "RECOMMENDER_CDS_JWKS": "/etc/rec/jwks.json",
            "RECOMMENDER_CDS_BASE_URL": "https://cds.example.org/",
            "RECOMMENDER_CDS_CORS_ORIGINS": "https://ehr.example.org",
            "RECOMMENDER_FEEDBACK_LOG": "/data/feedback.jsonl",
        }
    )
    assert config["CDS_ISSUERS"] == ("https://a.example.org", "https://b.example.org")
    assert config["CDS_BASE_URL"] == "https://cds.example.org"  # trailing slash dropped
    assert config["CDS_CORS_ORIGINS"] == ("https://ehr.example.org",)
    assert config["FEEDBACK_LOG"] == "/data/feedback.jsonl"


@pytest.mark.parametrize(
    "environ, message",
    [
        (
            {"RECOMMENDER_CDS_ISSUERS": "https://a.example.org"},
            "RECOMMENDER_CDS_JWKS.*RECOMMENDER_CDS_BASE_URL",
        ),
        ({"RECOMMENDER_CDS_BASE_URL": "cds.example.org"}, "absolute http"),
        ({"RECOMMENDER_CDS_MAX_CARDS": "0"}, "RECOMMENDER_CDS_MAX_CARDS"),
    ],
)
def test_wrong_cds_settings_name_the_variable(environ, message):
    with pytest.raises(ConfigError, match=message):
        load_config(environ={**REQUIRED, **environ})


def test_audit_lines_are_on_disk_within_10_ms_by_default():
    """The durability decision: written before the response, fsynced within 10 ms; 0 opts in
    to an fsync before every response."""
    assert load_config(environ=REQUIRED)["AUDIT_FSYNC_INTERVAL_MS"] == 10
    strict = load_config(environ={**REQUIRED, "RECOMMENDER_AUDIT_FSYNC_INTERVAL_MS": "0"})
    assert strict["AUDIT_FSYNC_INTERVAL_MS"] == 0
