"""Ranking metrics, per query, as pure numpy functions.

Most functions read a boolean *hit matrix* ``hits`` of shape (n_queries, L): ``hits[q, j]`` is
True when the item at 0-based position ``j`` of query ``q``'s ranked list is relevant. Lists
shorter than ``L`` (because of exclusions) are padded with False. ``n_relevant`` (n_queries,)
counts every relevant item of the query, including ones that could not be ranked, so they
lower recall. :func:`hit_matrix` builds both from ranked indices and relevant sets.

Every metric returns a float64 array of shape (n_queries,); :func:`mean` averages it, ignoring
NaN (a query for which the metric is undefined, e.g. recall with no relevant item).

Two outcome-aware metrics read the held-out outcomes themselves, as flat arrays with a query id
per item: :func:`outcome_auc` (do treatments that worked score above ones that did not?) and
:func:`normalised_rank` with :func:`group_mean` (how low are harmful treatments ranked?).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def hit_matrix(ranked: np.ndarray, relevant: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Hit matrix and relevant counts from ranked item indices and relevant item sets.

    Parameters
    ----------
    ranked : int array, shape (n, L)
        Item indices best first; -1 marks an empty slot.
    relevant : sequence of n int arrays
        The relevant items of each query (duplicates are counted once).

    Returns
    -------
    hits : bool array, shape (n, L)
    n_relevant : int64 array, shape (n,)

    Examples
    --------
    >>> hits, n_rel = hit_matrix(np.array([[3, 1, -1], [0, 2, 1]]), [np.array([1, 5]), np.array([])])
    >>> hits
    array([[False,  True, False],
           [False, False, False]])
    >>> n_rel
    array([2, 0])
    """
    ranked = np.asarray(ranked, np.int64)
    sets = [np.unique(np.asarray(r, np.int64)) for r in relevant]
    n_relevant = np.array([len(s) for s in sets], np.int64)
    width = int(max(ranked.max(initial=-1), max((s.max() for s in sets if len(s)), default=-1))) + 2
    query = np.repeat(np.arange(len(sets)), n_relevant)
    keys = query * width + np.concatenate(sets + [np.zeros(0, np.int64)])
    ranked_keys = np.arange(len(ranked))[:, None] * width + ranked
    hits = np.isin(ranked_keys, keys) & (ranked >= 0)
    return hits, n_relevant


def _head(hits: np.ndarray, k: int) -> np.ndarray:
    if k < 1:
        raise ValueError(f"k must be a positive int; got {k!r}")
    return np.asarray(hits, bool)[:, :k]


def precision_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    """Relevant items among the first ``k``, divided by ``k`` (true precision).

    implicit's ``precision_at_k`` divides by ``min(k, n_relevant)`` instead, which makes it a
    recall-like number that reaches 1 with one relevant item at rank 1; see
    :func:`capped_precision_at_k`. A list shorter than ``k`` still divides by ``k``.

    Examples
    --------
    >>> precision_at_k(np.array([[True, False, True], [False, False, False]]), k=2)
    array([0.5, 0. ])
    """
    return _head(hits, k).sum(axis=1) / float(k)


def capped_precision_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """implicit's "precision": hits in the first ``k`` over ``min(k, n_relevant)``; NaN if none.

    Examples
    --------
    >>> capped_precision_at_k(np.array([[True, False, False]]), np.array([1]), k=3)
    array([1.])
    """
    return _safe_divide(_head(hits, k).sum(axis=1), np.minimum(k, n_relevant))


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Share of the relevant items found in the first ``k``; NaN for a query without any.

    Examples
    --------
    >>> recall_at_k(np.array([[True, False, True], [False, True, False]]), np.array([4, 0]), k=3)
    array([0.5, nan])
    """
    return _safe_divide(_head(hits, k).sum(axis=1), n_relevant)


def hit_rate_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    """1.0 when any of the first ``k`` items is relevant, else 0.0.

    Examples
    --------
    >>> hit_rate_at_k(np.array([[False, True], [False, False]]), k=2)
    array([1., 0.])
    """
    return _head(hits, k).any(axis=1).astype(np.float64)


def average_precision_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Average precision at ``k`` (its mean over queries is MAP@k); NaN without relevant items.

    ``sum_j precision@(j+1) * hits[j]`` over the first ``k`` positions, divided by
    ``min(k, n_relevant)`` so that a perfect list scores 1.

    Examples
    --------
    Relevant items at ranks 1 and 3 of 3, two relevant in total: (1/1 + 2/3) / 2.

    >>> average_precision_at_k(np.array([[True, False, True]]), np.array([2]), k=3).round(4)
    array([0.8333])
    """
    head = _head(hits, k)
    cumulative = np.cumsum(head, axis=1) / np.arange(1, head.shape[1] + 1)
    return _safe_divide((cumulative * head).sum(axis=1), np.minimum(k, n_relevant))


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Normalised discounted cumulative gain at ``k`` with binary gains; NaN without relevant items.

    DCG = ``sum_j hits[j] / log2(j + 2)``; the ideal DCG puts ``min(k, n_relevant)`` hits first.

    Examples
    --------
    One relevant item, found at rank 2: 1 / log2(3).

    >>> ndcg_at_k(np.array([[False, True, False]]), np.array([1]), k=3).round(4)
    array([0.6309])
    """
    head = _head(hits, k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (head * discounts[: head.shape[1]]).sum(axis=1)
    ideal = np.cumsum(discounts)[np.clip(np.minimum(k, n_relevant) - 1, 0, None)]
    return _safe_divide(dcg, np.where(n_relevant > 0, ideal, 0.0))


def reciprocal_rank(hits: np.ndarray) -> np.ndarray:
    """1 / (1-based rank of the first relevant item in the list), 0 when none is in it.

    The mean over queries is MRR; it is truncated at the list length ``L``.

    Examples
    --------
    >>> reciprocal_rank(np.array([[False, False, True], [True, True, False], [False, False, False]]))
    array([0.33333333, 1.        , 0.        ])
    """
    hits = np.asarray(hits, bool)
    first = hits.argmax(axis=1)
    return np.where(hits.any(axis=1), 1.0 / (first + 1), 0.0)


def coverage_at_k(ranked: np.ndarray, k: int, n_items: int) -> float:
    """Share of the ``n_items`` catalogue that appears in at least one top-``k`` list.

    Parameters
    ----------
    ranked : int array, shape (n, L)
        Item indices best first, -1 for empty slots.

    Examples
    --------
    >>> coverage_at_k(np.array([[0, 1, 2], [0, 3, -1]]), k=2, n_items=5)
    0.6
    """
    head = np.asarray(ranked)[:, :k]
    return float(len(np.unique(head[head >= 0])) / n_items) if n_items else float("nan")


def outcome_auc(
    scores: np.ndarray, worked: np.ndarray, query: np.ndarray, n_queries: int
) -> np.ndarray:
    """Per query, the probability that a held-out treatment that worked outscores one that did not.

    Parameters
    ----------
    scores : float array, shape (m,)
        Score of each held-out (query, treatment) item after the exclusions, -inf when the
        ranker would never offer it (such items tie with each other at the bottom).
    worked : bool array, shape (m,)
        Whether the item's outcome counts as worked; the others failed or harmed.
    query : int array, shape (m,)
        Query index of each item, in ``[0, n_queries)``.

    Returns
    -------
    float64 array, shape (n_queries,)
        Pairwise AUC with ties counted one half; NaN for a query lacking either kind.

    Examples
    --------
    Query 0: the worked item (0.9) beats one failure (0.1) and ties another (0.9): 0.75.

    >>> outcome_auc(np.array([0.9, 0.1, 0.9, 0.3]), np.array([True, False, False, True]),
    ...             np.array([0, 0, 0, 1]), n_queries=2)
    array([0.75,  nan])
    """
    scores, worked = np.asarray(scores, np.float64), np.asarray(worked, bool)
    query = np.asarray(query, np.int64)
    result = np.full(n_queries, np.nan)
    order = np.argsort(query, kind="stable")
    bounds = np.r_[0, np.flatnonzero(np.diff(query[order])) + 1, len(order)]
    for start, end in zip(bounds[:-1], bounds[1:]):
        items = order[start:end]
        positive, negative = scores[items[worked[items]]], scores[items[~worked[items]]]
        if len(positive) and len(negative):
            result[query[items[0]]] = _pairwise_auc(positive, negative)
    return result


def _pairwise_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Share of (positive, negative) pairs ordered correctly, ties counted one half."""
    above = (positive[:, None] > negative[None, :]).sum()
    ties = (positive[:, None] == negative[None, :]).sum()
    return float((above + 0.5 * ties) / (len(positive) * len(negative)))


def normalised_rank(ranks: np.ndarray, n_allowed: np.ndarray) -> np.ndarray:
    """Position of each item among its query's allowed treatments: 0 = first, 1 = last.

    Parameters
    ----------
    ranks : int array, shape (m,)
        0-based rank of each item among its query's allowed treatments, -1 when the item is
        excluded or not a candidate (it is then never offered and counts as 1.0).
    n_allowed : int array, shape (m,)
        Number of allowed treatments of the item's query.

    Returns
    -------
    float64 array, shape (m,)
        ``rank / (n_allowed - 1)``; NaN for the only allowed item of a query, whose position
        says nothing about the ordering. For harmful treatments a higher mean is safer; a random
        ordering gives 0.5 in expectation.

    Examples
    --------
    >>> normalised_rank(np.array([0, 3, -1, 0]), np.array([5, 5, 5, 1]))
    array([0.  , 0.75, 1.  ,  nan])
    """
    ranks, n_allowed = np.asarray(ranks), np.asarray(n_allowed)
    spread = _safe_divide(ranks, n_allowed - 1)
    return np.where(ranks >= 0, spread, 1.0)


def group_mean(values: np.ndarray, query: np.ndarray, n_queries: int) -> np.ndarray:
    """Mean of ``values`` (m,) per query index ``query`` (m,), ignoring NaN values.

    NaN for a query without a (non-NaN) value.

    Examples
    --------
    >>> group_mean(np.array([1.0, 0.5, np.nan, 0.25]), np.array([0, 0, 0, 2]), n_queries=3)
    array([0.75,  nan, 0.25])
    """
    values, query = np.asarray(values, np.float64), np.asarray(query, np.int64)
    present = ~np.isnan(values)
    totals = np.bincount(query[present], weights=values[present], minlength=n_queries)
    counts = np.bincount(query[present], minlength=n_queries)
    return _safe_divide(totals, counts)


def mean(values: np.ndarray) -> float:
    """Mean ignoring NaN; NaN when every value is NaN (or there is none).

    Examples
    --------
    >>> mean(np.array([1.0, np.nan, 0.0]))
    0.5
    """
    values = np.asarray(values, np.float64)
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if len(finite) else float("nan")


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = np.asarray(numerator, np.float64)
    denominator = np.asarray(denominator, np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out
