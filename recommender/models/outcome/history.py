"""The patient's outcome history as collaborative-filtering factors (explicit matrix factorisation).

Each recorded outcome is a rating: +1 when the treatment worked, -1 when it failed or harmed
(the sign of the Dataset's signed confidence). The model is ``r_pt ~ b_t + u_p . y_t`` fitted on
the *recorded* entries only, by alternating ridge regressions. That is the point of doing it here
rather than with implicit's ALS: implicit-feedback ALS reads every untried treatment as a weak
"no", so its factors mix "what was prescribed" into "what worked"; a model of outcomes must learn
from outcomes alone.

A history row (what a patient had before a decision) becomes ``u`` by the same ridge regression
with the treatment factors fixed (fold-in), so a patient at a past decision, a known patient now
and a new patient are encoded alike. ``u . y_t + b_t`` is the collaborative score of therapy t.
Every solve is a batch of small ``d x d`` systems in numpy (chunked, so memory stays bounded).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ...data.dataset import Dataset

#: Ratings folded in per chunk (bounds the (chunk, d, d) temporaries).
CHUNK_ENTRIES = 1 << 18


def outcome_ratings(dataset: Dataset) -> sp.csr_matrix:
    """CSR float32 (n_p, n_t): +1 / -1 for each treatment's latest outcome (worked / not)."""
    signed = dataset.matrix[:, : dataset.n_treatments].tocsr()
    return sign_ratings(signed)


def sign_ratings(signed: sp.csr_matrix) -> sp.csr_matrix:
    """+1 / -1 ratings of signed confidences (the CSR pattern kept)."""
    out = signed.astype(np.float32, copy=True)
    out.data = np.where(out.data > 0, 1.0, -1.0).astype(np.float32)
    return out


def fit_item_factors(
    dataset: Dataset, factors: int, regularization: float, iterations: int, random_state: int | None
) -> np.ndarray:
    """Treatment factors float32 (n_t, factors + 1): ``y_t`` and, last, the bias ``b_t``."""
    ratings = outcome_ratings(dataset)
    n_p, n_t = ratings.shape
    rng = np.random.default_rng(random_state)
    items = np.zeros((n_t, factors + 1))
    items[:, :factors] = rng.normal(0, 0.1, (n_t, factors))
    counts = np.bincount(ratings.indices, minlength=n_t)
    sums = np.bincount(ratings.indices, weights=ratings.data, minlength=n_t)
    items[:, factors] = sums / np.maximum(counts + regularization, 1e-9)
    by_item = ratings.T.tocsr()
    users = np.zeros((n_p, factors))
    for _ in range(iterations):
        users = fold_in(items, ratings, regularization, signed=False)
        items = _item_step(users, by_item, regularization)
    return items.astype(np.float32)


def fold_in(
    items: np.ndarray, rows: sp.csr_matrix, regularization: float, signed: bool = True
) -> np.ndarray:
    """Patient factors float32 (n, d) of history rows CSR (n, n_t) with the treatment factors
    ``items`` (n_t, d + 1) fixed: the ridge solution of ``r - b = u . y`` on each row's entries
    (an empty row gives zeros). ``signed``: the rows hold signed confidences, read by sign."""
    rows = sign_ratings(rows.tocsr()) if signed else rows.tocsr()
    n, d = rows.shape[0], items.shape[1] - 1
    out = np.zeros((n, d), np.float32)
    if d == 0 or rows.nnz == 0:
        return out
    y, b = items[:, :d].astype(np.float64), items[:, d].astype(np.float64)
    counts = np.diff(rows.indptr)
    filled = np.flatnonzero(counts)
    start = 0
    while start < len(filled):  # chunks of users holding about CHUNK_ENTRIES ratings
        ends = np.cumsum(counts[filled[start:]])
        stop = start + max(1, int(np.searchsorted(ends, CHUNK_ENTRIES)))
        chunk = filled[start:stop]
        lo, hi = rows.indptr[chunk[0]], rows.indptr[chunk[-1] + 1]
        cols, vals = rows.indices[lo:hi], rows.data[lo:hi].astype(np.float64)
        starts = np.r_[0, np.cumsum(counts[chunk])[:-1]]
        entries = y[cols]
        gram = np.add.reduceat(entries[:, :, None] * entries[:, None, :], starts, axis=0)
        rhs = np.add.reduceat(entries * (vals - b[cols])[:, None], starts, axis=0)
        gram += regularization * np.eye(d)
        out[chunk] = np.linalg.solve(gram, rhs[:, :, None])[:, :, 0]
        start = stop
    return out


def _item_step(users: np.ndarray, by_item: sp.csr_matrix, regularization: float) -> np.ndarray:
    """Treatment factors and biases (n_t, d + 1) given the patient factors (ridge per item;
    the bias is not penalised beyond a tiny ridge)."""
    n_t, d = by_item.shape[0], users.shape[1]
    augmented = np.hstack([users.astype(np.float64), np.ones((len(users), 1))])
    penalty = np.diag(np.r_[np.full(d, regularization), 1e-3])
    items = np.zeros((n_t, d + 1))
    owner = np.repeat(np.arange(n_t), np.diff(by_item.indptr))
    gram = np.zeros((n_t, d + 1, d + 1))
    rhs = np.zeros((n_t, d + 1))
    for lo in range(0, by_item.nnz, CHUNK_ENTRIES):  # entries sorted by item: sum runs
        hi = min(lo + CHUNK_ENTRIES, by_item.nnz)
        entries = augmented[by_item.indices[lo:hi]]
        who = owner[lo:hi]
        starts = np.flatnonzero(np.r_[True, who[1:] != who[:-1]])
        gram[who[starts]] += np.add.reduceat(
            entries[:, :, None] * entries[:, None, :], starts, axis=0
        )
        rhs[who[starts]] += np.add.reduceat(entries * by_item.data[lo:hi, None], starts, axis=0)
    if by_item.nnz == 0:
        return items
    gram += penalty
    items = np.linalg.solve(gram, rhs[:, :, None])[:, :, 0]
    return items
