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


def test_compiled_forest_equals_lightgbm_with_missing_and_unseen_values(boosters):
    """The compiled trees (lleaves) give LightGBM's raw scores per segment (segments of 10, 11
    and 12 trees: the shorter ones padded) and per compiled sum: NaN, a category never seen
    in training and values beyond every threshold included."""
    import pickle

    X, built = boosters
    forest = Forest.merge(built)
    rows = X[:300].copy()
    rows[::4, 0] = np.nan
    rows[1::4, 5] = 9  # an unseen category
    rows[2::4, 5] = np.nan
    rows[3::4, 1:5] = 1e6
    segments, leaves = forest.raw_segments_and_leaves(rows)  # LightGBM: nothing compiled yet
    pair = forest.raw_sum(rows, ["b1", "b2"])
    assert leaves is not None
    assert forest.compile(sums=[["b1", "b2"]])
    assert set(forest._compiled_sums) == {("b1", "b2")}
    got, no_leaves = forest.raw_segments_and_leaves(rows)
    assert no_leaves is None
    np.testing.assert_allclose(got, segments, rtol=0, atol=1e-12)
    np.testing.assert_allclose(forest.raw_sum(rows, ["b1", "b2"]), pair, rtol=0, atol=1e-12)
    np.testing.assert_allclose(  # no compiled sum of these: the segments' outputs added
        forest.raw_sum(rows, ["b0", "b1"]), segments[:, 0] + segments[:, 1], rtol=0, atol=1e-12
    )
    copy = pickle.loads(pickle.dumps(forest))  # machine code is not pickled: compiles again
    assert copy.compiled is None and copy._compiled_sums == {}
    np.testing.assert_array_equal(copy.raw_sum(rows, ["b1", "b2"]), pair)


def test_segments_as_classes_interleaves_and_pads_the_segments(boosters):
    import re

    from recommender.models.outcome.forest import segments_as_classes

    _, built = boosters
    forest = Forest.merge(built)
    text = segments_as_classes(forest.booster.model_to_string(), forest.sizes)
    assert re.search(r"(?m)^num_class=3$", text) and re.search(r"(?m)^objective=multiclass", text)
    blocks = text.split("end of trees")[0].split("\nTree=")[1:]
    assert len(blocks) == 3 * 12  # 12 iterations of 3 classes
    padded = [i for i, block in enumerate(blocks) if "\nnum_leaves=1\n" in block]
    assert padded == [30, 33, 34]  # tree 3r + s is segment s's r-th: b0 has 10, b1 11
    with pytest.raises(ValueError, match="segments"):
        segments_as_classes(forest.booster.model_to_string(), [10, 11])


def test_lightgbm_scores_the_rows_when_the_trees_cannot_be_compiled(boosters, monkeypatch):
    from recommender.models.outcome import compiled

    X, built = boosters
    forest = Forest.merge(built)
    expected = forest.raw_sum(X[:40], ["b0"])

    def fails(*_args, **_kwargs):
        raise RuntimeError("no LLVM target for this machine")

    monkeypatch.setattr(compiled, "CompiledSegments", fails)
    assert not forest.compile(sums=[["b0"]])
    np.testing.assert_array_equal(forest.raw_sum(X[:40], ["b0"]), expected)
    assert forest.raw_segments_and_leaves(X[:5])[1] is not None  # LightGBM's leaves


def test_compiled_code_that_disagrees_on_the_probe_rows_is_not_used(boosters, monkeypatch):
    """The compiled forest is checked against LightGBM before it is used: a code generator
    that decided one split wrongly (simulated here by an offset) leaves LightGBM scoring."""
    from recommender.models.outcome import compiled

    X, built = boosters
    real = compiled.CompiledSegments

    class Off(real):
        def __call__(self, rows):
            out = super().__call__(rows)
            out[rows[:, 0] > 1.5] += 1e-6
            return out

    monkeypatch.setattr(compiled, "CompiledSegments", Off)
    forest = Forest.merge(built)
    expected = forest.raw_segments(X[:50])
    assert not forest.compile()
    assert forest.compiled is None
    np.testing.assert_array_equal(forest.raw_segments(X[:50]), expected)


def test_trees_splitting_on_thousands_of_categories_compile_exactly():
    """A split on a category code with 2,000 values is a 63-word bit set: compiled from
    constant memory (lleaves' own code generator materialised it at every visit), scored as
    LightGBM does, categories beyond the last known one included."""
    from recommender.models.outcome import compiled

    rng = np.random.default_rng(1)
    X = rng.normal(size=(6000, 3))
    X[:, 0] = rng.integers(0, 2000, 6000)
    effect = rng.normal(size=2000)
    y = (effect[X[:, 0].astype(int)] + X[:, 1] > 0).astype(int)
    params = {"num_leaves": 7, "min_data_per_group": 2, "cat_smooth": 1, "verbose": -1}
    forest = Forest.merge({"wide": train_booster(X, y, np.ones(6000), [0], params, 5)})
    assert compiled.widest_category_set(forest.booster.model_to_string()) > 60
    rows = X[:300].copy()
    rows[::3, 0] = rng.integers(1990, 2100, 100)
    expected = forest.raw_sum(rows, ["wide"])
    assert forest.compile()
    np.testing.assert_allclose(forest.raw_sum(rows, ["wide"]), expected, rtol=0, atol=1e-12)


def test_trees_wider_than_the_limit_are_left_to_lightgbm(boosters, monkeypatch):
    from recommender.models.outcome import compiled

    X, built = boosters
    monkeypatch.setattr(compiled, "MAX_CATEGORY_WORDS", 0)  # 4 categories: one word

    def must_not_compile(*_args, **_kwargs):
        raise AssertionError("lleaves was asked to compile")

    monkeypatch.setattr(compiled, "CompiledSegments", must_not_compile)
    forest = Forest.merge(built)
    expected = forest.raw_sum(X[:30], ["b1"])
    assert not forest.compile()
    np.testing.assert_array_equal(forest.raw_sum(X[:30], ["b1"]), expected)


def test_the_widest_category_set_is_counted_in_words(boosters):
    from recommender.models.outcome.compiled import widest_category_set

    _, built = boosters
    assert widest_category_set(built["b0"].model_to_string()) == 1  # 4 categories: one word
    assert widest_category_set("tree\nnum_cat=0\n") == 0


def test_compiled_scores_from_many_threads_equal_the_serial_ones(boosters):
    """The compiled functions run without the forest's lock: threads calling them at once
    (the sums and every segment's scores) get exactly the serial answers."""
    import threading

    X, built = boosters
    forest = Forest.merge(built)
    assert forest.compile(sums=[["b0", "b1", "b2"]])
    batches = [X[i : i + 3 + i % 5] for i in range(0, 400, 8)]
    sums = [forest.raw_sum(b, ["b0", "b1", "b2"]) for b in batches]
    segments = [forest.raw_segments(b) for b in batches]
    wrong = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(300):
            i = int(rng.integers(len(batches)))
            if rng.random() < 0.5:
                same = np.array_equal(forest.raw_sum(batches[i], ["b0", "b1", "b2"]), sums[i])
            else:
                same = np.array_equal(forest.raw_segments(batches[i]), segments[i])
            if not same:
                wrong.append(i)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
