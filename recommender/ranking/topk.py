"""Scores to top-k: the exact selection kernel and the masks that make exclusions a guarantee.

An excluded treatment's score becomes -inf before the selection, so it can never be chosen, and
slots beyond the allowed treatments come back empty (index -1), never filled with a forbidden
one (unlike implicit's ``filter_items``, which only lowers scores).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..data.dataset import Dataset
from ..exceptions import ParameterError
from . import safety

#: Rows selected at a time: a (256, 10k) float32 block stays in cache while it is reduced.
SELECT_ROWS = 256


#: Column groups per row whose maxima bound the k-th best score (see :func:`top_k`).
SELECT_GROUPS = 128


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` columns per row of ``scores`` (n, m); -inf (and NaN, +inf) mean "not allowed".

    Returns indices int64 (n, k) and scores float32 (n, k), best first, ties by lower index
    (also at the cut); slots beyond the allowed columns hold index -1 and score -inf.

    Exact and fast for k << m: the columns are folded into about ``SELECT_GROUPS`` groups by
    pairwise maxima; the k-th largest group maximum ``t`` is a lower bound of the k-th best
    score (k groups each hold an entry >= t), so only entries >= t are sorted.
    """
    scores = np.asarray(scores)
    if scores.dtype.kind != "f":
        scores = scores.astype(np.float64)
    n, m = scores.shape
    idx = np.full((n, k), -1, np.int64)
    out = np.full((n, k), -np.inf, np.float32)
    if m == 0 or k == 0:
        return idx, out
    for start in range(0, n, SELECT_ROWS):
        stop = min(start + SELECT_ROWS, n)
        select_rows(np.ascontiguousarray(scores[start:stop]), k, idx[start:stop], out[start:stop])
    return idx, out


def select_rows(
    scores: np.ndarray, k: int, idx: np.ndarray, out: np.ndarray, labels: np.ndarray | None = None
) -> None:
    """:func:`top_k` of one C-contiguous block of rows, written into ``idx`` and ``out``.

    With ``labels`` (m,) column ``j`` is reported as ``labels[j]`` and ties are broken by the
    lower label instead of the lower column.
    """
    r, m = scores.shape
    bound = _group_maxima(scores, max(SELECT_GROUPS, 2 * k))
    if np.isnan(bound).any() or np.isposinf(bound).any():  # maxima propagate NaN and +inf
        scores = np.where(np.isfinite(scores), scores, -np.inf).astype(scores.dtype)
        bound = _group_maxima(scores, max(SELECT_GROUPS, 2 * k))
    g = bound.shape[1]
    kk = min(k, g)
    threshold = np.partition(bound, g - kk, axis=1)[:, g - kk]
    np.maximum(threshold, -np.finfo(scores.dtype).max, out=threshold)  # -inf is never a candidate
    flat = np.flatnonzero(scores >= threshold[:, None])
    rows, cols = np.divmod(flat, m)
    values = scores.ravel()[flat]
    if labels is not None:
        cols = labels[cols]
    order = np.lexsort((cols, -values, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    counts = np.bincount(rows, minlength=r)
    rank = np.arange(len(rows)) - (np.cumsum(counts) - counts)[rows]
    keep = rank < k
    idx[rows[keep], rank[keep]] = cols[keep]
    out[rows[keep], rank[keep]] = values[keep]


def _group_maxima(scores: np.ndarray, groups: int) -> np.ndarray:
    """Maxima (r, g) of a partition of each row's columns into g groups, groups <= g < 2 * groups
    (the row itself when it is shorter than ``2 * groups``)."""
    width = scores.shape[1]
    if width < 2 * groups:
        return scores
    half = width // 2
    folded = np.maximum(scores[:, :half], scores[:, half : 2 * half])
    if width % 2:
        np.maximum(folded[:, 0], scores[:, 2 * half], out=folded[:, 0])
    width = half
    while width >= 2 * groups:
        half = width // 2
        np.maximum(folded[:, :half], folded[:, half : 2 * half], out=folded[:, :half])
        if width % 2:
            np.maximum(folded[:, 0], folded[:, 2 * half], out=folded[:, 0])
        width = half
    return folded[:, :width]


def mask_scores(
    dataset: Dataset, scores: np.ndarray, codes: sp.csr_matrix, candidates: np.ndarray | None
) -> np.ndarray:
    """Set excluded, under-evidenced, non-candidate and NaN entries of ``scores`` to -inf (in place)."""
    scores[~np.isfinite(scores)] = -np.inf
    rows = np.repeat(np.arange(codes.shape[0]), np.diff(codes.indptr))
    scores[rows, codes.indices] = -np.inf
    scores[:, ~allowed_columns(dataset, candidates)] = -np.inf
    return scores


def allowed_columns(dataset: Dataset, candidates: np.ndarray | None) -> np.ndarray:
    """Boolean (n_t,): treatments anyone may be offered (enough evidence, among ``candidates``)."""
    allowed = ~safety.low_evidence(dataset)
    if candidates is not None:
        among = np.zeros(len(allowed), bool)
        among[candidates] = True
        allowed &= among
    return allowed


def check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ParameterError(f"k must be a positive int; got {k!r}")
    return int(k)
