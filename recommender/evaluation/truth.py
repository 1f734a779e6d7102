"""Policy value against the truth of a generated observational cohort.

:mod:`recommender.data.synthetic.observational` writes, for every held-out episode, each
candidate therapy's true success probability (``truth_held_out``) and the values of reference
policies (``reference_policies``: the guideline's first choice, the best choice from the
observables, the Bayes *bound* from the observables plus the outcome history, and the oracle
that knows the hidden trait). A model's value is the mean true success probability of its
rank-1 choices, asked as of each episode's start; its *gap closed* is
``(value - guideline) / (bound - guideline)`` per group (all, warm patients with an outcome
history, cold-start patients without one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..columns import Columns as C
from ..data.dataset import Dataset
from ..data.tables import find_table
from ..exceptions import DataValidationError
from ..utils.jsonable import jsonable
from .policy_value import policy_choices
from .spec import named_models

TRUTH = "truth_held_out"
REFERENCE = "reference_policies"
GROUPS = ("all", "warm", "cold")


@dataclass
class TruthResult:
    """Per model and group: the policy value and the gap closed; the reference values."""

    values: dict[str, dict[str, float]]
    gaps: dict[str, dict[str, float]]
    reference: dict[str, dict[str, float]]
    n_episodes: dict[str, int]
    fit_seconds: dict[str, float]

    def to_dict(self) -> dict:
        return jsonable(vars(self))

    def frame(self) -> pd.DataFrame:
        rows = [
            {
                "model": name,
                **{f"value_{g}": v[g] for g in GROUPS},
                **{f"gap_{g}": self.gaps[name][g] for g in GROUPS},
            }
            for name, v in self.values.items()
        ]
        return pd.DataFrame(rows).set_index("model")


def read_truth(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(truth_held_out, reference_policies) of a generated cohort folder."""
    tables = []
    for name in (TRUTH, REFERENCE):
        path = find_table(Path(folder), name)
        if path is None:
            raise DataValidationError(
                f"no {name} table: `recommender generate --cohort observational` writes it",
                file=str(folder),
            )
        tables.append(pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path))
    return tables[0], tables[1]


def episode_values(dataset: Dataset, truth: pd.DataFrame, model) -> pd.DataFrame:
    """One row per held-out episode: patient_id, condition_id, cold_start, the model's choice
    and its true success probability (0 when nothing is allowed)."""
    episodes = truth.drop_duplicates([C.patient, C.condition]).reset_index(drop=True)
    patients = dataset.patient_indices(episodes[C.patient], strict=False)
    conditions = dataset.conditions.to_internal(episodes[C.condition], strict=False)
    known = (patients >= 0) & (conditions >= 0)
    episodes, patients, conditions = episodes[known], patients[known], conditions[known]
    times = np.asarray(
        pd.to_datetime(episodes[C.timestamp], utc=True).array.as_unit("ns").asi8, np.int64
    )
    chosen = policy_choices(model, patients, conditions, times)
    ids = np.where(chosen >= 0, dataset.treatments.external_ids[np.maximum(chosen, 0)], "")
    p = truth.set_index([C.patient, C.condition, C.treatment])["p_success"]
    key = pd.MultiIndex.from_arrays([episodes[C.patient], episodes[C.condition], ids])
    value = np.nan_to_num(p.reindex(key).to_numpy(), nan=0.0)
    return pd.DataFrame(
        {
            C.patient: episodes[C.patient].to_numpy(),
            C.condition: episodes[C.condition].to_numpy(),
            "cold_start": episodes["cold_start"].to_numpy(),
            C.treatment: ids,
            "p_success": value,
        }
    )


def evaluate_against_truth(models, dataset: Dataset, folder: Path) -> TruthResult:
    """Fit each model on ``dataset`` (the cohort's tables) and value its policy on the held-out
    episodes of the generated cohort in ``folder``."""
    import time

    truth, reference = read_truth(folder)
    ref = reference.pivot(index="policy", columns="group", values="value")
    values, gaps, n_episodes, seconds = {}, {}, {}, {}
    for name, model in named_models(models).items():
        started = time.perf_counter()
        model.fit(dataset)
        seconds[name] = time.perf_counter() - started
        per = episode_values(dataset, truth, model)
        groups = {"all": per, "warm": per[per.cold_start == 0], "cold": per[per.cold_start == 1]}
        values[name] = {
            g: float(frame.p_success.mean()) if len(frame) else float("nan")
            for g, frame in groups.items()
        }
        gaps[name] = {g: gap_closed(values[name][g], ref, g) for g in GROUPS}
        n_episodes = {g: len(frame) for g, frame in groups.items()}
    return TruthResult(
        values=values,
        gaps=gaps,
        reference={p: {g: float(ref.loc[p, g]) for g in GROUPS if g in ref} for p in ref.index},
        n_episodes=n_episodes,
        fit_seconds=seconds,
    )


def gap_closed(value: float, reference: pd.DataFrame, group: str) -> float:
    """Share of the guideline-to-bound gap a policy value closes, for ``group``."""
    low, high = reference.loc["guideline", group], reference.loc["bound", group]
    return float((value - low) / (high - low)) if high > low else float("nan")
