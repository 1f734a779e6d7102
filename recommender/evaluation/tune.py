"""Hyperparameter search: random or grid, scored by NDCG@k on a leave-last validation split.

The validation split is carved from the tables given (:func:`recommender.data.splits.leave_last`);
pass the training part of an outer split to keep a final test set untouched. The searched
dimensions are those of :data:`SPACE` that the model has (factors, regularization, iterations,
learning_rate, K) plus the confidence-policy ones (alpha, side_weight), which rebuild the
matrix with :meth:`~recommender.data.dataset.Dataset.with_policy` instead of re-reading the tables.
Each trial is ``make_model(kind, **point).fit(dataset)``; models with a ``random_state`` get the
search ``seed``, so trials differ only in the searched values.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..data.dataset import Dataset
from ..data.policies import ConfidencePolicy
from ..data.side_info import SideInfo
from ..data.splits import leave_last
from ..data.tables import CohortTables
from ..exceptions import ParameterError
from ..models import MODELS, make_model
from ..models.persistence import load_artifact
from ..training import fit_model
from ..utils.escaping import csv_safe
from ..utils.fileutil import atomic_file
from ..utils.jsonable import jsonable
from .evaluate import RANKING_METRICS, evaluate_model
from .queries import build_queries
from .spec import tqdm_disable

log = logging.getLogger(__name__)

SEARCHES = ("random", "grid")
POLICY_PARAMS = ("alpha", "side_weight")


@dataclass(frozen=True)
class Dimension:
    """The values one hyperparameter may take.

    ``values`` are the grid. Random search picks among them for integers; for reals it draws
    uniformly between their minimum and maximum, on a log scale when ``log``.
    """

    values: tuple
    log: bool = False

    @property
    def is_integer(self) -> bool:
        return all(isinstance(v, int) for v in self.values)

    def sample(self, rng: np.random.Generator):
        if self.is_integer:
            return int(rng.choice(self.values))
        low, high = min(self.values), max(self.values)
        if self.log:
            return float(np.exp(rng.uniform(np.log(low), np.log(high))))
        return float(rng.uniform(low, high))


#: Default dimensions by parameter name.
SPACE: dict[str, Dimension] = {
    "factors": Dimension((8, 16, 32, 64, 128)),
    "regularization": Dimension((0.001, 0.01, 0.1, 1.0), log=True),
    "iterations": Dimension((5, 10, 15, 30)),
    "K": Dimension((10, 20, 50, 100)),
    "alpha": Dimension((0.5, 1.0, 2.0, 4.0, 8.0, 16.0), log=True),
    "side_weight": Dimension((0.0, 0.25, 0.5, 1.0, 2.0)),
}
#: Per-model overrides of :data:`SPACE` (different scales of the same parameter name).
MODEL_SPACE: dict[str, dict[str, Dimension]] = {
    "bpr": {
        "iterations": Dimension((50, 100, 200, 400)),
        "learning_rate": Dimension((0.005, 0.01, 0.05, 0.1), log=True),
    },
    "lmf": {
        "iterations": Dimension((10, 30, 60)),
        "learning_rate": Dimension((0.1, 0.5, 1.0, 2.0), log=True),
    },
}


@dataclass
class TuneResult:
    """The trials of a search, best first.

    Attributes
    ----------
    kind : str
        Model kind.
    metric : str
        Ranking column, e.g. ``"ndcg@10"``.
    trials : DataFrame
        One row per trial, best first: trial number, the searched values, the validation
        metrics at k and fit/rank seconds.
    best_params : dict
        Model parameters of the best trial (``random_state`` included when the model has it).
    best_policy : ConfidencePolicy
    split : dict
        Summary of the validation split.
    search : dict
        How the search ran (method, trials, seed, k, dimensions).
    """

    kind: str
    metric: str
    trials: pd.DataFrame
    best_params: dict
    best_policy: ConfidencePolicy
    split: dict
    search: dict = field(default_factory=dict)

    @property
    def best_metrics(self) -> dict:
        """Validation metrics of the best trial."""
        names = [
            c for c in self.trials.columns if "@" in c or c in ("mrr", "outcome_auc", "harm_rank")
        ]
        return {c: _plain(self.trials[c].iloc[0]) for c in names}

    def to_dict(self) -> dict:
        return jsonable(
            {
                "model": self.kind,
                "metric": self.metric,
                "best": {
                    "params": self.best_params,
                    "policy": self.best_policy.to_dict(),
                    "metrics": self.best_metrics,
                    "trial": _plain(self.trials["trial"].iloc[0]),
                },
                "split": self.split,
                "search": self.search,
                "trials": self.trials.to_dict(orient="records"),
            }
        )


# --- search -------------------------------------------------------------------------------------


def search_space(kind: str, space: Mapping[str, Dimension] | None = None) -> dict[str, Dimension]:
    """The dimensions searched for ``kind``: its parameters found in the space, plus the policy's."""
    if kind not in MODELS:
        raise ParameterError(f"unknown model {kind!r}; choose one of {sorted(MODELS)}")
    merged = {**SPACE, **MODEL_SPACE.get(kind, {}), **dict(space or {})}
    names = [n for n in MODELS[kind]().get_params() if n in merged] + list(POLICY_PARAMS)
    return {name: merged[name] for name in names}


def candidate_points(
    space: Mapping[str, Dimension], trials: int | None, search: str = "random", seed: int = 0
) -> list[dict]:
    """The points to try: ``trials`` random draws, or the grid in a seeded random order.

    With ``search="grid"`` the whole Cartesian product is visited when ``trials`` is None or
    at least its size; otherwise its first ``trials`` points in that order.
    """
    if search not in SEARCHES:
        raise ParameterError(f"search must be one of {list(SEARCHES)}; got {search!r}")
    if trials is not None and (
        isinstance(trials, bool) or not isinstance(trials, (int, np.integer)) or trials < 1
    ):
        raise ParameterError(f"trials must be a positive int; got {trials!r}")
    rng = np.random.default_rng(seed)
    names = list(space)
    if search == "random":
        if trials is None:
            raise ParameterError("random search needs a number of trials")
        return [{n: space[n].sample(rng) for n in names} for _ in range(trials)]
    grid = list(itertools.product(*(space[n].values for n in names)))
    order = rng.permutation(len(grid))[: trials or len(grid)]
    return [dict(zip(names, grid[i])) for i in order]


def tune(
    tables: CohortTables,
    kind: str,
    trials: int | None = 20,
    search: str = "random",
    seed: int = 0,
    k: int = 10,
    *,
    side_info: SideInfo | None = None,
    policy: ConfidencePolicy | None = None,
    space: Mapping[str, Dimension] | None = None,
    by_condition: bool = True,
    show_progress: bool | None = None,
) -> TuneResult:
    """Search hyperparameters of model ``kind`` on a leave-last validation split of ``tables``.

    Parameters
    ----------
    tables : CohortTables
        Training data; the validation split is carved from it.
    kind : str
        Model kind (see :data:`recommender.models.MODELS`).
    trials : int or None
        Number of trials (None with grid search: the whole grid).
    search : {"random", "grid"}
    seed : int
        Seed of the search and of every model's ``random_state``.
    k : int
        Trials are ranked by NDCG@k (ties: earlier trial first).
    side_info, policy
        Side-information columns, and the policy whose alpha/side_weight the search replaces.
    space : mapping, optional
        Dimensions overriding :data:`SPACE` by name.
    show_progress : bool or None
        Progress bar over trials; None shows it on a terminal only.
    """
    dimensions = search_space(kind, space)
    points = candidate_points(dimensions, trials, search, seed)
    split = leave_last(tables)
    base = Dataset.from_tables(split.train, policy=policy, side_info=side_info)
    queries = build_queries(base, split.test, by_condition=by_condition)
    seeded = {"random_state": seed} if "random_state" in MODELS[kind]().get_params() else {}
    rows = []
    for number, point in enumerate(
        tqdm(points, desc=f"tuning {kind}", unit="trial", disable=tqdm_disable(show_progress))
    ):
        rows.append(
            {"trial": number, **point, **_run_trial(kind, {**seeded, **point}, base, queries, k)}
        )
    metric = f"ndcg@{k}"
    ranked = (
        pd.DataFrame(rows)
        .sort_values([metric, "trial"], ascending=[False, True], na_position="last", kind="stable")
        .reset_index(drop=True)
    )
    best = {column: _plain(ranked[column].iloc[0]) for column in ranked.columns}  # keeps dtypes
    log.info("best %s trial %d: %s = %.4f", kind, best["trial"], metric, best[metric])
    return TuneResult(
        kind=kind,
        metric=metric,
        trials=ranked,
        best_params={**seeded, **{n: best[n] for n in dimensions if n not in POLICY_PARAMS}},
        best_policy=replace(base.policy, **{n: float(best[n]) for n in POLICY_PARAMS}),
        split=split.summary(),
        search={
            "method": search,
            "trials": len(points),
            "seed": seed,
            "k": k,
            "dimensions": {
                n: {"values": list(d.values), "log": d.log} for n, d in dimensions.items()
            },
        },
    )


def _run_trial(kind: str, point: Mapping, base: Dataset, queries, k: int) -> dict:
    """Fit one configuration and return its validation metrics at ``k`` and timings."""
    params = {n: v for n, v in point.items() if n not in POLICY_PARAMS}
    dataset = base.with_policy(replace(base.policy, **{n: point[n] for n in POLICY_PARAMS}))
    result = evaluate_model(make_model(kind, **params), dataset, queries, ks=(k,))
    summary = result.summary
    return {
        **{f"{m}@{k}": summary[f"{m}@{k}"] for m in RANKING_METRICS},
        "mrr": summary["mrr"],
        "outcome_auc": summary["outcome_auc"],
        "harm_rank": summary["harm_rank"],
        "fit_seconds": round(result.fit_seconds, 4),
        "rank_seconds": round(result.rank_seconds, 4),
    }


# --- outputs ------------------------------------------------------------------------------------


def write_results(result: TuneResult, path: str | Path) -> tuple[Path, Path]:
    """Write the trials table to ``path`` (CSV) and the best configuration beside it (``.json``).

    Both files are written atomically. Returns (csv path, json path).
    """
    csv_path = Path(path)
    json_path = csv_path.with_suffix(".json")
    with atomic_file(csv_path) as handle:
        csv_safe(result.trials).to_csv(handle, index=False)
    with atomic_file(json_path) as handle:
        json.dump(result.to_dict(), handle, indent=2, sort_keys=True)
    return csv_path, json_path


def train_best(
    result: TuneResult,
    tables: CohortTables,
    out: str | Path,
    side_info: SideInfo | None = None,
    show_progress: bool = False,
) -> Path:
    """Fit the best configuration on all of ``tables`` and save a verified artifact to ``out``.

    The manifest's metrics are the best trial's validation metrics, prefixed ``validation_``.
    """
    model = fit_model(
        tables,
        result.kind,
        result.best_params,
        result.best_policy,
        side_info,
        show_progress=show_progress,
    )
    metrics = {f"validation_{name}": value for name, value in result.best_metrics.items()}
    path = model.save(out, metrics=jsonable(metrics))
    load_artifact(path, mmap=True)  # verify checksums and a clean load before handing it out
    return Path(path)


def _plain(value):
    """A numpy scalar as the Python int or float a model parameter expects."""
    return value.item() if isinstance(value, np.generic) else value
