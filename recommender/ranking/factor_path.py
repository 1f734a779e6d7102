"""The factor models' exact fast path for ranking many patients (see :func:`rank_factors`)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp

from ..utils.threads import single_threaded_blas
from . import topk
from .protocols import FactorScoringModel

#: Threads of the factor-model fast path (BLAS runs single-threaded inside each).
THREADS = (
    len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
)


#: Treatments (highest factor norm first) scored for every patient before the norm bound
#: decides who needs more (see :func:`rank_factors`).
PRUNE_FIRST = 1024


#: Scores (patients x allowed treatments) below which one thread is faster than a pool.
PARALLEL_CELLS = 1 << 20


def rank_factors(
    model: FactorScoringModel,
    patients: np.ndarray,
    codes: sp.csr_matrix,
    allowed: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of ``user_factors_[patients] @ item_factors_[allowed].T`` with ``codes`` excluded.

    Only allowed treatments are multiplied (a condition's candidates are a few of thousands),
    and of those only the ones that can matter: treatments are taken in decreasing factor norm,
    the first ``PRUNE_FIRST`` are scored for every patient, and a patient's k-th best score
    ``t`` among them bounds the rest (Cauchy-Schwarz: a treatment of norm ``n`` scores at most
    ``|u| n``); only patients for whom some later treatment could still reach ``t`` get a
    longer prefix scored (doubling). The result is exact, ties by lower treatment index.
    Blocks of ``SELECT_ROWS`` patients run on a thread pool (BLAS and numpy release the GIL).
    """
    n = len(patients)
    idx = np.full((n, k), -1, np.int64)
    out = np.full((n, k), -np.inf, np.float32)
    if not allowed.any():
        return idx, out
    items, norms, labels, position, prefixes = _norm_order(model, allowed, k)
    users = model.user_factors_

    def score(rows: np.ndarray, excluded_rows, excluded_at, width: int) -> np.ndarray:
        scores = users[patients[rows]] @ items[:width].T
        inside = excluded_at < width
        scores[excluded_rows[inside], excluded_at[inside]] = -np.inf
        return scores

    def block(start: int) -> None:
        stop = min(start + topk.SELECT_ROWS, n)
        rows = np.arange(start, stop)
        lo, hi = codes.indptr[start], codes.indptr[stop]
        ex_rows = np.repeat(np.arange(stop - start), np.diff(codes.indptr[start : stop + 1]))
        ex_at = position[codes.indices[lo:hi]]
        ex_rows, ex_at = ex_rows[ex_at >= 0], ex_at[ex_at >= 0]
        width = prefixes[0]
        topk.select_rows(
            score(rows, ex_rows, ex_at, width), k, idx[start:stop], out[start:stop], labels[:width]
        )
        if width == len(labels):
            return
        # Treatments beyond the prefix can reach the k-th best only if |u| n >= t (with room for
        # float rounding); -inf (fewer than k allowed so far) or t <= 0 needs everything.
        kth = out[start:stop, k - 1].astype(np.float64)
        size = (
            np.sqrt(
                np.einsum(
                    "ij,ij->i", users[patients[rows]], users[patients[rows]], dtype=np.float64
                )
            )
            * (1 + 1e-4)
            + 1e-30
        )
        limit = np.where(kth > 0, kth / size, -np.inf)
        needed = np.searchsorted(-norms, -limit, side="right")  # treatments with norm >= limit
        for wider in prefixes[1:]:
            local = np.flatnonzero(
                (needed > width) & (needed <= wider) | ((needed > width) & (wider == len(labels)))
            )
            if len(local):
                keep = np.isin(ex_rows, local)
                remap = np.full(stop - start, -1, np.int64)
                remap[local] = np.arange(len(local))
                more_idx = np.full((len(local), k), -1, np.int64)
                more_out = np.full((len(local), k), -np.inf, np.float32)
                topk.select_rows(
                    score(rows[local], remap[ex_rows[keep]], ex_at[keep], wider),
                    k,
                    more_idx,
                    more_out,
                    labels[:wider],
                )
                idx[start + local], out[start + local] = more_idx, more_out
            width = wider

    starts = range(0, n, topk.SELECT_ROWS)
    threads = min(THREADS, len(starts)) if n * len(labels) >= PARALLEL_CELLS else 1
    with single_threaded_blas():
        if threads == 1:
            for start in starts:
                block(start)
        else:
            list(_pool().map(block, starts))
    return idx, out


#: Prepared treatment orders kept per model (a condition's mask each; see :func:`_norm_order`).
ORDER_CACHE_ENTRIES = 256


def _norm_order(model: FactorScoringModel, allowed: np.ndarray, k: int):
    """The allowed treatments in decreasing factor norm, as :func:`rank_factors` scans them.

    Returns ``(items, norms, labels, position, prefixes)``: the factors (contiguous), norms and
    treatment indices in that order, each treatment's place in it (-1: not allowed) and the
    prefix widths scored in turn. Depends only on the factors, ``allowed`` and ``k``, so it is
    kept on the model (a batch job ranks thousands of blocks with the same few masks).
    """
    cache = vars(model).setdefault("_norm_orders", {})
    factors = model.item_factors_
    key = (id(factors), factors.shape, allowed.tobytes(), k)
    if key in cache:
        return cache[key][1:]
    columns = np.flatnonzero(allowed)
    items = factors[columns]
    norms = np.sqrt(np.einsum("ij,ij->i", items, items, dtype=np.float64))
    prefixes: list[int] = []
    width = max(PRUNE_FIRST, 4 * k)
    while 2 * width < len(columns) or (prefixes and width < len(columns)):
        prefixes.append(width)
        width *= 2
    prefixes.append(len(columns))  # a single prefix: no pruning (too few treatments to gain)
    order = np.argsort(-norms, kind="stable") if len(prefixes) > 1 else np.arange(len(columns))
    items, norms, labels = np.ascontiguousarray(items[order]), norms[order], columns[order]
    position = np.full(len(allowed), -1, np.int64)
    position[labels] = np.arange(len(labels))  # place of each treatment in norm order
    if len(cache) >= ORDER_CACHE_ENTRIES:
        cache.pop(next(iter(cache)))  # the oldest
    # the factors are held with the entry, so their id cannot be reused while it is cached
    cache[key] = (factors, items, norms, labels, position, prefixes)
    return items, norms, labels, position, prefixes


_POOL: list = []


def _pool() -> ThreadPoolExecutor:
    """The process's ranking threads (started once; a forked child starts its own)."""
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(THREADS, thread_name_prefix="recommender-rank"))
    return _POOL[0]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_POOL.clear)  # a parent's threads do not exist in a child
