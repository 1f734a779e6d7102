"""Quality per group: held-out metrics of a re-fitted model, averaged over each group's queries
(see :mod:`recommender.trust.subgroup_audit` for why the model is re-fitted)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..data.dataset import Dataset
from ..data.policies import ConfidencePolicy, SafetyPolicy
from ..data.side_info import SideInfo
from ..data.splits import SPLITS
from ..data.tables import CohortTables
from ..evaluation.evaluate import evaluate_model
from ..evaluation.queries import build_queries
from ..exceptions import DataValidationError
from ..models import make_model
from ..models.persistence import Artifact
from .subgroups import ALL, UNKNOWN, group_order

log = logging.getLogger(__name__)

RANKING = ("hit", "ndcg", "recall", "precision", "map")


#: Share of queries where a held-out treatment that worked was rankable at all (not excluded by
#: a safety rule, a candidate for the condition): a miss it explains is not the ranking's fault.
REACHABLE = "reachable"


#: Metrics counted over every query that defines them (the others need a relevant treatment).
OUTCOME_METRICS = ("outcome_auc", "harm_rank")


def audit_metrics(k: int) -> dict[str, str]:
    """Audited metric name -> per-query column of :func:`recommender.evaluation.evaluate.evaluate_model`."""
    names = {f"{m}@{k}": f"{m}@{k}" for m in RANKING}
    return {**names, "mrr": "rr", REACHABLE: REACHABLE, **{m: m for m in OUTCOME_METRICS}}


def held_out_queries(
    artifact: Artifact, tables: CohortTables, split: str, k: int
) -> tuple[pd.DataFrame, dict]:
    """Re-fit the artifact's model on a training split and score the held-out queries.

    Returns the per-query metrics of :func:`recommender.evaluation.evaluate.evaluate_model` (plus
    ``reachable``: 1 when a held-out treatment that worked was in the ranked list at all, 0 when
    every such treatment was excluded, NaN without one) and the split's
    summary. The model kind, parameters, confidence policy, side information, harm threshold and
    safety settings are the artifact's.
    """
    manifest = artifact.manifest
    parts = SPLITS[split](tables)
    if len(parts.test) == 0:
        raise DataValidationError(
            f"the {split} split holds out nothing (no patient has two or "
            "more treatments on record); the audit needs held-out outcomes",
            file="outcomes",
        )
    data = manifest["data"]
    encoding = {
        "policy": ConfidencePolicy(**data["policy"]),
        "side_info": SideInfo(**data["side_info"]),
        "harm_threshold": data.get("harm_threshold", 0.0),
    }
    if "safety" in data:  # the safety settings (minimum evidence ...) the artifact ranks with
        encoding["safety"] = SafetyPolicy(**data["safety"])
    dataset = Dataset.from_tables(parts.train, **encoding)
    model = make_model(manifest["model"]["type"], **manifest["model"]["params"])
    result = evaluate_model(model, dataset, build_queries(dataset, parts.test), (k,))
    log.info("audit: re-fitted %s on %s in %.1fs", model.kind, parts.method, result.fit_seconds)
    queries = result.queries
    queries[REACHABLE] = np.where(queries["n_relevant"] > 0, queries["rr"] > 0, np.nan)
    return queries, {**parts.summary(), "n_queries": len(queries)}


def group_metrics(
    queries: pd.DataFrame,
    attributes: Sequence[str],
    metrics: Mapping[str, str],
    min_group_size: int,
) -> pd.DataFrame:
    """Mean, count and standard error of each metric per group (and for ``all``).

    ``used`` is True for a known group with at least ``min_group_size`` queries for the metric.
    """
    rows = []
    relevant = queries["n_relevant"].to_numpy() > 0
    for attribute in (ALL, *attributes):
        labels = (
            np.full(len(queries), ALL, object)
            if attribute == ALL
            else queries[attribute].to_numpy()
        )
        for group in sorted(pd.unique(labels), key=group_order):
            in_group = labels == group
            for name, column in metrics.items():
                values = queries[column].to_numpy(np.float64)
                counted = (
                    in_group
                    & ~np.isnan(values)
                    & (relevant if name not in OUTCOME_METRICS else True)
                )
                n = int(counted.sum())
                chosen = values[counted]
                rows.append(
                    {
                        "attribute": attribute,
                        "group": group,
                        "metric": name,
                        "value": float(chosen.mean()) if n else float("nan"),
                        "n": n,
                        "se": float(chosen.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
                        "used": bool(attribute != ALL and group != UNKNOWN and n >= min_group_size),
                    }
                )
    return pd.DataFrame(rows, columns=["attribute", "group", "metric", "value", "n", "se", "used"])


def metric_gaps(metrics: pd.DataFrame, max_gap: float) -> pd.DataFrame:
    """Largest minus smallest group value per (attribute, metric) over the ``used`` groups.

    ``se`` combines the two groups' standard errors and ``z = gap / se``; as the pair is the most
    extreme of several groups, ``z`` overstates the evidence and is only a guide.
    """
    rows = []
    for (attribute, metric), frame in metrics[metrics["attribute"] != ALL].groupby(
        ["attribute", "metric"], sort=False
    ):
        used = frame[frame["used"] & frame["value"].notna()]
        row = {
            "attribute": attribute,
            "metric": metric,
            "gap": float("nan"),
            "se": float("nan"),
            "z": float("nan"),
            "high_group": None,
            "high": float("nan"),
            "low_group": None,
            "low": float("nan"),
            "n_groups": len(used),
            "flagged": False,
        }
        if len(used) >= 2:
            high, low = used.loc[used["value"].idxmax()], used.loc[used["value"].idxmin()]
            gap = float(high["value"] - low["value"])
            se = float(np.hypot(high["se"], low["se"]))
            row.update(
                gap=gap,
                se=se,
                z=gap / se if se > 0 else float("nan"),
                high_group=high["group"],
                high=float(high["value"]),
                low_group=low["group"],
                low=float(low["value"]),
                flagged=bool(gap > max_gap),
            )
        rows.append(row)
    return pd.DataFrame(
        rows,
        columns=[
            "attribute",
            "metric",
            "gap",
            "se",
            "z",
            "high_group",
            "high",
            "low_group",
            "low",
            "n_groups",
            "flagged",
        ],
    )
