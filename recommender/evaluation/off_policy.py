"""``evaluate --ope``: each model's policy valued from the logged first-line decisions.

A time split (``cutoff``, or the ``1 - fraction`` quantile of the outcome times) gives the
training tables and the test rows. Every model, and an outcome model used as the nuisance
(propensities and predicted success; :mod:`recommender.evaluation.policy_value`), is fitted on
the training part. Each test first-line decision is asked of every model as of its time, and
IPS, SNIPS and DR estimates with patient-bootstrap intervals are reported next to the
clinicians' observed success rate (the *behaviour* value).

Files (the contract for scripts)::

    ope.json                   {"models": {NAME: {"estimates": {"ips"|"snips"|"dr":
                                {"value": v, "ci95": [lo, hi]}}, "episodes": n}},
                                "behaviour": {"value": v}, "split": {...}}
                               v, lo, hi in [0, 1]; SNIPS value and ci95 null when no
                               logged decision matches the policy (undefined)
    ope_decisions_<NAME>.csv   patient_id, condition_id, treatment_id: the policy's first
                               choice for each evaluated decision (empty when none is allowed)
    ope.md                     the same as a table
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..columns import Columns as C
from ..data.dataset import Dataset
from ..data.policies import ConfidencePolicy
from ..data.side_info import SideInfo
from ..data.splits import temporal
from ..data.tables import CohortTables
from ..exceptions import DataValidationError
from ..models import Recommender
from ..models.outcome import OutcomeRecommender
from ..utils.escaping import csv_safe, markdown_row
from ..utils.jsonable import jsonable
from .ope import ESTIMATORS, Estimate
from .policy_value import first_line_decisions, off_policy_value, policy_choices
from .spec import named_models


@dataclass
class OffPolicyResult:
    """Estimates per model, the behaviour value and each policy's choices."""

    estimates: dict[str, dict[str, Estimate]]
    episodes: int
    behaviour: float
    choices: dict[str, pd.DataFrame]
    split: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return jsonable(
            {
                "models": {
                    name: {
                        "estimates": {k: e.to_dict() for k, e in estimates.items()},
                        "episodes": self.episodes,
                    }
                    for name, estimates in self.estimates.items()
                },
                "behaviour": {"value": self.behaviour},
                "split": self.split,
            }
        )

    def write(self, folder: Path) -> None:
        """ope.json, ope_decisions_<NAME>.csv and ope.md into ``folder``."""
        folder = Path(folder)
        (folder / "ope.json").write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))
        for name, frame in self.choices.items():
            csv_safe(frame).to_csv(folder / f"ope_decisions_{_file_name(name)}.csv", index=False)
        (folder / "ope.md").write_text(self.markdown())

    def markdown(self) -> str:
        lines = [
            "## Off-policy evaluation",
            "",
            f"{self.episodes} first-line decisions after the cutoff "
            f"({self.split.get('method', 'time split')}); clinicians' observed success rate "
            f"{self.behaviour:.3f}. Each value is the success rate the model's first choices "
            "would have had, with a 95% patient-bootstrap interval, widened by the worst case "
            "of the choices clinicians almost never made for such patients (their share is "
            "the unsupported column; the bootstrap-only interval is in ope.json as `sampling_ci95`). "
            "Values are clipped to [0, 1]; SNIPS is undefined when no logged decision matches "
            "the policy. A mean importance weight far from 1 means the propensities are off and "
            "IPS is not to be read; the effective n is the weights' effective sample size.",
            "",
            "| model | "
            + " | ".join(e.upper() for e in ESTIMATORS)
            + " | unsupported | mean weight | effective n |",
            "|---|" + "---|" * (len(ESTIMATORS) + 3),
        ]
        for name, estimates in self.estimates.items():
            cells = [estimates[e].text() for e in ESTIMATORS]
            first = estimates[ESTIMATORS[0]]
            lines.append(
                markdown_row(
                    [
                        name,
                        *cells,
                        f"{first.unsupported:.1%}",
                        f"{first.mean_weight:.2f}",
                        f"{first.effective_n:.0f}",
                    ]
                )
            )
        return "\n".join(lines) + "\n"


def off_policy_evaluation(
    models,
    tables: CohortTables,
    *,
    cutoff=None,
    fraction: float = 0.2,
    policy: ConfidencePolicy | None = None,
    side_info: SideInfo | None = None,
    nuisance: OutcomeRecommender | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> OffPolicyResult:
    """Value each of ``models`` (kinds, instances or a mapping, as
    :func:`~recommender.evaluation.evaluate.evaluate` takes) on the first-line decisions after
    a time split of ``tables``.

    Raises
    ------
    DataValidationError
        When the test part holds no first-line decision the training part can encode.
    """
    split = temporal(tables, cutoff=cutoff, fraction=fraction)
    dataset = Dataset.from_tables(split.train, policy=policy, side_info=side_info)
    decisions = first_line_decisions(dataset, split.test)
    if not len(decisions):
        raise DataValidationError(
            "no first-line decision after the cutoff: off-policy evaluation needs test rows "
            "whose (patient, condition) had no try before it, with a time and a condition",
            file="outcomes",
            column=C.timestamp,
        )
    helper = (nuisance or OutcomeRecommender(random_state=seed)).clone().fit(dataset)
    estimates, choices = {}, {}
    for name, model in named_models(models).items():
        fitted: Recommender = model.fit(dataset)
        chosen = policy_choices(fitted, decisions.patient, decisions.condition, decisions.time)
        estimates[name] = off_policy_value(
            chosen, decisions, helper, n_bootstrap=n_bootstrap, seed=seed
        )
        choices[name] = pd.DataFrame(
            {
                C.patient: dataset.patients.external_ids[decisions.patient],
                C.condition: dataset.conditions.external_ids[decisions.condition],
                C.treatment: np.where(
                    chosen >= 0, dataset.treatments.external_ids[np.maximum(chosen, 0)], ""
                ),
            }
        )
    return OffPolicyResult(
        estimates=estimates,
        episodes=len(decisions),
        behaviour=float(decisions.success.mean()),
        choices=choices,
        split=split.summary(),
    )


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
