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
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..models.persistence import Artifact, load_artifact
from ..columns import Columns as C
from ..data.policies import ConfidencePolicy, SafetyPolicy
from ..data.dataset import Dataset
from ..data.side_info import SideInfo, age_band
from ..evaluation.queries import build_queries, condition_batches
from ..evaluation.evaluate import evaluate_model
from ..exceptions import ArtifactError, DataValidationError, ParameterError
from ..data.tables import CohortTables, read_tables
from ..utils.jsonable import jsonable
from ..models import make_model
from ..data.pseudonym import KEY_FILE_VARIABLE, Pseudonymizer, check_key
from ..ranking import check_k, rank_patients
from ..data.splits import SPLITS

log = logging.getLogger(__name__)

AGE_BAND = "age_band"
UNKNOWN = "unknown"
ALL = "all"
#: Attributes audited by default, each when the data has it.
DEFAULT_ATTRIBUTES = (C.sex, AGE_BAND, "race", "ethnicity", "payer")
DEFAULT_MIN_GROUP_SIZE = 30
DEFAULT_MAX_GAP = 0.10
REQUEST_MODES = ("condition", "patient")
RANKING = ("hit", "ndcg", "recall", "precision", "map")
#: Share of queries where a held-out treatment that worked was rankable at all (not excluded by
#: a safety rule, a candidate for the condition): a miss it explains is not the ranking's fault.
REACHABLE = "reachable"
#: Metrics counted over every query that defines them (the others need a relevant treatment).
OUTCOME_METRICS = ("outcome_auc", "harm_rank")
#: Most treatments shown in an exposure heat map (the most exposed overall).
HEATMAP_ROWS = 25
JSON_FILE, MARKDOWN_FILE = "audit.json", "audit.md"


def audit_metrics(k: int) -> dict[str, str]:
    """Audited metric name -> per-query column of :func:`recommender.evaluation.evaluate.evaluate_model`."""
    names = {f"{m}@{k}": f"{m}@{k}" for m in RANKING}
    return {**names, "mrr": "rr", REACHABLE: REACHABLE, **{m: m for m in OUTCOME_METRICS}}


# --- result -------------------------------------------------------------------------------------

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
        rows = self.metrics[(self.metrics["attribute"] == attribute)
                            & (self.metrics["group"] == group) & (self.metrics["metric"] == metric)]
        return float(rows["value"].iloc[0]) if len(rows) else float("nan")

    def to_dict(self) -> dict:
        """Everything but the per-query table, as plain JSON types (NaN as None)."""
        def records(frame: pd.DataFrame) -> list[dict]:
            return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
        return jsonable({
            "k": self.k, "min_group_size": self.min_group_size, "max_gap": self.max_gap,
            "attributes": self.attributes, **self.info, "treatment_names": self.treatment_names,
            "flags": records(self.flags), "groups": records(self.groups),
            "metrics": records(self.metrics), "gaps": records(self.gaps),
            "exposure": records(self.exposure), "exposure_gaps": records(self.exposure_gaps)})


# --- entry point --------------------------------------------------------------------------------

def audit(artifact: Artifact | str | Path, data: CohortTables | str | Path,
          by: Sequence[str] | None = None, *, k: int = 10, split: str = "leave-last",
          min_group_size: int = DEFAULT_MIN_GROUP_SIZE, max_gap: float = DEFAULT_MAX_GAP,
          requests: str = "condition", pseudonymizer: Pseudonymizer | None = None) -> AuditResult:
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
        queries[attribute] = groups[attribute].reindex(queries[C.patient]).fillna(UNKNOWN).to_numpy()
    metrics = group_metrics(queries, attributes, audit_metrics(k), min_group_size)
    slots, n_requests, matched = exposure_slots(artifact, groups, k, requests, pseudonymizer)
    exposure, request_counts = group_exposure(artifact, groups, slots, n_requests, matched,
                                              attributes)
    notes = _notes(artifact, tables, matched)
    info = {"model": {"type": artifact.manifest["model"]["type"],
                      "params": artifact.manifest["model"]["params"]},
            "artifact": {"path": str(artifact.path), "version": artifact.manifest.get("version"),
                         "data_fingerprint": artifact.manifest["data"].get("fingerprint")},
            "data": {"fingerprint": tables.fingerprint, "reference_year": year,
                     "n_patients": len(groups)},
            "split": split_info,
            "exposure": {"requests": requests, "n_requests": int(n_requests.sum()),
                         "n_patients_matched": int((matched >= 0).sum()),
                         "n_patients_artifact": int(len(matched))},
            "notes": notes}
    return AuditResult(k=k, min_group_size=min_group_size, max_gap=float(max_gap),
                       attributes=attributes,
                       groups=_group_table(groups, queries, request_counts, attributes, min_group_size),
                       metrics=metrics, gaps=metric_gaps(metrics, max_gap),
                       exposure=exposure,
                       exposure_gaps=exposure_gaps(exposure, request_counts, min_group_size),
                       info=info, treatment_names=_treatment_names(tables, exposure),
                       queries=queries)


def _check_settings(split: str, requests: str, min_group_size: int, max_gap: float) -> None:
    if split not in SPLITS:
        raise ParameterError(f"unknown split {split!r}; choose one of {sorted(SPLITS)}")
    if requests not in REQUEST_MODES:
        raise ParameterError(f"requests must be one of {list(REQUEST_MODES)}; got {requests!r}")
    if isinstance(min_group_size, bool) or not isinstance(min_group_size, (int, np.integer)) \
            or min_group_size < 1:
        raise ParameterError(f"min_group_size must be a positive int; got {min_group_size!r}")
    if not isinstance(max_gap, (int, float)) or not 0 <= max_gap <= 1:
        raise ParameterError(f"max_gap must be a number in [0, 1]; got {max_gap!r}")


# --- groups -------------------------------------------------------------------------------------

def reference_year(tables: CohortTables) -> int | None:
    """Year of the latest outcome (the Dataset's rule for age bands); None without timestamps."""
    times = tables.outcomes[C.timestamp]
    return int(times.max().year) if times.notna().any() else None


def resolve_attributes(tables: CohortTables, by: Sequence[str] | None, year: int | None) -> list[str]:
    """The attributes to audit: ``by`` checked against the data, or the available defaults."""
    columns = set(tables.patients.columns) - {C.patient} if tables.patients is not None else set()
    available = columns - {C.birth_year}
    if C.birth_year in columns and year is not None:
        available.add(AGE_BAND)
    if by is None:
        chosen = [a for a in DEFAULT_ATTRIBUTES if a in available]
        if not chosen:
            raise DataValidationError(
                "no attribute to audit: the patients table is missing or has none of "
                f"{list(DEFAULT_ATTRIBUTES)}; name columns with by=... (--by)", file="patients")
        return chosen
    chosen = list(dict.fromkeys(a.strip() for a in by if a.strip()))
    missing = [a for a in chosen if a not in available]
    if missing or not chosen:
        why = (" (age_band needs birth_year in patients and timestamps in outcomes)"
               if AGE_BAND in missing else "")
        raise DataValidationError(f"cannot group by {missing or chosen}{why}; the data has "
                                  f"{sorted(available) or 'no patient attributes'}", file="patients")
    return chosen


def patient_groups(tables: CohortTables, attributes: Sequence[str], year: int | None) -> pd.DataFrame:
    """Group label (str, ``unknown`` when missing) of every patient id in any table.

    Returns a DataFrame indexed by raw patient id with one column per attribute.
    """
    ids = [tables.outcomes[C.patient]]
    ids += [t[C.patient] for t in (tables.patients, tables.patient_conditions) if t is not None]
    index = pd.Index(pd.unique(pd.concat(ids, ignore_index=True)), name=C.patient)
    patients = (tables.patients.set_index(C.patient) if tables.patients is not None
                else pd.DataFrame(index=pd.Index([], name=C.patient)))
    frame = pd.DataFrame(index=index)
    for attribute in attributes:
        if attribute == AGE_BAND:
            years = patients[C.birth_year].reindex(index)
            values = pd.Series([age_band(y, year) for y in years.to_numpy()], index=index)
        else:
            values = patients[attribute].reindex(index)
        values = values.astype(object).where(values.notna(), "").astype(str).str.strip()
        frame[attribute] = values.where(values != "", UNKNOWN).astype(object)
    return frame


# --- quality ------------------------------------------------------------------------------------

def held_out_queries(artifact: Artifact, tables: CohortTables, split: str,
                     k: int) -> tuple[pd.DataFrame, dict]:
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
        raise DataValidationError(f"the {split} split holds out nothing (no patient has two or "
                                  "more treatments on record); the audit needs held-out outcomes",
                                  file="outcomes")
    data = manifest["data"]
    encoding = {"policy": ConfidencePolicy(**data["policy"]), "side_info": SideInfo(**data["side_info"]),
                "harm_threshold": data.get("harm_threshold", 0.0)}
    if "safety" in data:  # the safety settings (minimum evidence ...) the artifact ranks with
        encoding["safety"] = SafetyPolicy(**data["safety"])
    dataset = Dataset.from_tables(parts.train, **encoding)
    model = make_model(manifest["model"]["type"], **manifest["model"]["params"])
    result = evaluate_model(model, dataset, build_queries(dataset, parts.test), (k,))
    log.info("audit: re-fitted %s on %s in %.1fs", model.kind, parts.method, result.fit_seconds)
    queries = result.queries
    queries[REACHABLE] = np.where(queries["n_relevant"] > 0, queries["rr"] > 0, np.nan)
    return queries, {**parts.summary(), "n_queries": len(queries)}


def group_metrics(queries: pd.DataFrame, attributes: Sequence[str], metrics: Mapping[str, str],
                  min_group_size: int) -> pd.DataFrame:
    """Mean, count and standard error of each metric per group (and for ``all``).

    ``used`` is True for a known group with at least ``min_group_size`` queries for the metric.
    """
    rows = []
    relevant = queries["n_relevant"].to_numpy() > 0
    for attribute in (ALL, *attributes):
        labels = (np.full(len(queries), ALL, object) if attribute == ALL
                  else queries[attribute].to_numpy())
        for group in sorted(pd.unique(labels), key=group_order):
            in_group = labels == group
            for name, column in metrics.items():
                values = queries[column].to_numpy(np.float64)
                counted = in_group & ~np.isnan(values) & (relevant if name not in OUTCOME_METRICS else True)
                n = int(counted.sum())
                chosen = values[counted]
                rows.append({"attribute": attribute, "group": group, "metric": name,
                             "value": float(chosen.mean()) if n else float("nan"), "n": n,
                             "se": float(chosen.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
                             "used": bool(attribute != ALL and group != UNKNOWN and n >= min_group_size)})
    return pd.DataFrame(rows, columns=["attribute", "group", "metric", "value", "n", "se", "used"])


def metric_gaps(metrics: pd.DataFrame, max_gap: float) -> pd.DataFrame:
    """Largest minus smallest group value per (attribute, metric) over the ``used`` groups.

    ``se`` combines the two groups' standard errors and ``z = gap / se``; as the pair is the most
    extreme of several groups, ``z`` overstates the evidence and is only a guide.
    """
    rows = []
    for (attribute, metric), frame in metrics[metrics["attribute"] != ALL].groupby(
            ["attribute", "metric"], sort=False):
        used = frame[frame["used"] & frame["value"].notna()]
        row = {"attribute": attribute, "metric": metric, "gap": float("nan"), "se": float("nan"),
               "z": float("nan"),
               "high_group": None, "high": float("nan"), "low_group": None, "low": float("nan"),
               "n_groups": len(used), "flagged": False}
        if len(used) >= 2:
            high, low = used.loc[used["value"].idxmax()], used.loc[used["value"].idxmin()]
            gap = float(high["value"] - low["value"])
            se = float(np.hypot(high["se"], low["se"]))
            row.update(gap=gap, se=se, z=gap / se if se > 0 else float("nan"),
                       high_group=high["group"], high=float(high["value"]),
                       low_group=low["group"], low=float(low["value"]), flagged=bool(gap > max_gap))
        rows.append(row)
    return pd.DataFrame(rows, columns=["attribute", "metric", "gap", "se", "z", "high_group", "high",
                                       "low_group", "low", "n_groups", "flagged"])


# --- exposure -----------------------------------------------------------------------------------

def exposure_slots(artifact: Artifact, groups: pd.DataFrame, k: int, requests: str,
                   pseudonymizer: Pseudonymizer | None) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Rank the artifact's patients with its model and count top-k slots.

    Returns ``slots`` CSR (n_p, n_t) int64 (times each treatment filled a top-k slot of the
    patient's lists), ``n_requests`` (n_p,) int64 and ``matched`` (n_p,) int64: the row of
    ``groups`` of each artifact patient, -1 when the audit data does not have the patient.
    """
    dataset = artifact.dataset
    matched = _match_patients(artifact, groups.index, pseudonymizer)
    if requests == "condition":
        pairs = dataset.patient_conditions.tocoo()
        has_candidates = np.asarray((dataset.condition_outcomes > 0).sum(axis=1)).ravel() > 0
        keep = has_candidates[pairs.col]
        patients, conditions = pairs.row[keep].astype(np.int64), pairs.col[keep].astype(np.int64)
    else:
        patients = np.arange(dataset.n_patients)
        conditions = np.full(dataset.n_patients, -1, np.int64)
    rows, cols = [], []
    for condition, candidates, chunk in condition_batches(dataset, conditions):
        idx, _ = rank_patients(artifact.model, patients[chunk], condition, candidates, k,
                               include_tried=False)
        filled = idx >= 0
        rows.append(np.repeat(patients[chunk], k)[filled.ravel()])
        cols.append(idx[filled])
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    slots = sp.csr_matrix((np.ones(len(rows), np.int64), (rows, cols)),
                          shape=(dataset.n_patients, dataset.n_treatments))
    slots.sum_duplicates()
    return slots, np.bincount(patients, minlength=dataset.n_patients), matched


def _match_patients(artifact: Artifact, raw_ids: pd.Index, pseudonymizer: Pseudonymizer | None) -> np.ndarray:
    """Row in ``raw_ids`` of each artifact patient (-1: absent), through the key when keyed."""
    dataset = artifact.dataset
    keys = raw_ids.to_numpy().astype(str)
    if dataset.pseudonym_fingerprint:
        pseudonymizer = pseudonymizer or dataset.pseudonymizer
        if pseudonymizer is None:
            raise ArtifactError(
                f"{artifact.path}: its patient ids are pseudonymised, so its patients cannot be "
                "matched to their groups in the audit data; give the training key with "
                f"--pseudonym-key-file or {KEY_FILE_VARIABLE}")
        check_key(artifact.manifest["pseudonyms"], pseudonymizer, str(artifact.path))
        keys = pseudonymizer.many(keys).astype(str)
    return pd.Index(keys).get_indexer(dataset.patients.external_ids.astype(str)).astype(np.int64)


def group_exposure(artifact: Artifact, groups: pd.DataFrame, slots: sp.csr_matrix,
                   n_requests: np.ndarray, matched: np.ndarray,
                   attributes: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Exposure shares per (attribute, group, treatment) and request counts per group.

    Returns ``exposure`` (attribute, group, treatment_id, slots, share; treatments that fill no
    slot for the attribute are left out) and ``requests`` (attribute, group, n_ranked patients,
    n_requests, n_slots). Artifact patients absent from ``groups`` count as ``unknown``.
    """
    treatment_ids = artifact.dataset.treatments.external_ids
    parts, counts = [], []
    for attribute in (ALL, *attributes):
        if attribute == ALL:
            labels = np.full(len(matched), ALL, object)
        else:
            values = groups[attribute].to_numpy()
            labels = np.where(matched >= 0, values[np.maximum(matched, 0)], UNKNOWN).astype(object)
        codes, names = pd.factorize(labels)
        indicator = sp.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))),
                                  shape=(len(names), len(codes)))
        per_group = np.asarray((indicator @ slots).todense(), dtype=np.int64)   # (n_g, n_t)
        totals = per_group.sum(axis=1)
        shown = np.flatnonzero(per_group.sum(axis=0) > 0)
        share = per_group[:, shown] / np.maximum(totals, 1)[:, None]
        parts.append(pd.DataFrame({
            "attribute": attribute, "group": np.repeat(np.asarray(names, object), len(shown)),
            "treatment_id": np.tile(treatment_ids[shown], len(names)),
            "slots": per_group[:, shown].ravel(), "share": share.ravel()}))
        counts.append(pd.DataFrame({
            "attribute": attribute, "group": np.asarray(names, object),
            "n_ranked": np.bincount(codes, weights=n_requests > 0, minlength=len(names)).astype(np.int64),
            "n_requests": np.bincount(codes, weights=n_requests, minlength=len(names)).astype(np.int64),
            "n_slots": totals}))
    return pd.concat(parts, ignore_index=True), pd.concat(counts, ignore_index=True)


def exposure_gaps(exposure: pd.DataFrame, requests: pd.DataFrame, min_group_size: int) -> pd.DataFrame:
    """Per (attribute, treatment): highest minus lowest share over known groups with at least
    ``min_group_size`` requests; largest first."""
    eligible = requests[(requests["attribute"] != ALL) & (requests["group"] != UNKNOWN)
                        & (requests["n_requests"] >= min_group_size)]
    frame = exposure.merge(eligible[["attribute", "group"]], on=["attribute", "group"])
    rows = []
    for (attribute, treatment), part in frame.groupby(["attribute", "treatment_id"], sort=False):
        if part["group"].nunique() < 2:
            continue
        high, low = part.loc[part["share"].idxmax()], part.loc[part["share"].idxmin()]
        rows.append({"attribute": attribute, "treatment_id": treatment,
                     "gap": float(high["share"] - low["share"]), "high_group": high["group"],
                     "high": float(high["share"]), "low_group": low["group"], "low": float(low["share"])})
    columns = ["attribute", "treatment_id", "gap", "high_group", "high", "low_group", "low"]
    return pd.DataFrame(rows, columns=columns).sort_values(["attribute", "gap"], ascending=[True, False],
                                                           ignore_index=True)


def _group_table(groups: pd.DataFrame, queries: pd.DataFrame, requests: pd.DataFrame,
                 attributes: Sequence[str], min_group_size: int) -> pd.DataFrame:
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
            rows.append({"attribute": attribute, "group": group,
                         "n_patients": int(patients.get(group, 0)), "n_queries": q,
                         "mean_allowed": float(allowed.get(group, float("nan"))),
                         "n_requests": int(n_requests.get(group, 0)), "small": q < min_group_size})
    return pd.DataFrame(rows, columns=["attribute", "group", "n_patients", "n_queries",
                                       "mean_allowed", "n_requests", "small"])


def _treatment_names(tables: CohortTables, exposure: pd.DataFrame) -> dict[str, str]:
    if tables.treatments is None:
        return {}
    names = tables.treatments.drop_duplicates(C.treatment).set_index(C.treatment)["name"]
    shown = pd.unique(exposure["treatment_id"])
    return {str(t): str(names[t]) for t in shown if t in names.index and str(names[t]).strip()}


def _notes(artifact: Artifact, tables: CohortTables, matched: np.ndarray) -> list[str]:
    notes = []
    if artifact.manifest["data"].get("fingerprint") != tables.fingerprint:
        notes.append("the audit data is not the artifact's training data (fingerprints differ): "
                     "the re-fitted quality numbers describe the model kind on this data")
    absent = int((matched < 0).sum())
    if absent:
        notes.append(f"{absent} of the artifact's {len(matched)} patients are not in the audit "
                     f"data; their exposure is counted in the group '{UNKNOWN}'")
    return notes


def group_order(label: str):
    """Sort groups naturally (age bands by their lower bound), ``unknown`` last."""
    if label == UNKNOWN:
        return (2, 0, "")
    head = label.split("-", 1)[0]
    return (0, int(head), label) if head.isdigit() else (1, 0, label)
