"""Known-answer tests of every metric, computed by hand."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import recommender.evaluation.metrics as M

# Query 0: relevant {1, 4, 9}, ranked [4, 2, 1, 7]   -> hits T F T F
# Query 1: relevant {5},       ranked [0, 3, 5, -1]  -> hits F F T F (list of 3)
# Query 2: relevant {},        ranked [1, 2, 3, 4]   -> no hit, undefined recall/AP/NDCG
RANKED = np.array([[4, 2, 1, 7], [0, 3, 5, -1], [1, 2, 3, 4]])
RELEVANT = [np.array([1, 4, 9]), np.array([5]), np.array([], dtype=np.int64)]


@pytest.fixture
def hits():
    return M.hit_matrix(RANKED, RELEVANT)


def test_hit_matrix(hits):
    matrix, n_relevant = hits
    assert matrix.tolist() == [[True, False, True, False], [False, False, True, False], [False] * 4]
    assert n_relevant.tolist() == [3, 1, 0]


def test_hit_matrix_ignores_padding_and_duplicates():
    matrix, n_relevant = M.hit_matrix(np.array([[-1, 0]]), [np.array([0, 0])])
    assert matrix.tolist() == [[False, True]] and n_relevant.tolist() == [1]


def test_precision_divides_by_k(hits):
    matrix, _ = hits
    np.testing.assert_allclose(M.precision_at_k(matrix, 3), [2 / 3, 1 / 3, 0])
    np.testing.assert_allclose(M.precision_at_k(matrix, 1), [1, 0, 0])
    # a list shorter than k (query 1 has 3 items) still divides by k
    np.testing.assert_allclose(M.precision_at_k(matrix, 4), [0.5, 0.25, 0])


def test_capped_precision_is_implicits(hits):
    matrix, n_relevant = hits
    # implicit divides by min(k, |relevant|): query 1 has one relevant item, found in top 3 -> 1
    np.testing.assert_allclose(M.capped_precision_at_k(matrix, n_relevant, 3), [2 / 3, 1, np.nan])


def test_recall(hits):
    matrix, n_relevant = hits
    np.testing.assert_allclose(M.recall_at_k(matrix, n_relevant, 2), [1 / 3, 0, np.nan])
    np.testing.assert_allclose(M.recall_at_k(matrix, n_relevant, 4), [2 / 3, 1, np.nan])


def test_hit_rate(hits):
    matrix, _ = hits
    np.testing.assert_allclose(M.hit_rate_at_k(matrix, 2), [1, 0, 0])
    np.testing.assert_allclose(M.hit_rate_at_k(matrix, 3), [1, 1, 0])


def test_average_precision(hits):
    matrix, n_relevant = hits
    # query 0 at k=4: hits at ranks 1 and 3 -> (1/1 + 2/3) / min(4, 3)
    # query 1 at k=4: hit at rank 3 -> (1/3) / 1
    np.testing.assert_allclose(
        M.average_precision_at_k(matrix, n_relevant, 4), [(1 + 2 / 3) / 3, 1 / 3, np.nan]
    )
    # k=1: only rank 1 counts, divided by min(1, n_relevant)
    np.testing.assert_allclose(M.average_precision_at_k(matrix, n_relevant, 1), [1, 0, np.nan])


def test_ndcg(hits):
    matrix, n_relevant = hits
    dcg0 = 1 / np.log2(2) + 1 / np.log2(4)
    ideal0 = 1 / np.log2(2) + 1 / np.log2(3) + 1 / np.log2(4)
    np.testing.assert_allclose(
        M.ndcg_at_k(matrix, n_relevant, 4), [dcg0 / ideal0, (1 / np.log2(4)) / 1, np.nan]
    )
    # k=2 for query 0: one hit at rank 1, ideal has two hits
    np.testing.assert_allclose(M.ndcg_at_k(matrix, n_relevant, 2)[0], 1 / (1 + 1 / np.log2(3)))


def test_ndcg_perfect_list_is_one():
    matrix, n_relevant = M.hit_matrix(np.array([[3, 1, 0]]), [np.array([1, 3])])
    np.testing.assert_allclose(M.ndcg_at_k(matrix, n_relevant, 3), [1.0])
    np.testing.assert_allclose(M.average_precision_at_k(matrix, n_relevant, 3), [1.0])


def test_reciprocal_rank(hits):
    matrix, _ = hits
    np.testing.assert_allclose(M.reciprocal_rank(matrix), [1, 1 / 3, 0])


def test_coverage():
    assert M.coverage_at_k(RANKED, 1, n_items=10) == pytest.approx(3 / 10)  # 4, 0, 1
    assert M.coverage_at_k(RANKED, 4, n_items=10) == pytest.approx(7 / 10)  # 0,1,2,3,4,5,7
    assert np.isnan(M.coverage_at_k(RANKED, 2, n_items=0))


def test_outcome_auc_counts_ties_half_and_excluded_as_bottom():
    scores = np.array([0.9, 0.2, 0.5, -np.inf, -np.inf, 0.4, 0.7])
    worked = np.array([True, True, False, False, True, True, True])
    query = np.array([0, 0, 0, 0, 1, 1, 2])
    # query 0: worked {0.9, 0.2} vs failed {0.5, -inf}: 0.9 beats both, 0.2 beats -inf -> 3/4
    # query 1: worked only -> NaN; query 2: worked only -> NaN; query 3: no item -> NaN
    np.testing.assert_allclose(
        M.outcome_auc(scores, worked, query, 4), [0.75, np.nan, np.nan, np.nan]
    )
    tie = M.outcome_auc(np.array([-np.inf, -np.inf]), np.array([True, False]), np.array([0, 0]), 1)
    np.testing.assert_allclose(tie, [0.5])


def test_normalised_rank_and_group_mean():
    values = M.normalised_rank(np.array([0, 2, 4, -1, 0]), np.array([5, 5, 5, 5, 1]))
    np.testing.assert_allclose(values, [0, 0.5, 1, 1, np.nan])
    np.testing.assert_allclose(
        M.group_mean(values, np.array([0, 0, 1, 1, 2]), 4), [0.25, 1, np.nan, np.nan]
    )


def test_mean_ignores_nan():
    assert M.mean(np.array([np.nan, 1.0, 0.0])) == 0.5
    assert np.isnan(M.mean(np.array([np.nan])))


def test_k_must_be_positive(hits):
    with pytest.raises(ValueError, match="positive"):
        M.precision_at_k(hits[0], 0)


def test_docstring_examples():
    failures, tried = doctest.testmod(M, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 10 and failures == 0


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 8))
def test_metrics_stay_in_unit_interval(seed, k):
    rng = np.random.default_rng(seed)
    n_items, n = 12, 6
    ranked = np.array([rng.permutation(n_items)[:8] for _ in range(n)])
    relevant = [rng.choice(n_items, rng.integers(0, 5), replace=False) for _ in range(n)]
    matrix, n_relevant = M.hit_matrix(ranked, relevant)
    for values in (
        M.precision_at_k(matrix, k),
        M.recall_at_k(matrix, n_relevant, k),
        M.hit_rate_at_k(matrix, k),
        M.average_precision_at_k(matrix, n_relevant, k),
        M.ndcg_at_k(matrix, n_relevant, k),
        M.reciprocal_rank(matrix),
    ):
        finite = values[~np.isnan(values)]
        assert ((finite >= 0) & (finite <= 1 + 1e-12)).all()
    # recall never decreases with k; precision * k == recall * n_relevant
    assert (
        np.nan_to_num(M.recall_at_k(matrix, n_relevant, k + 1))
        >= np.nan_to_num(M.recall_at_k(matrix, n_relevant, k))
    ).all()
    has = n_relevant > 0
    np.testing.assert_allclose(
        (M.precision_at_k(matrix, k) * k)[has],
        (M.recall_at_k(matrix, n_relevant, k) * n_relevant)[has],
    )
