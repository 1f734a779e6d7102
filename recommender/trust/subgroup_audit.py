"""Subgroup audit: is the model as good for every patient group, and what does it suggest to each?

Two questions, answered with two different models on purpose:

*Quality per group* (honest, held-out). Scoring the artifact on the outcomes it was trained on
would flatter it, so the audit re-fits the artifact's model kind with its hyperparameters, its
confidence policy, side information and harm threshold on a training split of the audit data
(``split``, default ``leave-last``) and ranks the held-out treatments with
:func:`recommender.evaluation.evaluate.evaluate_model`, exactly as ``recommender evaluate`` does (safety
exclusions included). Each query, one (patient, condition) "what next?", is put into its
patient's group and the per-query metrics are averaged per group: the ranking metrics at ``k``,
MRR and ``reachable`` (a treatment that worked could be suggested at all: no safety rule
excluded it and it is a candidate for the condition) over queries with a held-out treatment
that worked, ``outcome_auc`` and ``harm_rank`` over the queries that define them (see
:mod:`recommender.evaluation.evaluate`).

*Exposure per group* (the artifact itself). Every patient of the artifact is ranked by the
artifact's model, once per diagnosed condition that has candidate treatments (``requests=
"condition"``, as the service is asked) or once over every treatment (``requests="patient"``),
tried treatments excluded. The exposure of a treatment in a group is its share of the group's
filled top-k slots. Differences reflect case mix (groups have different conditions and
histories) as well as the model; read them next to the quality numbers.

Groups come from the ``patients`` table: ``age_band`` from ``birth_year`` at the data's
reference year (the year of its latest outcome, :func:`recommender.data.dataset.age_band`), any
other column as recorded (``sex``, ``race``, ``ethnicity``, ``payer`` ...). A patient with no
value is in the group ``unknown``. The *gap* of a metric is the largest minus the smallest
group value among the groups with at least ``min_group_size`` queries counted for that metric;
``unknown`` and smaller groups are reported but never used for the gap. A gap above
``max_gap`` is flagged. Each group value carries its standard error (sd / sqrt(n)) so a reader
can tell a gap from noise.

An artifact trained with a pseudonymisation key holds keyed patient ids: its patients are
matched to the audit data through the same key, and without it the audit stops with a message.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..columns import Columns as C
from ..data.pseudonym import Pseudonymizer
from ..data.splits import SPLITS
from ..data.tables import CohortTables, read_tables
from ..exceptions import ParameterError
from ..models.persistence import Artifact, load_artifact
from ..ranking import check_k
from ..utils.jsonable import jsonable
from .subgroup_exposure import exposure_gaps, exposure_slots, group_exposure, treatment_names
from .subgroup_quality import audit_metrics, group_metrics, held_out_queries, metric_gaps
from .subgroups import UNKNOWN, group_order, patient_groups, reference_year, resolve_attributes

log = logging.getLogger(__name__)

DEFAULT_MIN_GROUP_SIZE = 30


DEFAULT_MAX_GAP = 0.10


REQUEST_MODES = ("condition", "patient")


#: Most treatments shown in an exposure heat map (the most exposed overall).
HEATMAP_ROWS = 25


JSON_FILE, MARKDOWN_FILE = "audit.json", "audit.md"


@dataclass
class AuditResult:
    """A subgroup audit (see the module docstring for every definition).

    Attributes
    ----------
    k, min_group_size, max_gap, attributes
        The settings; ``attributes`` are the audited patient columns.
    groups : DataFrame
        attribute, group, n_patients (in the audit data), n_queries (held-out queries),
        mean_allowed (treatments a query could rank after the exclusions, on average: a group
        with fewer candidates has easier queries), n_requests (exposure rankings), small
        (fewer than ``min_group_size`` queries).
    metrics : DataFrame
        attribute, group, metric, value, n (queries counted), se, used (for the gap); the
        attribute ``all`` holds the whole cohort.
    gaps : DataFrame
        attribute, metric, gap, se (of the difference), z (gap / se), high_group, high,
        low_group, low, n_groups (used), flagged (gap > ``max_gap``).
    exposure : DataFrame
        attribute, group, treatment_id, slots, share (of the group's filled top-k slots).
    exposure_gaps : DataFrame
        attribute, treatment_id, gap, high_group, high, low_group, low: the spread of each
        treatment's share across the groups with at least ``min_group_size`` requests.
    info : dict
        Model, artifact, data, split and exposure descriptions, and notes.
    treatment_names : dict of str -> str
        Names of the exposed treatments from the data's ``treatments`` table (may be empty).
    queries : DataFrame
        Per-query metrics with the group of each query (in memory only: it holds patient ids).
    """

    k: int
    min_group_size: int
    max_gap: float
    attributes: list[str]
    groups: pd.DataFrame
    metrics: pd.DataFrame
    gaps: pd.DataFrame
    exposure: pd.DataFrame
    exposure_gaps: pd.DataFrame
    info: dict
    treatment_names: dict = field(default_factory=dict)
    queries: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    @property
    def flags(self) -> pd.DataFrame:
        """The gaps above ``max_gap``, largest first."""
        return self.gaps[self.gaps["flagged"]].sort_values("gap", ascending=False)

    def value(self, attribute: str, group: str, metric: str) -> float:
        """One group's value of one metric (NaN when it has no query for it)."""
        rows = self.metrics[
            (self.metrics["attribute"] == attribute)
            & (self.metrics["group"] == group)
            & (self.metrics["metric"] == metric)
        ]
        return float(rows["value"].iloc[0]) if len(rows) else float("nan")

    def to_dict(self) -> dict:
        """Everything but the per-query table, as plain JSON types (NaN as None)."""

        def records(frame: pd.DataFrame) -> list[dict]:
            return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")

        return jsonable(
            {
                "k": self.k,
                "min_group_size": self.min_group_size,
                "max_gap": self.max_gap,
                "attributes": self.attributes,
                **self.info,
                "treatment_names": self.treatment_names,
                "flags": records(self.flags),
                "groups": records(self.groups),
                "metrics": records(self.metrics),
                "gaps": records(self.gaps),
                "exposure": records(self.exposure),
                "exposure_gaps": records(self.exposure_gaps),
            }
        )


def audit(
    artifact: Artifact | str | Path,
    data: CohortTables | str | Path,
    by: Sequence[str] | None = None,
    *,
    k: int = 10,
    split: str = "leave-last",
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE,
    max_gap: float = DEFAULT_MAX_GAP,
    requests: str = "condition",
    pseudonymizer: Pseudonymizer | None = None,
) -> AuditResult:
    """Audit quality and exposure of ``artifact`` across the patient groups of ``data``.

    Parameters
    ----------
    artifact : Artifact or path
        The model to audit (its kind, parameters and encoding are re-fitted for the quality part).
    data : CohortTables or path
        Canonical tables of the cohort to audit, usually the artifact's training data.
    by : sequence of str, optional
        Patient columns to group by (``age_band`` is derived from ``birth_year``); default every
        column of ``DEFAULT_ATTRIBUTES`` the data has.
    k : int
        Cut-off of the ranking metrics and of the exposure lists.
    split : str
        Hold-out rule of :data:`recommender.data.splits.SPLITS` for the quality part.
    min_group_size : int
        Fewest queries (per metric) or requests (exposure) a group needs to enter a gap.
    max_gap : float
        Gaps above this are flagged.
    requests : {"condition", "patient"}
        Exposure rankings: one per (patient, diagnosed condition with candidates), or one per
        patient over every treatment.
    pseudonymizer : Pseudonymizer, optional
        The training key of a pseudonymised artifact (default: the one attached to it).

    Raises
    ------
    ParameterError
        Bad ``k``, ``split``, ``requests``, ``min_group_size`` or ``max_gap``.
    DataValidationError
        An attribute the data does not have, or nothing to hold out.
    ArtifactError
        A pseudonymised artifact without its key, or with another key.
    """
    k = check_k(k)
    _check_settings(split, requests, min_group_size, max_gap)
    if not isinstance(artifact, Artifact):
        artifact = load_artifact(artifact, pseudonymizer=pseudonymizer)
    tables = data if isinstance(data, CohortTables) else read_tables(data)
    year = reference_year(tables)
    attributes = resolve_attributes(tables, by, year)
    groups = patient_groups(tables, attributes, year)
    queries, split_info = held_out_queries(artifact, tables, split, k)
    for attribute in attributes:
        queries[attribute] = (
            groups[attribute].reindex(queries[C.patient]).fillna(UNKNOWN).to_numpy()
        )
    metrics = group_metrics(queries, attributes, audit_metrics(k), min_group_size)
    slots, n_requests, matched = exposure_slots(artifact, groups, k, requests, pseudonymizer)
    exposure, request_counts = group_exposure(
        artifact, groups, slots, n_requests, matched, attributes
    )
    notes = _notes(artifact, tables, matched)
    info = {
        "model": {
            "type": artifact.manifest["model"]["type"],
            "params": artifact.manifest["model"]["params"],
        },
        "artifact": {
            "path": str(artifact.path),
            "version": artifact.manifest.get("version"),
            "data_fingerprint": artifact.manifest["data"].get("fingerprint"),
        },
        "data": {
            "fingerprint": tables.fingerprint,
            "reference_year": year,
            "n_patients": len(groups),
        },
        "split": split_info,
        "exposure": {
            "requests": requests,
            "n_requests": int(n_requests.sum()),
            "n_patients_matched": int((matched >= 0).sum()),
            "n_patients_artifact": int(len(matched)),
        },
        "notes": notes,
    }
    return AuditResult(
        k=k,
        min_group_size=min_group_size,
        max_gap=float(max_gap),
        attributes=attributes,
        groups=_group_table(groups, queries, request_counts, attributes, min_group_size),
        metrics=metrics,
        gaps=metric_gaps(metrics, max_gap),
        exposure=exposure,
        exposure_gaps=exposure_gaps(exposure, request_counts, min_group_size),
        info=info,
        treatment_names=treatment_names(tables, exposure),
        queries=queries,
    )


def _check_settings(split: str, requests: str, min_group_size: int, max_gap: float) -> None:
    if split not in SPLITS:
        raise ParameterError(f"unknown split {split!r}; choose one of {sorted(SPLITS)}")
    if requests not in REQUEST_MODES:
        raise ParameterError(f"requests must be one of {list(REQUEST_MODES)}; got {requests!r}")
    if (
        isinstance(min_group_size, bool)
        or not isinstance(min_group_size, (int, np.integer))
        or min_group_size < 1
    ):
        raise ParameterError(f"min_group_size must be a positive int; got {min_group_size!r}")
    if not isinstance(max_gap, (int, float)) or not 0 <= max_gap <= 1:
        raise ParameterError(f"max_gap must be a number in [0, 1]; got {max_gap!r}")


def _group_table(
    groups: pd.DataFrame,
    queries: pd.DataFrame,
    requests: pd.DataFrame,
    attributes: Sequence[str],
    min_group_size: int,
) -> pd.DataFrame:
    """attribute, group, n_patients, n_queries, mean_allowed, n_requests, small: one row per group."""
    rows = []
    for attribute in attributes:
        patients = groups[attribute].value_counts()
        n_queries = queries[attribute].value_counts()
        allowed = queries.groupby(attribute)["n_allowed"].mean()
        n_requests = requests[requests["attribute"] == attribute].set_index("group")["n_requests"]
        labels = set(patients.index) | set(n_queries.index) | set(n_requests.index)
        for group in sorted(labels, key=group_order):
            q = int(n_queries.get(group, 0))
            rows.append(
                {
                    "attribute": attribute,
                    "group": group,
                    "n_patients": int(patients.get(group, 0)),
                    "n_queries": q,
                    "mean_allowed": float(allowed.get(group, float("nan"))),
                    "n_requests": int(n_requests.get(group, 0)),
                    "small": q < min_group_size,
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "attribute",
            "group",
            "n_patients",
            "n_queries",
            "mean_allowed",
            "n_requests",
            "small",
        ],
    )


def _notes(artifact: Artifact, tables: CohortTables, matched: np.ndarray) -> list[str]:
    notes = []
    if artifact.manifest["data"].get("fingerprint") != tables.fingerprint:
        notes.append(
            "the audit data is not the artifact's training data (fingerprints differ): "
            "the re-fitted quality numbers describe the model kind on this data"
        )
    absent = int((matched < 0).sum())
    if absent:
        notes.append(
            f"{absent} of the artifact's {len(matched)} patients are not in the audit "
            f"data; their exposure is counted in the group '{UNKNOWN}'"
        )
    return notes
