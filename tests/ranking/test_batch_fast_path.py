"""The batch fast path for factor models returns exactly what the generic path returns.

Generic path: dense scores from ``model.score``, :func:`mask_scores`, :func:`top_k`. Fast path
(:func:`recommender.ranking.rank_factors`): only allowed columns multiplied, blocks on threads,
group-maxima selection. Both must agree entry for entry (ties by lower index, at the cut too),
and neither may ever return an excluded treatment.

BLAS may round a dot product differently by one ulp depending on the shape of the product
(a one-row block goes through gemv, for instance), exactly as the generic path itself does for
a patient ranked alone or in a batch. With integer factors every product is exact and the two
paths must agree bit for bit; with real factors two treatments may swap only when their scores
lie within that rounding.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recommender.data.dataset import Dataset
from recommender.data.patient import Query
from recommender.models import make_model
from recommender.ranking import batch as ranking
from recommender.ranking import factor_path, mask_scores, rank_patients, safety, top_k, topk
from tests.cohorts import random_cohort
from tests.ranking.test_ranking import forbidden

FACTOR_KINDS = ("als", "bpr", "lmf")
QUICK = {
    "als": {"factors": 4, "iterations": 2},
    "bpr": {"factors": 4, "iterations": 3},
    "lmf": {"factors": 4, "iterations": 3},
}


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Tiny blocks and groups, so small data crosses every block, fold and thread boundary."""
    monkeypatch.setattr(topk, "SELECT_ROWS", 3)
    monkeypatch.setattr(topk, "SELECT_GROUPS", 2)
    monkeypatch.setattr(factor_path, "THREADS", 2)
    monkeypatch.setattr(factor_path, "PRUNE_FIRST", 1)  # norm pruning on a handful of treatments


def generic(model, patients, condition, k, include_tried):
    """The reference: dense scores, masked, then top_k (what every non-factor model does)."""
    dataset = model.dataset_
    candidates = dataset.candidates(condition) if condition >= 0 else None
    query = Query.known(dataset, patients, np.full(len(patients), condition))
    codes = safety.exclusion_codes(
        dataset, query, include_tried, safety.active_treatments(dataset, query)
    )
    return top_k(mask_scores(dataset, model.score(query), codes, candidates), k)


def assert_same_up_to_rounding(model, patients, idx, values, expected_idx, expected_values):
    """Equal lists, except that treatments whose scores differ by rounding only may swap."""
    np.testing.assert_array_equal(idx >= 0, expected_idx >= 0)
    np.testing.assert_allclose(values, expected_values, rtol=1e-6, atol=1e-7)
    rows, cols = np.nonzero(idx != expected_idx)
    scores = model.user_factors_[patients] @ model.item_factors_.T
    for row, col in zip(rows, cols):
        a, b = scores[row, idx[row, col]], scores[row, expected_idx[row, col]]
        assert abs(a - b) <= 1e-6 * max(1.0, abs(a)), (row, col, a, b)


def fitted(kind, seed, factor_values, n_treatments=30):
    tables = random_cohort(seed, n_patients=40, n_treatments=n_treatments, n_rows=300)
    model = make_model(kind, **QUICK[kind]).fit(Dataset.from_tables(tables))
    rng = np.random.default_rng(seed)
    if factor_values == "integers":  # integer scores: ties everywhere, also at the cut
        model.user_factors_ = rng.integers(-2, 3, model.user_factors_.shape).astype(np.float32)
        model.item_factors_ = rng.integers(-2, 3, model.item_factors_.shape).astype(np.float32)
    elif factor_values == "zero-patients":  # patients without signal: every score ties at 0
        model.user_factors_ = model.user_factors_.copy()
        model.user_factors_[::3] = 0
    return tables, model


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(FACTOR_KINDS),
    factor_values=st.sampled_from(["fitted", "integers", "zero-patients"]),
    k=st.integers(1, 20),
    include_tried=st.booleans(),
    data=st.data(),
)
def test_fast_path_equals_generic_path(seed, kind, factor_values, k, include_tried, data):
    tables, model = fitted(kind, seed, factor_values)
    dataset = model.dataset_
    patients = np.array(
        data.draw(st.lists(st.integers(0, dataset.n_patients - 1), min_size=1, max_size=12))
    )  # any order, repeats
    condition = data.draw(st.sampled_from([-1] + list(range(len(dataset.conditions)))))
    candidates = dataset.candidates(condition) if condition >= 0 else None
    assert ranking._factor_scoring(model, patients)
    idx, values = rank_patients(model, patients, condition, candidates, k, include_tried)
    expected_idx, expected_values = generic(model, patients, condition, k, include_tried)
    if factor_values == "integers":
        np.testing.assert_array_equal(idx, expected_idx)
        np.testing.assert_array_equal(values, expected_values)
    else:
        assert_same_up_to_rounding(model, patients, idx, values, expected_idx, expected_values)
    for row, p in enumerate(patients):  # and the guarantee, from the tables alone
        condition_id = None if condition < 0 else dataset.conditions.to_external([condition])[0]
        chosen = set(dataset.treatments.to_external(idx[row][idx[row] >= 0]))
        assert not chosen & forbidden(
            tables, dataset.patients.to_external([p])[0], condition_id, include_tried
        )


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), k=st.integers(1, 12), include_tried=st.booleans())
def test_norm_pruning_is_exact_on_a_large_catalog(seed, k, include_tried):
    """Integer factors with very different norms per treatment: products are exact, so the
    pruned ranking must equal the generic one bit for bit, ties included."""
    tables = random_cohort(seed, n_patients=120, n_treatments=400, n_rows=2500)
    model = make_model("als", factors=4, iterations=1).fit(Dataset.from_tables(tables))
    rng = np.random.default_rng(seed)
    model.user_factors_ = rng.integers(-2, 3, model.user_factors_.shape).astype(np.float32)
    scale = rng.choice([1, 1, 1, 2, 6], size=(model.item_factors_.shape[0], 1))
    model.item_factors_ = (rng.integers(-2, 3, model.item_factors_.shape) * scale).astype(
        np.float32
    )
    patients = np.arange(model.dataset_.n_patients)
    idx, values = rank_patients(model, patients, -1, None, k, include_tried)
    expected_idx, expected_values = generic(model, patients, -1, k, include_tried)
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_array_equal(values, expected_values)


def test_fast_path_is_taken_for_factor_models_only(monkeypatch):
    tables = random_cohort(1, n_patients=30, n_treatments=10, n_rows=200)
    dataset = Dataset.from_tables(tables)
    calls = []
    original = ranking.rank_factors
    monkeypatch.setattr(ranking, "rank_factors", lambda *a: calls.append(1) or original(*a))
    patients = np.arange(dataset.n_patients)
    for kind, taken in (("als", True), ("bpr", True), ("cosine", False), ("popular", False)):
        calls.clear()
        model = make_model(kind, **QUICK.get(kind, {})).fit(dataset)
        rank_patients(model, patients, -1, None, 5, False)
        assert bool(calls) is taken, kind


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_factors_fall_back_to_the_generic_path(bad):
    tables, model = fitted("als", 3, "fitted")
    model.item_factors_ = model.item_factors_.copy()
    model.item_factors_[2, 0] = bad
    patients = np.arange(model.dataset_.n_patients)
    assert not ranking._factor_scoring(model, patients)
    idx, values = rank_patients(model, patients, -1, None, 20, True)
    assert not (idx == 2).any() and np.isfinite(values[idx >= 0]).all()


def test_fewer_than_k_when_few_are_allowed_and_padding_is_minus_one():
    tables, model = fitted("als", 5, "fitted")
    dataset = model.dataset_
    patients = np.arange(dataset.n_patients)
    k = dataset.n_treatments + 5
    idx, values = rank_patients(model, patients, -1, None, k, False)
    for row, p in enumerate(patients):
        allowed = set(dataset.treatments.external_ids) - forbidden(
            tables, dataset.patients.to_external([p])[0], None, False
        )
        got = idx[row][idx[row] >= 0]
        assert set(dataset.treatments.to_external(got)) == allowed
        assert (idx[row][len(got) :] == -1).all() and (values[row][len(got) :] == -np.inf).all()


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 9),
    m=st.integers(1, 40),
    k=st.integers(1, 45),
    seed=st.integers(0, 999),
    integers=st.booleans(),
)
def test_top_k_is_a_stable_full_sort_of_the_allowed_entries(n, m, k, seed, integers):
    rng = np.random.default_rng(seed)
    scores = (rng.integers(-3, 4, (n, m)) if integers else rng.normal(size=(n, m))).astype(
        np.float32
    )
    scores[rng.random((n, m)) < 0.2] = -np.inf
    scores[rng.random((n, m)) < 0.05] = np.nan
    scores[rng.random((n, m)) < 0.05] = np.inf
    idx, values = top_k(scores.copy(), k)
    for row in range(n):
        allowed = np.flatnonzero(np.isfinite(scores[row]))
        expected = allowed[np.lexsort((allowed, -scores[row, allowed]))][:k]
        assert idx[row][: len(expected)].tolist() == expected.tolist()
        assert (idx[row][len(expected) :] == -1).all()
        assert (values[row][len(expected) :] == -np.inf).all()
        np.testing.assert_array_equal(values[row][: len(expected)], scores[row, expected])


def test_frames_built_by_arrow_equal_frames_of_python_strings(monkeypatch):
    tables, model = fitted("als", 7, "fitted")
    dataset = model.dataset_
    patients = list(dataset.patients.external_ids[:12])
    conditions = [None, dataset.conditions.external_ids[0]] * 6
    fast = [
        model.recommend_batch(patients, k=4, condition_ids=conditions),
        ranking.recommend_all(model, k=3),
    ]
    monkeypatch.setattr(
        ranking, "_string_column", lambda ids, positions: np.asarray(ids, dtype=object)[positions]
    )
    slow = [
        model.recommend_batch(patients, k=4, condition_ids=conditions),
        ranking.recommend_all(model, k=3),
    ]
    for a, b in zip(fast, slow):
        pd.testing.assert_frame_equal(a, b)
