"""Offline evaluation: fit models on a training split and rank the held-out treatments.

A *query* is a group of held-out outcome rows sharing (patient_id, condition_id): "what should
this patient try next for this condition?". With ``by_condition`` (the default) a query that
names a condition ranks only the treatments recorded for it in the training data, as the
service does; otherwise every query is one patient and ranks every treatment.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence, Union

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import metrics
from ..columns import Columns as C
from ..data.policies import ConfidencePolicy
from ..data.dataset import Dataset, SideInfo
from ..exceptions import DataValidationError, ParameterError
from ..data.tables import CohortTables, find_table, read_tables
from ..utils.jsonable import jsonable  # noqa: F401  (re-exported for audit and tune)
from ..models import Recommender, make_model
from ..ranking.core import rank_patients
from ..ranking.safety import SafetyPolicy
from ..data.splits import Split

log = logging.getLogger(__name__)

DEFAULT_KS = (1, 3, 5, 10, 20)
RANKING_METRICS = ("precision", "recall", "hit", "map", "ndcg")
#: Cells of one (queries x treatments) batch; bounds the memory of a full ranking.
BATCH_CELLS = 1 << 22
HELD_OUT = "held_out"
HELD_OUT_COLUMNS = (C.patient, C.condition, "best_treatment_id", "bayes_hit_probability")

ModelSpec = Union[str, Recommender]


# --- results ------------------------------------------------------------------------------------

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
        return {"params": jsonable(self.params), "fit_seconds": round(self.fit_seconds, 4),
                "rank_seconds": round(self.rank_seconds, 4), "summary": jsonable(self.summary)}


@dataclass
class EvaluationResult:
    """Every model's evaluation on one split, at the cut-off ``k`` and along ``ks``."""

    k: int
    ks: tuple[int, ...]
    models: dict[str, ModelResult]
    split: dict | None = None
    planted: "PlantedResult | None" = None

    def summary_frame(self) -> pd.DataFrame:
        """One row per model: the metrics at ``k``, MRR, outcome AUC, harm rank and timings."""
        names = [f"{m}@{self.k}" for m in (*RANKING_METRICS, "coverage")]
        rows = {name: {**{c: r.summary[c] for c in (*names, "mrr", "outcome_auc", "harm_rank")},
                       "fit_seconds": r.fit_seconds, "rank_seconds": r.rank_seconds}
                for name, r in self.models.items()}
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")

    def compare(self, metric: str) -> pd.DataFrame:
        """``metric`` (e.g. "ndcg" or "coverage") along ``ks``: index k, one column per model."""
        known = (*RANKING_METRICS, "coverage")
        if metric not in known:
            raise ParameterError(f"unknown metric {metric!r}; choose one of {list(known)}")
        return pd.DataFrame({name: [r.summary[f"{metric}@{k}"] for k in self.ks]
                             for name, r in self.models.items()},
                            index=pd.Index(self.ks, name="k"))

    def to_dict(self) -> dict:
        return {"k": self.k, "ks": list(self.ks), "split": self.split,
                "models": {name: r.to_dict() for name, r in self.models.items()},
                "planted": self.planted.to_dict() if self.planted else None}


@dataclass
class Queries:
    """Held-out rows encoded against a Dataset.

    Attributes
    ----------
    frame : DataFrame
        One row per query: patient_id, condition_id (None when unrestricted), patient and
        condition (dataset indices; condition -1 for none).
    items : DataFrame
        One row per (query, treatment): query (row of ``frame``), treatment (index), outcome
        (latest held-out outcome), worked, harmful (any held-out row adverse or below the
        dataset's ``harm_threshold``).
    """

    frame: pd.DataFrame
    items: pd.DataFrame

    def __len__(self) -> int:
        return len(self.frame)


# --- entry points -------------------------------------------------------------------------------

def evaluate(models: ModelSpec | Sequence[ModelSpec] | Mapping[str, ModelSpec],
             train: CohortTables, test: pd.DataFrame, k: int = 10,
             ks: Sequence[int] | None = None, *, policy: ConfidencePolicy | None = None,
             side_info: SideInfo | None = None, safety: SafetyPolicy | None = None,
             by_condition: bool = True,
             split_info: Mapping | None = None, show_progress: bool | None = None) -> EvaluationResult:
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
    for name, model in tqdm(named.items(), desc="evaluating", unit="model",
                            disable=tqdm_disable(show_progress)):
        results[name] = evaluate_model(model, dataset, queries, ks, name=name)
    return EvaluationResult(k=k, ks=ks, models=results,
                            split=dict(split_info) if split_info is not None else None)


def evaluate_split(models, split: Split, k: int = 10, **options) -> EvaluationResult:
    """:func:`evaluate` on ``split.train`` and ``split.test``, recording the split's summary."""
    return evaluate(models, split.train, split.test, k=k, split_info=split.summary(), **options)


def evaluate_model(model: Recommender, dataset: Dataset, queries: Queries, ks: Sequence[int],
                   name: str | None = None) -> ModelResult:
    """Fit ``model`` (in place) on ``dataset`` and compute every metric over ``queries``."""
    started = time.perf_counter()
    model.fit(dataset, show_progress=False)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    ranked = _rank_queries(model, dataset, queries, max(ks))
    rank_seconds = time.perf_counter() - started
    per_query = _per_query(queries, ranked, ks)
    summary = _summary(per_query, ranked, ks, dataset.n_treatments)
    return ModelResult(name=name or model.kind, params=model.get_params(), fit_seconds=fit_seconds,
                       rank_seconds=rank_seconds, queries=per_query, summary=summary, model=model)


# --- queries ------------------------------------------------------------------------------------

def build_queries(dataset: Dataset, test: pd.DataFrame, by_condition: bool = True) -> Queries:
    """Group held-out rows into queries and encode them (see :class:`Queries`)."""
    rows = _encode_rows(dataset, test, by_condition)
    items = (rows.sort_values(["time", "position"], na_position="first", kind="stable")
             .groupby(["query", "treatment"], sort=True)
             .agg(outcome=("outcome", "last"), harmful=("harm", "any")).reset_index())
    items["worked"] = dataset.policy.worked(items["outcome"].to_numpy())
    return Queries(frame=_query_frame(dataset, rows), items=items)


def _encode_rows(dataset: Dataset, test: pd.DataFrame, by_condition: bool) -> pd.DataFrame:
    """Held-out rows as indices, with their query number (first appearance order)."""
    rows = pd.DataFrame({
        "patient": dataset.patients.to_internal(test[C.patient]),
        "condition": (condition_indices(dataset, test[C.condition]) if by_condition
                      else np.full(len(test), -1, np.int64)),
        "treatment": dataset.treatments.to_internal(test[C.treatment]),
        "outcome": test[C.outcome].to_numpy(np.float32),
        "harm": ((test[C.adverse].to_numpy() == 1)
                 | (test[C.outcome].to_numpy() < dataset.harm_threshold)),
        "time": test[C.timestamp].reset_index(drop=True), "position": np.arange(len(test)),
    })
    rows["query"] = pd.factorize(pd.MultiIndex.from_arrays([rows["patient"], rows["condition"]]))[0]
    return rows


def _query_frame(dataset: Dataset, rows: pd.DataFrame) -> pd.DataFrame:
    first = rows.drop_duplicates("query").sort_values("query")
    condition = first["condition"].to_numpy()
    condition_ids = np.full(len(first), None, dtype=object)
    condition_ids[condition >= 0] = dataset.conditions.to_external(condition[condition >= 0])
    return pd.DataFrame({
        C.patient: dataset.patients.to_external(first["patient"]), C.condition: condition_ids,
        "patient": first["patient"].to_numpy(), "condition": condition,
    })


def condition_indices(dataset: Dataset, condition_ids: pd.Series) -> np.ndarray:
    """Condition indices (n,) int64 of ids, -1 for missing ones; unknown ids raise UnknownIdError."""
    result = np.full(len(condition_ids), -1, np.int64)
    present = condition_ids.notna().to_numpy()
    result[present] = dataset.conditions.to_internal(condition_ids[present])
    return result


# --- ranking ------------------------------------------------------------------------------------

@dataclass
class _Ranked:
    """What the metrics need from one model's full rankings of every query."""

    top: np.ndarray          # (n, L) int64 best-first treatment indices, -1 padded
    hits: np.ndarray         # (n, L) bool
    n_relevant: np.ndarray   # (n,) int64
    n_allowed: np.ndarray    # (n,) int64
    rr: np.ndarray           # (n,) reciprocal rank over the whole allowed list
    item_rank: np.ndarray    # (m,) int64 rank of each held-out item, -1 when not allowed
    item_score: np.ndarray   # (m,) float32 score after exclusions, -inf when not allowed


def _rank_queries(model: Recommender, dataset: Dataset, queries: Queries, depth: int) -> _Ranked:
    n, m, n_t = len(queries), len(queries.items), dataset.n_treatments
    width = min(depth, n_t)
    out = _Ranked(top=np.full((n, width), -1, np.int64), hits=np.zeros((n, width), bool),
                  n_relevant=np.zeros(n, np.int64), n_allowed=np.zeros(n, np.int64),
                  rr=np.zeros(n), item_rank=np.full(m, -1, np.int64),
                  item_score=np.full(m, -np.inf, np.float32))
    item_query = queries.items["query"].to_numpy()
    conditions = queries.frame["condition"].to_numpy()
    for condition, candidates, chunk in condition_batches(dataset, conditions):
        items = np.flatnonzero(np.isin(item_query, chunk))
        _rank_chunk(model, dataset, queries, chunk, items, condition, candidates, out)
    return out


def condition_batches(dataset: Dataset, conditions: np.ndarray):
    """Yield (condition, candidates, positions) batches of requests that share a condition.

    ``conditions`` (n,) holds condition indices (-1: none); ``candidates`` is None or the
    condition's treatment indices. Batches are sized so a full (batch, n_t) ranking stays small.
    """
    batch = max(1, min(4096, BATCH_CELLS // max(dataset.n_treatments, 1)))
    for condition in np.unique(conditions):
        candidates = dataset.candidates(condition) if condition >= 0 else None
        positions = np.flatnonzero(conditions == condition)
        for start in range(0, len(positions), batch):
            yield int(condition), candidates, positions[start:start + batch]


def _rank_chunk(model, dataset, queries, chunk, items, condition, candidates, out: _Ranked) -> None:
    """Rank the queries ``chunk`` (one condition) over every treatment and fill ``out``."""
    n_t = dataset.n_treatments
    patients = queries.frame["patient"].to_numpy()[chunk]
    idx, scores = rank_patients(model, patients, int(condition), candidates, n_t, include_tried=False)
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


# --- metrics ------------------------------------------------------------------------------------

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
    frame["outcome_auc"] = metrics.outcome_auc(ranked.item_score, items["worked"].to_numpy(), query, n)
    harmful = items["harmful"].to_numpy()
    normalised = metrics.normalised_rank(ranked.item_rank[harmful], ranked.n_allowed[query[harmful]])
    frame["harm_rank"] = metrics.group_mean(normalised, query[harmful], n)
    return frame


def _summary(per_query: pd.DataFrame, ranked: _Ranked, ks: Sequence[int], n_items: int) -> dict:
    with_relevant = per_query[per_query["n_relevant"] > 0]
    summary = {f"{m}@{k}": metrics.mean(with_relevant[f"{m}@{k}"].to_numpy())
               for k in ks for m in RANKING_METRICS}
    summary.update({f"coverage@{k}": metrics.coverage_at_k(ranked.top, k, n_items) for k in ks})
    summary.update({
        "mrr": metrics.mean(with_relevant["rr"].to_numpy()),
        "outcome_auc": metrics.mean(per_query["outcome_auc"].to_numpy()),
        "harm_rank": metrics.mean(per_query["harm_rank"].to_numpy()),
        "n_queries": len(per_query), "n_queries_with_relevant": len(with_relevant),
        "n_queries_auc": int(per_query["outcome_auc"].notna().sum()),
        "n_queries_harm": int(per_query["harm_rank"].notna().sum()),
    })
    return summary


# --- the planted cohort -------------------------------------------------------------------------

@dataclass
class PlantedResult:
    """Hit@1 against the planted best therapy of each held-out episode, with reference rates.

    ``bayes_rate`` is the mean of ``bayes_hit_probability`` (what a model that knew the
    generator could expect) and ``popularity_rate`` the mean of ``popularity_hit_probability``
    (the per-condition popularity rule), None when the file lacks that column.
    """

    hit_at_1: dict[str, float]
    bayes_rate: float
    popularity_rate: float | None
    n_episodes: int
    fit_seconds: dict[str, float]

    def to_dict(self) -> dict:
        return jsonable({"hit@1": self.hit_at_1, "bayes_rate": self.bayes_rate,
                          "popularity_rate": self.popularity_rate, "n_episodes": self.n_episodes,
                          "fit_seconds": self.fit_seconds})


def evaluate_planted(models, data_dir: str | Path, *, policy: ConfidencePolicy | None = None,
                     side_info: SideInfo | None = None,
                     show_progress: bool | None = None) -> PlantedResult:
    """Train on every table in ``data_dir`` and check rank 1 against ``held_out``'s best therapy.

    The held-out episodes (``held_out.csv`` from ``recommender generate``) are not in the
    outcomes; each asks for the known patient ``patient_id`` with ``condition_id``.

    Raises
    ------
    DataValidationError
        If the folder has no held_out table or it lacks a required column.
    """
    tables = read_tables(data_dir)
    held = read_held_out(Path(data_dir))
    dataset = Dataset.from_tables(tables, policy=policy, side_info=side_info)
    hits, fit_seconds = {}, {}
    for name, model in tqdm(named_models(models).items(), desc="planted", unit="model",
                            disable=tqdm_disable(show_progress)):
        started = time.perf_counter()
        model.fit(dataset, show_progress=False)
        fit_seconds[name] = time.perf_counter() - started
        hits[name] = _planted_hit_rate(model, held)
    popularity = held.get("popularity_hit_probability")
    return PlantedResult(hit_at_1=hits, bayes_rate=_column_mean(held["bayes_hit_probability"]),
                         popularity_rate=None if popularity is None else _column_mean(popularity),
                         n_episodes=len(held), fit_seconds=fit_seconds)


def read_held_out(folder: Path) -> pd.DataFrame:
    """The ``held_out`` table of a generated cohort (csv, csv.gz or parquet)."""
    path = find_table(folder, HELD_OUT)
    if path is None:
        raise DataValidationError("no held_out table (held_out.csv), which `recommender "
                                  "generate` writes; planted evaluation needs it", file=str(folder))
    held = (pd.read_parquet(path) if path.suffix == ".parquet"
            else pd.read_csv(path, dtype=str, keep_default_na=False))
    missing = [c for c in HELD_OUT_COLUMNS if c not in held]
    if missing:
        raise DataValidationError(f"missing required column(s) {missing}", file=str(path),
                                  column=missing[0])
    for column in (C.patient, C.condition, "best_treatment_id"):
        held[column] = held[column].astype(str).str.strip()
    held[C.condition] = held[C.condition].where(held[C.condition] != "", None)
    return held


def _planted_hit_rate(model: Recommender, held: pd.DataFrame) -> float:
    """Share of held-out episodes whose rank-1 treatment is the planted best one."""
    if len(held) == 0:
        return float("nan")
    dataset = model.dataset_
    patients = dataset.patients.to_internal(held[C.patient])
    best = dataset.treatments.to_internal(held["best_treatment_id"], strict=False)  # -1: a miss
    conditions = condition_indices(dataset, held[C.condition])
    first = np.full(len(held), -1, np.int64)
    for condition, candidates, chunk in condition_batches(dataset, conditions):
        idx, _ = rank_patients(model, patients[chunk], condition, candidates, 1, include_tried=False)
        first[chunk] = idx[:, 0]
    return float(((first == best) & (best >= 0)).mean())


# --- helpers ------------------------------------------------------------------------------------

def check_ks(k: int, ks: Sequence[int] | None) -> tuple[int, ...]:
    """Sorted distinct cut-offs including ``k``; each must be a positive int."""
    values = list(DEFAULT_KS if ks is None else ks) + [k]
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ParameterError(f"k must be a positive int; got {value!r}")
    return tuple(sorted({int(v) for v in values}))


def named_models(models) -> dict[str, Recommender]:
    """Fresh unfitted models by display name from kinds, instances, a sequence or a mapping."""
    if isinstance(models, (str, Recommender)):
        models = [models]
    pairs = (list(models.items()) if isinstance(models, Mapping)
             else [(None, spec) for spec in models])
    if not pairs:
        raise ParameterError("no model to evaluate; pass at least one model kind or instance")
    named: dict[str, Recommender] = {}
    for name, spec in pairs:
        model = make_model(spec) if isinstance(spec, str) else spec.clone()
        name = name or model.kind
        base, n = name, 2
        while name in named:
            name, n = f"{base}-{n}", n + 1
        named[name] = model
    return named


def tqdm_disable(show_progress: bool | None) -> bool | None:
    """tqdm's ``disable``: None lets tqdm show the bar only on a terminal."""
    return None if show_progress is None else not show_progress


def _column_mean(values: pd.Series) -> float:
    return float(pd.to_numeric(values, errors="coerce").mean())
