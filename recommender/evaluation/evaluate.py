"""Offline evaluation: fit models on a training split and rank the held-out treatments.

Queries are groups of held-out outcome rows sharing (patient_id, condition_id)
(:mod:`recommender.evaluation.queries`).

Ranking goes through :func:`recommender.ranking.rank_patients`, so the safety exclusions
(previous harm, contraindication, already tried in ``train``) apply exactly as in production.
Held-out treatments are not in the patient's training history (see :mod:`recommender.data.splits`),
so they stay rankable unless a safety rule removes them.

Relevance: a held-out treatment is relevant when its outcome worked (``dataset.policy.worked``
on the latest held-out outcome of that treatment in the query). Ranking metrics (precision,
recall, hit, MAP, NDCG at each k, and MRR over the whole allowed list) are averaged over the
queries with at least one relevant treatment. Two outcome-aware metrics use every held-out
outcome: ``outcome_auc`` (worked vs failed or harmed, by score after exclusions) and
``harm_rank`` (mean normalised rank of harmful held-out treatments, 0 = first, 1 = last or
excluded; higher is safer, 0.5 is a random order; a treatment that was the only one allowed
does not count). ``coverage@k`` is the share of all treatments in some top-k list.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..columns import Columns as C
from ..data.dataset import Dataset
from ..data.policies import ConfidencePolicy, SafetyPolicy
from ..data.side_info import SideInfo
from ..data.splits import Split
from ..data.tables import CohortTables
from ..exceptions import ParameterError
from ..models import Recommender
from ..ranking import rank_patients
from ..utils.jsonable import jsonable
from . import metrics
from .planted import PlantedResult
from .queries import Queries, build_queries, condition_batches
from .spec import ModelSpec, check_ks, named_models, tqdm_disable
from .truth import TruthResult

log = logging.getLogger(__name__)

DEFAULT_KS = (1, 3, 5, 10, 20)


RANKING_METRICS = ("precision", "recall", "hit", "map", "ndcg")


@dataclass
class ModelResult:
    """One model's evaluation.

    Attributes
    ----------
    name : str
    params : dict
        Hyperparameters of the evaluated model.
    fit_seconds, rank_seconds : float
        Wall time of fitting and of ranking every query.
    queries : DataFrame
        One row per query: patient_id, condition_id, n_heldout, n_relevant, n_allowed, the
        ranking metrics as ``"<metric>@<k>"`` for each k, ``rr``, ``outcome_auc``, ``harm_rank``.
    summary : dict of str -> float
        Means over queries (see the module docstring), ``coverage@<k>`` and query counts.
    model : Recommender
        The fitted model.
    """

    name: str
    params: dict
    fit_seconds: float
    rank_seconds: float
    queries: pd.DataFrame
    summary: dict
    model: Recommender = field(repr=False)

    def to_dict(self) -> dict:
        return {
            "params": jsonable(self.params),
            "fit_seconds": round(self.fit_seconds, 4),
            "rank_seconds": round(self.rank_seconds, 4),
            "summary": jsonable(self.summary),
        }


@dataclass
class EvaluationResult:
    """Every model's evaluation on one split, at the cut-off ``k`` and along ``ks``."""

    k: int
    ks: tuple[int, ...]
    models: dict[str, ModelResult]
    split: dict | None = None
    planted: PlantedResult | None = None
    truth: TruthResult | None = None

    def summary_frame(self) -> pd.DataFrame:
        """One row per model: the metrics at ``k``, MRR, outcome AUC, harm rank and timings."""
        names = [f"{m}@{self.k}" for m in (*RANKING_METRICS, "coverage")]
        rows = {
            name: {
                **{c: r.summary[c] for c in (*names, "mrr", "outcome_auc", "harm_rank")},
                "fit_seconds": r.fit_seconds,
                "rank_seconds": r.rank_seconds,
            }
            for name, r in self.models.items()
        }
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")

    def compare(self, metric: str) -> pd.DataFrame:
        """``metric`` (e.g. "ndcg" or "coverage") along ``ks``: index k, one column per model."""
        known = (*RANKING_METRICS, "coverage")
        if metric not in known:
            raise ParameterError(f"unknown metric {metric!r}; choose one of {list(known)}")
        return pd.DataFrame(
            {
                name: [r.summary[f"{metric}@{k}"] for k in self.ks]
                for name, r in self.models.items()
            },
            index=pd.Index(self.ks, name="k"),
        )

    def to_dict(self) -> dict:
        return {
            "k": self.k,
            "ks": list(self.ks),
            "split": self.split,
            "models": {name: r.to_dict() for name, r in self.models.items()},
            "planted": self.planted.to_dict() if self.planted else None,
            "truth": self.truth.to_dict() if self.truth else None,
        }


def evaluate(
    models: ModelSpec | Sequence[ModelSpec] | Mapping[str, ModelSpec],
    train: CohortTables,
    test: pd.DataFrame,
    k: int = 10,
    ks: Sequence[int] | None = None,
    *,
    policy: ConfidencePolicy | None = None,
    side_info: SideInfo | None = None,
    safety: SafetyPolicy | None = None,
    by_condition: bool = True,
    split_info: Mapping | None = None,
    show_progress: bool | None = None,
) -> EvaluationResult:
    """Fit each model on ``train`` and score its rankings of the held-out rows ``test``.

    Parameters
    ----------
    models : kind, model, or a sequence or mapping (name -> kind or model) of them
        Kinds are built with :func:`~recommender.models.make_model`; instances are cloned, so
        the caller's model is left unfitted.
    train : CohortTables
    test : DataFrame
        Held-out outcome rows (columns of ``CohortTables.outcomes``), e.g. from a split.
    k : int
        The headline cut-off; ``ks`` (default ``DEFAULT_KS`` plus ``k``) are all computed.
    policy, side_info, safety
        How ``train`` becomes a :class:`~recommender.data.dataset.Dataset` (``safety``: the
        minimum-evidence and interaction settings the rankings are held to).
    by_condition : bool
        Group queries by (patient, condition) and restrict candidates to the condition's.
    split_info : mapping, optional
        Description of the split, stored in the result (``Split.summary()``).
    show_progress : bool or None
        Progress bars; None shows them on a terminal only.

    Raises
    ------
    ParameterError
        Unknown model kind or parameter, or a bad ``k``.
    UnknownIdError
        A test row names a patient, treatment or condition unknown to ``train``
        (the splits in :mod:`recommender.data.splits` drop such rows).
    """
    ks = check_ks(k, ks)
    dataset = Dataset.from_tables(train, policy=policy, side_info=side_info, safety=safety)
    queries = build_queries(dataset, test, by_condition=by_condition)
    named = named_models(models)
    results = {}
    for name, model in tqdm(
        named.items(), desc="evaluating", unit="model", disable=tqdm_disable(show_progress)
    ):
        results[name] = evaluate_model(model, dataset, queries, ks, name=name)
    return EvaluationResult(
        k=k, ks=ks, models=results, split=dict(split_info) if split_info is not None else None
    )


def evaluate_split(models, split: Split, k: int = 10, **options) -> EvaluationResult:
    """:func:`evaluate` on ``split.train`` and ``split.test``, recording the split's summary."""
    return evaluate(models, split.train, split.test, k=k, split_info=split.summary(), **options)


def evaluate_model(
    model: Recommender,
    dataset: Dataset,
    queries: Queries,
    ks: Sequence[int],
    name: str | None = None,
) -> ModelResult:
    """Fit ``model`` (in place) on ``dataset`` and compute every metric over ``queries``."""
    started = time.perf_counter()
    model.fit(dataset, show_progress=False)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    ranked = _rank_queries(model, dataset, queries, max(ks))
    rank_seconds = time.perf_counter() - started
    per_query = _per_query(queries, ranked, ks)
    summary = _summary(per_query, ranked, ks, dataset.n_treatments)
    return ModelResult(
        name=name or model.kind,
        params=model.get_params(),
        fit_seconds=fit_seconds,
        rank_seconds=rank_seconds,
        queries=per_query,
        summary=summary,
        model=model,
    )


@dataclass
class _Ranked:
    """What the metrics need from one model's full rankings of every query."""

    top: np.ndarray  # (n, L) int64 best-first treatment indices, -1 padded
    hits: np.ndarray  # (n, L) bool
    n_relevant: np.ndarray  # (n,) int64
    n_allowed: np.ndarray  # (n,) int64
    rr: np.ndarray  # (n,) reciprocal rank over the whole allowed list
    item_rank: np.ndarray  # (m,) int64 rank of each held-out item, -1 when not allowed
    item_score: np.ndarray  # (m,) float32 score after exclusions, -inf when not allowed


def _rank_queries(model: Recommender, dataset: Dataset, queries: Queries, depth: int) -> _Ranked:
    n, m, n_t = len(queries), len(queries.items), dataset.n_treatments
    width = min(depth, n_t)
    out = _Ranked(
        top=np.full((n, width), -1, np.int64),
        hits=np.zeros((n, width), bool),
        n_relevant=np.zeros(n, np.int64),
        n_allowed=np.zeros(n, np.int64),
        rr=np.zeros(n),
        item_rank=np.full(m, -1, np.int64),
        item_score=np.full(m, -np.inf, np.float32),
    )
    item_query = queries.items["query"].to_numpy()
    conditions = queries.frame["condition"].to_numpy()
    for condition, candidates, chunk in condition_batches(dataset, conditions):
        items = np.flatnonzero(np.isin(item_query, chunk))
        _rank_chunk(model, dataset, queries, chunk, items, condition, candidates, out)
    return out


def _rank_chunk(model, dataset, queries, chunk, items, condition, candidates, out: _Ranked) -> None:
    """Rank the queries ``chunk`` (one condition) over every treatment and fill ``out``."""
    n_t = dataset.n_treatments
    patients = queries.frame["patient"].to_numpy()[chunk]
    idx, scores = rank_patients(
        model, patients, int(condition), candidates, n_t, include_tried=False
    )
    local = np.searchsorted(chunk, queries.items["query"].to_numpy()[items])
    treatment = queries.items["treatment"].to_numpy()[items]
    relevant = np.zeros((len(chunk), n_t), bool)
    worked = queries.items["worked"].to_numpy()[items]
    relevant[local[worked], treatment[worked]] = True
    allowed = idx >= 0
    hits = np.take_along_axis(relevant, np.where(allowed, idx, 0), axis=1) & allowed
    rows, cols = np.nonzero(allowed)
    rank = np.full((len(chunk), n_t), -1, np.int64)
    rank[rows, idx[rows, cols]] = cols
    score = np.full((len(chunk), n_t), -np.inf, np.float32)
    score[rows, idx[rows, cols]] = scores[rows, cols]
    width = out.top.shape[1]
    out.top[chunk], out.hits[chunk] = idx[:, :width], hits[:, :width]
    out.n_relevant[chunk], out.n_allowed[chunk] = relevant.sum(axis=1), allowed.sum(axis=1)
    out.rr[chunk] = metrics.reciprocal_rank(hits)
    out.item_rank[items], out.item_score[items] = rank[local, treatment], score[local, treatment]


def _per_query(queries: Queries, ranked: _Ranked, ks: Sequence[int]) -> pd.DataFrame:
    items, n = queries.items, len(queries)
    query = items["query"].to_numpy()
    frame = queries.frame[[C.patient, C.condition]].copy()
    frame["n_heldout"] = np.bincount(query, minlength=n)
    frame["n_relevant"], frame["n_allowed"] = ranked.n_relevant, ranked.n_allowed
    hits, n_rel = ranked.hits, ranked.n_relevant
    for k in ks:
        frame[f"precision@{k}"] = metrics.precision_at_k(hits, k)
        frame[f"recall@{k}"] = metrics.recall_at_k(hits, n_rel, k)
        frame[f"hit@{k}"] = metrics.hit_rate_at_k(hits, k)
        frame[f"map@{k}"] = metrics.average_precision_at_k(hits, n_rel, k)
        frame[f"ndcg@{k}"] = metrics.ndcg_at_k(hits, n_rel, k)
    frame["rr"] = ranked.rr
    frame["outcome_auc"] = metrics.outcome_auc(
        ranked.item_score, items["worked"].to_numpy(), query, n
    )
    harmful = items["harmful"].to_numpy()
    normalised = metrics.normalised_rank(
        ranked.item_rank[harmful], ranked.n_allowed[query[harmful]]
    )
    frame["harm_rank"] = metrics.group_mean(normalised, query[harmful], n)
    return frame


def _summary(per_query: pd.DataFrame, ranked: _Ranked, ks: Sequence[int], n_items: int) -> dict:
    with_relevant = per_query[per_query["n_relevant"] > 0]
    summary = {
        f"{m}@{k}": metrics.mean(with_relevant[f"{m}@{k}"].to_numpy())
        for k in ks
        for m in RANKING_METRICS
    }
    summary.update({f"coverage@{k}": metrics.coverage_at_k(ranked.top, k, n_items) for k in ks})
    summary.update(
        {
            "mrr": metrics.mean(with_relevant["rr"].to_numpy()),
            "outcome_auc": metrics.mean(per_query["outcome_auc"].to_numpy()),
            "harm_rank": metrics.mean(per_query["harm_rank"].to_numpy()),
            "n_queries": len(per_query),
            "n_queries_with_relevant": len(with_relevant),
            "n_queries_auc": int(per_query["outcome_auc"].notna().sum()),
            "n_queries_harm": int(per_query["harm_rank"].notna().sum()),
        }
    )
    return summary
