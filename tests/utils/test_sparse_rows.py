"""The one-patient fast paths equal the slow, obviously right ones."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from recommender.data.dataset import Dataset
from recommender.data.patient import Query
from recommender.models import make_model
from recommender.utils import sparse_rows
from tests.cohorts import checkerboard


def _equal(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    return (
        a.shape == b.shape
        and a.dtype == b.dtype
        and np.array_equal(a.indptr, b.indptr)
        and np.array_equal(a.indices, b.indices)
        and np.array_equal(a.data, b.data)
    )


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.floats(0, 1), st.data())
def test_row_equals_scipy_indexing(n_rows, n_cols, density, data):
    matrix = sp.random(
        n_rows,
        n_cols,
        density=density,
        format="csr",
        dtype=np.float32,
        random_state=data.draw(st.integers(0, 1000)),
    )
    i = data.draw(st.integers(0, n_rows - 1))
    fast = sparse_rows.row(matrix, i)
    assert _equal(fast, matrix[[i]])
    assert (fast.toarray() == matrix[[i]].toarray()).all()
    fast.data[:] = 7  # a copy: the source is untouched
    assert not (matrix.data == 7).any()


def test_row_of_a_read_only_matrix_is_writeable():
    matrix = sp.csr_matrix(np.eye(4, dtype=np.float32))
    for part in (matrix.data, matrix.indices, matrix.indptr):
        part.flags.writeable = False
    row = sparse_rows.row(matrix, 2)
    row.data[0] = 3.0
    assert matrix[2, 2] == 1.0 and row.toarray().tolist() == [[0, 0, 3.0, 0]]


def test_pattern_sorts_and_deduplicates():
    row = sparse_rows.pattern(np.array([5, 1, 5, 3]), 8)
    assert row.indices.tolist() == [1, 3, 5] and row.dtype == bool and row.shape == (1, 8)
    assert row.has_canonical_format and row.nnz == 3
    assert sparse_rows.pattern(np.array([], int), 4).nnz == 0


def test_take_rows_many_is_scipy_indexing():
    matrix = sp.random(10, 6, density=0.4, format="csr", random_state=3)
    rows = np.array([4, 1, 4])
    assert _equal(sparse_rows.take_rows(matrix, rows), matrix[rows])


@pytest.fixture(scope="module")
def als():
    tables, _ = checkerboard()
    return make_model("als", factors=8, random_state=0).fit(Dataset.from_tables(tables))


def test_als_contributions_equal_implicit_explain(als):
    """The vectorised decomposition gives implicit's own numbers, in its order."""
    dataset = als.dataset_
    solver = als._solver()
    checked = 0
    for patient in range(0, len(dataset.patients), 37):
        query = Query.known(dataset, np.array([patient]), np.array([-1]))
        treatments = np.arange(dataset.n_treatments)
        ours = als.contributions(query, treatments)
        for treatment, pairs in zip(treatments, ours):
            _, expected, _ = solver.explain(0, query.rows, int(treatment), N=query.rows.nnz or 1)
            values = [v for _, v in pairs]
            assert values == sorted(values, reverse=True)
            assert dict(pairs) == pytest.approx(
                {int(c): float(v) for c, v in expected}, rel=1e-4, abs=1e-6
            )  # float32 sums in another order
            checked += 1
    assert checked > 10


def test_als_strongest_contributions_equal_the_generic_choice(als):
    """ALS picks its strongest contributions in numpy; the result is the generic
    per-pair choice (magnitude order, ties as in contributions, small ones dropped)."""
    from recommender.models.base import Recommender
    from recommender.ranking.contributions import strongest

    dataset = als.dataset_
    treatments = np.arange(dataset.n_treatments)
    for patient in range(0, len(dataset.patients), 7):
        query = Query.known(dataset, np.array([patient]), np.array([-1]))
        for limit in (1, 3, 5, 50):
            assert als.strongest_contributions(
                query, treatments, limit
            ) == Recommender.strongest_contributions(als, query, treatments, limit)
    pairs = [(1, 0.5), (2, -0.5), (3, 1e-7), (4, -2.0), (5, 0.5)]
    assert strongest(pairs, 3) == [(4, -2.0), (1, 0.5), (2, -0.5)]


def test_als_contributions_fall_back_to_the_full_solve(als, monkeypatch):
    """When the small system is singular in floating point, the d x d solve gives the same."""
    from recommender.models import als as als_module

    dataset = als.dataset_
    query = Query.known(dataset, np.array([3]), np.array([-1]))
    treatments = np.arange(dataset.n_treatments)
    expected = als.contributions(query, treatments)
    real = als_module.lapack.dgesv
    monkeypatch.setattr(
        als_module.lapack, "dgesv", lambda a, b: (*real(a, b)[:3], 1)
    )  # report "singular"
    fallback = als.contributions(query, treatments)
    for ours, theirs in zip(fallback, expected):
        assert [c for c, _ in ours] == [c for c, _ in theirs]
        assert [v for _, v in ours] == pytest.approx([v for _, v in theirs], rel=1e-4, abs=1e-6)


def test_lookup_finds_present_values_only():
    indices = np.array([2, 5, 9])
    positions, found = sparse_rows.lookup(indices, np.array([9, 1, 5, 10, 2]))
    assert found.tolist() == [True, False, True, False, True]
    assert indices[positions[found]].tolist() == [9, 5, 2]
    positions, found = sparse_rows.lookup(np.array([], int), np.array([3, 4]))
    assert not found.any() and positions.tolist() == [0, 0]
