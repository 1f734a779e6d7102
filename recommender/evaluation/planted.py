"""Planted evaluation: hit@1 against the true best therapy of a generated cohort's held-out episodes.

The cohorts of :mod:`recommender.data.synthetic.planted` record, for each held-out episode, the
best therapy and what a Bayes-optimal guess and a popularity rule could expect; a model's hit@1
is read against them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..columns import Columns as C
from ..data.dataset import Dataset
from ..data.policies import ConfidencePolicy
from ..data.side_info import SideInfo
from ..data.tables import find_table, read_tables
from ..exceptions import DataValidationError
from ..models import Recommender
from ..ranking import rank_patients
from ..utils.jsonable import jsonable
from .queries import condition_batches, condition_indices
from .spec import named_models, tqdm_disable

HELD_OUT = "held_out"


HELD_OUT_COLUMNS = (C.patient, C.condition, "best_treatment_id", "bayes_hit_probability")


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
        return jsonable(
            {
                "hit@1": self.hit_at_1,
                "bayes_rate": self.bayes_rate,
                "popularity_rate": self.popularity_rate,
                "n_episodes": self.n_episodes,
                "fit_seconds": self.fit_seconds,
            }
        )


def evaluate_planted(
    models,
    data_dir: str | Path,
    *,
    policy: ConfidencePolicy | None = None,
    side_info: SideInfo | None = None,
    show_progress: bool | None = None,
) -> PlantedResult:
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
    for name, model in tqdm(
        named_models(models).items(),
        desc="planted",
        unit="model",
        disable=tqdm_disable(show_progress),
    ):
        started = time.perf_counter()
        model.fit(dataset, show_progress=False)
        fit_seconds[name] = time.perf_counter() - started
        hits[name] = _planted_hit_rate(model, held)
    popularity = held.get("popularity_hit_probability")
    return PlantedResult(
        hit_at_1=hits,
        bayes_rate=_column_mean(held["bayes_hit_probability"]),
        popularity_rate=None if popularity is None else _column_mean(popularity),
        n_episodes=len(held),
        fit_seconds=fit_seconds,
    )


def read_held_out(folder: Path) -> pd.DataFrame:
    """The ``held_out`` table of a generated cohort (csv, csv.gz or parquet)."""
    path = find_table(folder, HELD_OUT)
    if path is None:
        raise DataValidationError(
            "no held_out table (held_out.csv), which `recommender "
            "generate` writes; planted evaluation needs it",
            file=str(folder),
        )
    held = (
        pd.read_parquet(path)
        if path.suffix == ".parquet"
        else pd.read_csv(path, dtype=str, keep_default_na=False)
    )
    missing = [c for c in HELD_OUT_COLUMNS if c not in held]
    if missing:
        raise DataValidationError(
            f"missing required column(s) {missing}", file=str(path), column=missing[0]
        )
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
        idx, _ = rank_patients(
            model, patients[chunk], condition, candidates, 1, include_tried=False
        )
        first[chunk] = idx[:, 0]
    return float(((first == best) & (best >= 0)).mean())


def _column_mean(values: pd.Series) -> float:
    return float(pd.to_numeric(values, errors="coerce").mean())
