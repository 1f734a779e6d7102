"""The merged forest gives each booster's own raw scores, by LightGBM and by its leaves."""

from __future__ import annotations

import numpy as np
import pytest

from recommender.models.outcome.forest import Forest, train_booster


@pytest.fixture(scope="module")
def boosters():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 6))
    X[:, 5] = rng.integers(0, 4, 3000)
    y = (X[:, 0] + X[:, 5] + rng.normal(size=3000) > 1).astype(int)
    params = {"num_leaves": 7, "min_child_samples": 5, "verbose": -1, "num_threads": 1}
    built = {
        f"b{i}": train_booster(X, y, rng.poisson(1, 3000), [5], {**params, "seed": i}, 10 + i)
        for i in range(3)
    }
    return X, built


def test_segments_equal_the_boosters(boosters):
    X, built = boosters
    forest = Forest.merge(built)
    assert forest.sizes == [10, 11, 12]
    own = np.stack([b.predict(X[:50], raw_score=True) for b in built.values()], axis=1)
    np.testing.assert_allclose(forest.raw_segments(X[:50]), own, atol=1e-9)
    for i, name in enumerate(built):
        np.testing.assert_allclose(forest.raw(X[:50], name), own[:, i], atol=1e-9)
    np.testing.assert_allclose(
        forest.raw_sum(X[:50], ["b1", "b2"]), own[:, 1] + own[:, 2], atol=1e-9
    )
    with pytest.raises(ValueError, match="not consecutive"):
        forest.raw_sum(X[:5], ["b0", "b2"])


def test_the_saved_text_loads_back(boosters):
    X, built = boosters
    forest = Forest.merge(built)
    back = Forest.from_array(forest.to_array(), forest.names, forest.sizes)
    np.testing.assert_array_equal(back.raw_segments(X[:20]), forest.raw_segments(X[:20]))
    assert forest.to_array().dtype == np.uint8
