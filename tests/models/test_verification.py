"""Semantic verification of artifacts, for every model family: intact files, bad content."""

from __future__ import annotations

import numpy as np
import pytest

from recommender.data.dataset import Dataset
from recommender.data.side_info import SideInfo
from recommender.models import MODELS, make_model
from recommender.models.persistence import load_artifact
from recommender.models.verification import ArtifactVerificationError, smoke_queries
from tests.artifact_edits import rewrite_array
from tests.cohorts import checkerboard
from tests.models.test_contract import FAST


@pytest.fixture(scope="module")
def dataset():
    tables, _ = checkerboard(80, 4)
    return Dataset.from_tables(tables, side_info=SideInfo(conditions=True))


@pytest.fixture(scope="module", params=sorted(MODELS))
def saved(request, dataset, tmp_path_factory):
    model = make_model(request.param, **FAST[request.param]).fit(dataset)
    return model, model.save(tmp_path_factory.mktemp(request.param) / "artifact")


def _copy(path, tmp_path):
    import shutil

    return shutil.copytree(path, tmp_path / "copy")


def test_a_good_artifact_of_every_family_passes(saved):
    model, path = saved
    loaded = load_artifact(path).model
    smoke_queries(loaded)
    assert set(loaded.state_shapes(loaded._state())) == set(model._state())


def test_non_finite_learned_values_are_refused_naming_the_file(saved, tmp_path):
    model, path = saved
    floats = [
        n for n, a in model._state().items() if np.issubdtype(np.asarray(a).dtype, np.floating)
    ]
    if not floats:
        pytest.skip(f"{model.kind} stores no floating-point state")
    name = floats[0]
    copy = _copy(path, tmp_path)
    array = np.array(model._state()[name], dtype=np.asarray(model._state()[name]).dtype)
    array.reshape(-1)[:] = np.nan
    rewrite_array(copy, f"model/{name}.npy", array)
    with pytest.raises(ArtifactVerificationError, match=rf"model/{name}\.npy: finite values check"):
        load_artifact(copy)


def test_a_misshapen_learned_array_is_refused_naming_the_file(saved, tmp_path):
    model, path = saved
    arrays = {n: a for n, a in model._state().items() if np.asarray(a).dtype != np.uint8}
    name, array = max(arrays.items(), key=lambda item: np.asarray(item[1]).size)  # not a text blob
    copy = _copy(path, tmp_path)
    rewrite_array(copy, f"model/{name}.npy", np.asarray(array)[:-1])
    with pytest.raises(ArtifactVerificationError, match=r"model/\S+\.npy: shape check") as error:
        load_artifact(copy)
    assert f"model/{name}.npy" in str(error.value)  # the edited file, or the one it disagrees with


def test_an_id_map_of_the_wrong_length_is_refused(saved, tmp_path):
    _, path = saved
    copy = _copy(path, tmp_path)
    ids = np.load(copy / "dataset" / "patient_ids.npy")
    rewrite_array(copy, "dataset/patient_ids.npy", ids[:-3])
    with pytest.raises(ArtifactVerificationError, match=r"dataset/patient_ids\.npy: shape check"):
        load_artifact(copy)


def test_factors_of_another_width_are_refused_even_when_both_agree_with_the_ids(dataset, tmp_path):
    model = make_model("als", **FAST["als"]).fit(dataset)
    path = model.save(tmp_path / "a")
    rewrite_array(path, "model/item_factors.npy", np.ones((dataset.matrix.shape[1], 3), np.float32))
    with pytest.raises(ArtifactVerificationError, match=r"axis 1 \(d\) has length 3, but model/"):
        load_artifact(path)


def test_training_never_writes_a_model_that_fails_its_checks(dataset, tmp_path):
    model = make_model("als", **FAST["als"]).fit(dataset)
    model.item_factors_ = np.full_like(model.item_factors_, np.nan)
    target = tmp_path / "model"
    with pytest.raises(ArtifactVerificationError, match="not written.*item_factors.npy: finite"):
        model.save(target)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_a_model_whose_scores_are_nan_fails_the_smoke_query(dataset):
    model = make_model("popular").fit(dataset)
    model.scores_ = np.full_like(model.scores_, np.nan)
    with pytest.raises(ArtifactVerificationError, match="smoke query check failed: .* NaN"):
        smoke_queries(model)
