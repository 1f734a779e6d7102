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


def test_predictions_from_many_threads_equal_the_serial_ones(boosters):
    """A LightGBM Booster mixes up concurrent predictions (other calls' leaves and scores,
    without an error); the forest serialises them, so threaded service workers stay exact."""
    import threading

    X, built = boosters
    forest = Forest.merge(built)
    batches = [X[i : i + 3 + i % 5] for i in range(0, 400, 8)]
    leaves = [forest.raw_segments(b) for b in batches]
    sums = [forest.raw_sum(b, ["b1", "b2"]) for b in batches]
    wrong = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(200):
            i = int(rng.integers(len(batches)))
            if rng.random() < 0.5:
                same = np.array_equal(forest.raw_segments(batches[i]), leaves[i])
            else:
                same = np.array_equal(forest.raw_sum(batches[i], ["b1", "b2"]), sums[i])
            if not same:
                wrong.append(i)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
