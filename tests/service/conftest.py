"""Fixtures of the service tests: tiny keyed artifacts, a key, tokens and an app factory.

Artifacts are trained once per session on the checkerboard cohort (``tests/cohorts.py``), whose
right answers are known: probe patients ``P0200``-``P0209`` should get ``T0`` or ``T1`` first
for condition ``C``; ``TX`` is contraindicated by allergy ``ALG``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from recommender.data.pseudonym import Pseudonymizer, create_key_file
from recommender.data.tables import write_tables
from recommender.training import train_artifact
from service import create_app
from service.tokens import add_token
from tests.cohorts import checkerboard

PARAMS = {"factors": 8, "iterations": 8, "random_state": 3}


@dataclass(frozen=True)
class Site:
    """Everything a deployment needs, built under one folder."""

    root: Path
    artifact: Path
    other_artifact: Path  # same key, different data: another model version
    foreign_artifact: Path  # trained with another key
    raw_artifact: Path  # trained without a key
    key: Path
    tokens: Path
    clinician: str
    admin: str
    truth: dict

    def config(self, **overrides) -> dict:
        config = {
            "ARTIFACT": str(self.artifact),
            "API_TOKENS_FILE": str(self.tokens),
            "PSEUDONYM_KEY_FILE": str(self.key),
            "AUDIT_LOG": str(self.root / "audit.log"),
            "ARTIFACT_ROOT": str(self.root),
        }
        config.update(overrides)
        return config

    def copy_artifact(self, source: Path, name: str) -> Path:
        target = self.root / name
        shutil.copytree(source, target)
        return target


def _train(data: Path, out: Path, key: Path | None) -> Path:
    pseudonymizer = Pseudonymizer.from_file(key) if key else None
    return train_artifact(data, out, kind="als", params=PARAMS, pseudonymizer=pseudonymizer)


@pytest.fixture(scope="session")
def site_template(tmp_path_factory) -> Site:
    root = tmp_path_factory.mktemp("site")
    tables, truth = checkerboard(200, 10)
    write_tables(tables, root / "data")
    other, _ = checkerboard(120, 6)
    write_tables(other, root / "data-other")
    key, foreign = create_key_file(root / "key"), create_key_file(root / "foreign-key")
    clinician = add_token(root / "tokens.json", "ward-7", "clinician")
    admin = add_token(root / "tokens.json", "ops", "admin")
    return Site(
        root=root,
        artifact=_train(root / "data", root / "artifact", key),
        other_artifact=_train(root / "data-other", root / "artifact-other", key),
        foreign_artifact=_train(root / "data", root / "artifact-foreign", foreign),
        raw_artifact=_train(root / "data", root / "artifact-raw", None),
        key=key,
        tokens=root / "tokens.json",
        clinician=clinician,
        admin=admin,
        truth=truth,
    )


@pytest.fixture
def site(site_template, tmp_path) -> Site:
    """A private copy of the site (tests may rotate files, tamper artifacts, reload)."""
    root = tmp_path / "site"
    shutil.copytree(
        site_template.root,
        root,
        ignore=lambda folder, names: (
            {"data", "data-other"} if Path(folder) == site_template.root else set()
        ),
    )
    return Site(
        root=root,
        artifact=root / "artifact",
        other_artifact=root / "artifact-other",
        foreign_artifact=root / "artifact-foreign",
        raw_artifact=root / "artifact-raw",
        key=root / "key",
        tokens=root / "tokens.json",
        clinician=site_template.clinician,
        admin=site_template.admin,
        truth=site_template.truth,
    )


@pytest.fixture
def make_app(site, monkeypatch):
    """``make_app(**overrides)``: an app over the site, with no RECOMMENDER_* from the shell."""
    for variable in list(os.environ):
        if variable.startswith("RECOMMENDER_") or variable == "PROMETHEUS_MULTIPROC_DIR":
            monkeypatch.delenv(variable)

    def make(**overrides):
        return create_app(site.config(**overrides))

    return make


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def clinician(site) -> dict:
    return {"Authorization": f"Bearer {site.clinician}"}


@pytest.fixture
def admin(site) -> dict:
    return {"Authorization": f"Bearer {site.admin}"}


def audit_lines(site: Site) -> list[dict]:
    path = site.root / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --- CDS Hooks -----------------------------------------------------------------------------------

CDS_BASE = "https://cds.example.org"
EHR_ISSUER = "https://ehr.example.org"


@dataclass(frozen=True)
class CdsSite:
    """A deployment with CDS Hooks on: the coded cohort's artifact, an EHR's keys."""

    site: Site
    artifact: Path
    jwks: Path
    ehr: object  # cds_support.Ehr
    truth: dict

    def config(self, **overrides) -> dict:
        settings = {
            "ARTIFACT": str(self.artifact),
            "CDS_ISSUERS": (EHR_ISSUER,),
            "CDS_JWKS": str(self.jwks),
            "CDS_BASE_URL": CDS_BASE,
        }
        return self.site.config(**{**settings, **overrides})


@pytest.fixture(scope="session")
def coded_template(tmp_path_factory):
    from .cds_support import Ehr, coded_cohort

    root = tmp_path_factory.mktemp("coded")
    tables, truth = coded_cohort()
    write_tables(tables, root / "data")
    key = create_key_file(root / "key")
    artifact = _train(root / "data", root / "artifact", key)
    return root, artifact, key, truth, Ehr(EHR_ISSUER)


@pytest.fixture
def cds_site(site, coded_template) -> CdsSite:
    from .cds_support import write_jwks

    root, artifact, key, truth, ehr = coded_template
    shutil.copy(key, site.key)  # the site's key is the one the coded artifact was trained with
    target = site.copy_artifact(artifact, "coded")
    return CdsSite(site, target, write_jwks(site.root / "jwks.json", ehr), ehr, truth)


@pytest.fixture
def make_cds_app(cds_site, make_app):
    def make(**overrides):
        return create_app(cds_site.config(**overrides))

    return make


@pytest.fixture
def cds_client(make_cds_app):
    return make_cds_app(ACCESS_LOG=False).test_client()
