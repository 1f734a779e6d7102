"""Pseudonymisation: keyed artifacts hold no raw patient id and refuse a wrong key."""

from __future__ import annotations

import json

import pytest

from recommender.cli import main
from recommender.data.dataset import Dataset
from recommender.data.pseudonym import Pseudonymizer, create_key_file
from recommender.data.tables import write_tables
from recommender.exceptions import ArtifactError, RecommenderError, UnknownIdError
from recommender.models import make_model
from recommender.models.persistence import load_artifact
from tests.cohorts import checkerboard

KEY = Pseudonymizer(b"0123456789abcdef0123456789abcdef")


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    tables, _ = checkerboard(40, 2)
    model = make_model("popular").fit(Dataset.from_tables(tables, pseudonymizer=KEY))
    return model, model.save(tmp_path_factory.mktemp("keyed") / "artifact")


def test_pseudonyms_are_keyed_hashes():
    other = Pseudonymizer(b"another key of sixteen+ bytes!!")
    assert KEY("P0001") == KEY("P0001") != other("P0001")
    assert len(KEY("P0001")) == 32 and "P0001" not in KEY("P0001")
    assert KEY.fingerprint != other.fingerprint and "0123" not in repr(KEY)
    with pytest.raises(RecommenderError, match="at least 16 bytes"):
        Pseudonymizer(b"short")


def test_artifact_holds_no_raw_id(keyed):
    _, path = keyed
    for file in path.rglob("*"):
        if file.is_file():
            assert (
                b"P0001" not in file.read_bytes()
                and b"P\x000\x000\x000\x001" not in file.read_bytes()
            )
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["pseudonyms"] == {
        "scheme": "hmac-sha256-128",
        "key_fingerprint": KEY.fingerprint,
    }


def test_lookup_needs_the_right_key(keyed):
    _, path = keyed
    answer = load_artifact(path, pseudonymizer=KEY).model.recommend("P0001", k=2)
    assert answer.patient_id == "P0001" and answer.recommendations
    with pytest.raises(UnknownIdError, match="pseudonymised"):
        load_artifact(path).model.recommend("P0001")
    with pytest.raises(ArtifactError, match="does not match the one used in training"):
        load_artifact(path, pseudonymizer=Pseudonymizer(b"the wrong key, 16+ bytes long"))


def test_cli_train_and_recommend_with_a_key_file(tmp_path, monkeypatch, capsys):
    tables, _ = checkerboard(40, 2)
    write_tables(tables, tmp_path / "data")
    key = create_key_file(tmp_path / "secret" / "key")
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "data"),
                "--out",
                str(tmp_path / "m"),
                "--model",
                "popular",
                "--pseudonym-key-file",
                str(key),
            ]
        )
        == 0
    )
    assert "pseudonymised" in capsys.readouterr().out
    monkeypatch.setenv("RECOMMENDER_PSEUDONYM_KEY_FILE", str(key))
    assert main(["recommend", "--artifact", str(tmp_path / "m"), "--patient", "P0003"]) == 0
    assert json.loads(capsys.readouterr().out)["patient_id"] == "P0003"
    assert (
        main(
            [
                "recommend",
                "--artifact",
                str(tmp_path / "m"),
                "--all",
                "--out",
                str(tmp_path / "all.csv"),
                "-k",
                "1",
            ]
        )
        == 0
    )
    assert "P0003" not in (tmp_path / "all.csv").read_text()
    monkeypatch.delenv("RECOMMENDER_PSEUDONYM_KEY_FILE")
    assert main(["recommend", "--artifact", str(tmp_path / "m"), "--patient", "P0003"]) == 2
    assert "pseudonymised" in capsys.readouterr().err
