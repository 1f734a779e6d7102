"""Cheap row access to CSR matrices, for the one-patient path that runs on every request.

``matrix[[i]]`` costs tens of microseconds in scipy (index validation, dtype checks, a
structure check of the result); a service request takes a dozen such rows, which was most of
its time. A single row of a CSR matrix is just two slices of ``indices``/``data`` and a
two-entry ``indptr``, so :func:`row` builds that result directly (copies of the slices, as
scipy's own indexing returns) and :func:`row_arrays` returns the slices themselves as views.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp


def row_arrays(matrix: sp.csr_matrix, i: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, data) of row ``i`` of a canonical CSR ``matrix``, as views (shape (nnz_i,))."""
    start, stop = matrix.indptr[i], matrix.indptr[i + 1]
    return matrix.indices[start:stop], matrix.data[start:stop]


def lookup(indices: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each of ``wanted`` stands in the sorted ``indices`` (a CSR row's columns).

    Returns ``(positions, found)``, both shaped like ``wanted``: ``found`` says whether the
    value is present, and then ``indices[positions]`` is it (elsewhere ``positions`` is any
    valid index, or 0 for an empty ``indices``).
    """
    wanted = np.asarray(wanted)
    if not len(indices):
        return np.zeros(wanted.shape, np.intp), np.zeros(wanted.shape, bool)
    positions = np.minimum(np.searchsorted(indices, wanted), len(indices) - 1)
    return positions, indices[positions] == wanted


def _assemble(
    data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int]
) -> sp.csr_matrix:
    """CSR from trusted, canonical arrays without scipy's validation (same attributes)."""
    result = sp.csr_matrix.__new__(sp.csr_matrix)
    result.data, result.indices, result.indptr = data, indices, indptr
    result._shape = shape
    result.maxprint = _MAXPRINT
    return result


def _constructor_matches() -> bool:
    """Whether this scipy's csr_matrix holds exactly the attributes :func:`_assemble` sets.

    Checked once at import: with another scipy layout the public constructor is used instead.
    """
    reference = sp.csr_matrix(
        (np.ones(1, np.float32), np.zeros(1, np.int32), np.array([0, 1], np.int32)), shape=(1, 3)
    )
    try:
        fast = _assemble(reference.data, reference.indices, reference.indptr, (1, 3))
        return (
            set(vars(fast)) == set(vars(reference))
            and fast.nnz == 1
            and (fast != reference).nnz == 0
            and fast.has_canonical_format
        )
    except Exception:  # noqa: BLE001 - any surprise means: use the public constructor
        return False


_MAXPRINT = sp.csr_matrix((1, 1)).maxprint
_FAST = _constructor_matches()


def row(matrix: sp.csr_matrix, i: int) -> sp.csr_matrix:
    """Row ``i`` of a canonical CSR ``matrix`` as a (1, n_columns) CSR; equal to ``matrix[[i]]``.

    The arrays are copies (a row is a few entries), so the result may be modified freely and
    is writeable even when ``matrix`` is memory-mapped read-only.
    """
    indices, data = (part.copy() for part in row_arrays(matrix, i))
    indptr = np.array([0, len(indices)], dtype=matrix.indptr.dtype)
    shape = (1, matrix.shape[1])
    if _FAST:
        return _assemble(data, indices, indptr, shape)
    return sp.csr_matrix((data, indices, indptr), shape=shape, copy=False)


def single_row(indices: Sequence[int] | np.ndarray, data: np.ndarray, width: int) -> sp.csr_matrix:
    """(1, ``width``) CSR holding ``data`` at ``indices`` (sorted, unique: not checked)."""
    indices = np.asarray(indices, dtype=np.int32)
    indptr = np.array([0, len(indices)], dtype=np.int32)
    if _FAST:
        return _assemble(np.asarray(data), indices, indptr, (1, width))
    return sp.csr_matrix((data, indices, indptr), shape=(1, width))


def pattern(indices: np.ndarray, width: int) -> sp.csr_matrix:
    """(1, ``width``) boolean CSR with True at ``indices`` (any order, repeats allowed)."""
    indices = np.unique(np.asarray(indices, dtype=np.int32))
    return single_row(indices, np.ones(len(indices), bool), width)


def take_rows(matrix: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """``matrix[rows]`` for an index array; the fast :func:`row` when there is one row."""
    if len(rows) == 1:
        return row(matrix, int(rows[0]))
    return matrix[rows]
