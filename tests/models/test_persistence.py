"""Artifacts: arrays + manifest with checksums; tampered or partial ones are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recommender.data.dataset import Dataset
from recommender.exceptions import ArtifactError
from recommender.models import make_model
from recommender.models.persistence import MANIFEST, load_artifact
from tests.cohorts import checkerboard


@pytest.fixture(scope="module")
def model():
    tables, _ = checkerboard(60, 4)
    return make_model("als", factors=4, iterations=3).fit(Dataset.from_tables(tables))


def test_manifest_describes_the_model_and_data(model, tmp_path):
    path = model.save(tmp_path / "a", metrics={"ndcg@10": np.float32(0.5)})
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["model"] == {
        "type": "als",
        "class": "ALSRecommender",
        "params": model.get_params(),
    }
    assert manifest["data"]["n_patients"] == model.dataset_.n_patients
    assert manifest["data"]["fingerprint"] == model.dataset_.fingerprint
    assert manifest["metrics"] == {"ndcg@10": 0.5}
    assert {"implicit", "numpy", "python"} <= set(manifest["libraries"])
    assert all(len(digest) == 64 for digest in manifest["files"].values())
    assert "model/user_factors.npy" in manifest["files"]


def test_arrays_are_memory_mapped_and_pickle_free(model, tmp_path):
    loaded = load_artifact(model.save(tmp_path / "a")).model
    assert isinstance(loaded.user_factors_.base, np.memmap)  # a plain view of the map
    assert not loaded.user_factors_.flags.writeable
    for file in (tmp_path / "a").rglob("*.npy"):
        np.load(file, allow_pickle=False)  # raises if anything needed pickle


def test_tampered_array_is_refused(model, tmp_path):
    path = model.save(tmp_path / "a")
    target = path / "model" / "item_factors.npy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="item_factors.npy does not match its checksum"):
        load_artifact(path)


def test_partial_artifact_is_refused(model, tmp_path):
    path = model.save(tmp_path / "a")
    (path / "dataset" / "history.data.npy").unlink()
    with pytest.raises(
        ArtifactError, match="partial artifact, dataset/history.data.npy is missing"
    ):
        load_artifact(path)
    (path / f"{MANIFEST}.sha256").unlink()
    with pytest.raises(ArtifactError, match="not a complete artifact"):
        load_artifact(path)


def test_edited_manifest_is_refused(model, tmp_path):
    path = model.save(tmp_path / "a")
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["model"]["params"]["factors"] = 99
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="manifest was modified"):
        load_artifact(path)


def test_missing_folder_and_failed_write_leave_the_old_artifact(model, tmp_path, monkeypatch):
    with pytest.raises(ArtifactError, match="no artifact folder"):
        load_artifact(tmp_path / "nothing")
    path = model.save(tmp_path / "a")
    version = json.loads((path / MANIFEST).read_text())["version"]

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", explode)
    with pytest.raises(OSError):
        model.save(path)
    monkeypatch.undo()
    assert json.loads((path / MANIFEST).read_text())["version"] == version
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    load_artifact(path)


def test_files_linked_out_of_the_folder_are_refused(model, tmp_path):
    import os
    import shutil

    path = model.save(tmp_path / "art")
    factors = next((path / "model").glob("*.npy"))
    relative = f"model/{factors.name}"
    outside = tmp_path / "outside.npy"
    shutil.copy(factors, outside)  # same bytes: the checksum alone would accept it
    factors.unlink()
    factors.symlink_to(outside)
    with pytest.raises(ArtifactError, match=f"{relative} resolves to .*outside the artifact"):
        load_artifact(path)
    with pytest.raises(ArtifactError, match="outside the artifact"):
        load_artifact(path, verify=False)  # not only when checksums are verified
    os.replace(outside, path / "moved.npy")  # a link within the folder is its own file
    factors.unlink()
    factors.symlink_to(path / "moved.npy")
    load_artifact(path)
    (tmp_path / "current").symlink_to(path)  # the folder itself may be a link
    load_artifact(tmp_path / "current")


def test_a_linked_manifest_or_a_fifo_is_refused(model, tmp_path):
    import os
    import shutil

    path = model.save(tmp_path / "art")
    shutil.move(path / MANIFEST, tmp_path / MANIFEST)
    (path / MANIFEST).symlink_to(tmp_path / MANIFEST)
    with pytest.raises(ArtifactError, match=f"{MANIFEST} resolves to"):
        load_artifact(path)
    (path / MANIFEST).unlink()
    shutil.move(tmp_path / MANIFEST, path / MANIFEST)
    factors = next((path / "model").glob("*.npy"))
    factors.unlink()
    os.mkfifo(factors)
    with pytest.raises(ArtifactError, match="is not a regular file"):
        load_artifact(path)
