"""Why the outcome model predicts what it does for this patient, and how sure it is.

For each suggested therapy:

- ``predicted_success`` (the score) and ``predicted_success_ci95``: the bootstrap replicates'
  spread (Student t over the replicates), widened to the Wilson interval of the *effective*
  number of comparable patients who received it, ``decisions for the condition x propensity``,
  so a therapy rarely given to patients like this one cannot look certain;
- ``harm_probability``: the harm model's P(adverse outcome);
- ``overlap``: the propensity (how often clinicians chose it for patients like this one), the
  effective patients, and ``low`` when the propensity is under ``overlap_threshold``;
- ``contributions``: the patient's features that moved the prediction most, each as the change
  in predicted success (probability points) when that feature is replaced by "not known" (a
  diagnosis by "absent", the history by "no outcome on record"). This occlusion attribution
  is exact for the model's own function; unlike SHAP values it does not split an interaction
  between two features (an effect shared by eGFR and age shows in both).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...data.patient import Query
from ...utils.sparse_rows import lookup
from .features import PATIENT_GROUPS
from .forest import feature_bits
from .propensity import normalise

MAX_CONTRIBUTIONS = 5
#: Contributions below this (probability points) are not shown.
MIN_CONTRIBUTION = 1e-4

BASIS = (
    "predicted success for patients like this one (age, sex, diagnoses, latest labs){history}, "
    "learned from past treatment decisions{adjusted}"
)


def explain_predictions(model, query: Query, treatments: np.ndarray, condition: int) -> list[dict]:
    """Explanation entries (see the module docstring) for each of ``treatments`` for the single
    patient of ``query`` asking about ``condition`` (-1: each therapy's usual condition)."""
    dataset, layout, forest = model.dataset_, model.layout_, model.forest_
    if not len(treatments):
        return []
    choice = _choice_set(model, query, treatments, condition)
    rows, segments, leaves = model._one_patient(query, choice, condition)
    bags = [forest.names.index(b) for b in model._bags]
    at = np.searchsorted(choice, treatments)
    bag_raw = segments[at][:, bags]
    propensity = normalise(segments[:, forest.names.index("propensity")], np.zeros(len(choice)))[at]
    conditions = (
        np.full(len(treatments), condition)
        if condition >= 0
        else model.primary_condition_[treatments]
    )
    n_cond = np.where(conditions >= 0, model.condition_decisions_[np.maximum(conditions, 0)], 0)
    n_effective = n_cond * propensity
    low, high = model.interval(bag_raw, n_effective)
    success = 1.0 / (1.0 + np.exp(-bag_raw.mean(axis=1)))
    harm = 1.0 / (1.0 + np.exp(-segments[at, forest.names.index("harm")]))
    contributions = _contributions(model, rows[at], success, None if leaves is None else leaves[at])
    basis = BASIS.format(
        history=" and, through collaborative filtering, patients with similar outcome histories"
        if layout.n_factors
        else "",
        adjusted=", adjusted for how clinicians chose between therapies (inverse-propensity weights)"
        if model.weighting == "ipw"
        else "",
    )
    entries = []
    for i in range(len(treatments)):
        entries.append(
            {
                "basis": basis,
                "predicted_success": round(float(success[i]), 4),
                "predicted_success_ci95": [round(float(low[i]), 4), round(float(high[i]), 4)],
                "harm_probability": round(float(harm[i]), 4),
                "overlap": {
                    "propensity": round(float(propensity[i]), 4),
                    "effective_patients": round(float(n_effective[i]), 1),
                    "low": bool(propensity[i] < model.overlap_threshold),
                },
                "contributions": contributions[i],
            }
        )
    _ = dataset
    return entries


def _choice_set(model, query: Query, treatments: np.ndarray, condition: int) -> np.ndarray:
    """Sorted treatments the propensity is normalised over: the condition's candidates (the
    asked ones included), or the asked ones without a condition."""
    if condition < 0:
        return np.unique(treatments)
    candidates = model.dataset_.candidates(condition)
    if lookup(candidates, treatments)[1].all():  # the usual case: suggested among them
        return candidates
    return np.union1d(candidates, treatments)


def _contributions(
    model, X: np.ndarray, success: np.ndarray, leaves: np.ndarray | None
) -> list[list[dict]]:
    """Per feature row (a treatment), the strongest occlusion contributions of the patient's
    features (``leaves``: each row's leaf in each tree of the forest, or None).

    With the leaves, only the (group, row) pairs where some success tree's path for that row
    splits on the group's columns are predicted again: elsewhere the occluded row reaches the
    same leaves, so its contribution is exactly 0. Without them (the compiled forest scored
    the rows, several times faster than reading leaves through LightGBM) every pair is.
    """
    layout = model.layout_
    present = _present_groups(layout, X[0])
    if not present:
        return [[] for _ in range(len(X))]
    table = _occlusions(layout, X.shape[1])
    if leaves is None:
        moved = np.ones((len(present), len(X)), bool)
    else:
        on_path = model.forest_.path_features(leaves, model._bags)  # (rows, words)
        moved = (table.bits[present][:, None, :] & on_path[None, :, :]).any(axis=2)
    g_at, row_at = np.nonzero(moved)  # (group, row) pairs to predict again
    delta = np.zeros((len(present), len(X)))
    if len(g_at):
        chosen = table.masks[present][g_at]
        occluded = np.where(chosen, table.values[present][g_at], X[row_at])
        raw = model._mean_raw(occluded)
        delta[g_at, row_at] = success[row_at] - 1.0 / (1.0 + np.exp(-raw))
    described = [_describe(model, *table.groups[g], X[0]) for g in present]
    order = np.argsort(-np.abs(delta), axis=0, kind="stable")[:MAX_CONTRIBUTIONS]
    result = []
    for i in range(len(X)):
        column = delta[:, i].tolist()
        result.append(
            [
                {**described[g], "contribution": round(column[g], 4)}
                for g in order[:, i].tolist()
                if abs(column[g]) >= MIN_CONTRIBUTION
            ]
        )
    return result


@dataclass(frozen=True)
class _Occlusions:
    """Every patient feature group of a layout and how it is occluded.

    ``groups``: (group, its columns) in column order; ``masks``: bool (G, n_columns), the
    columns a group's occlusion replaces; ``values``: float64 (G, n_columns), what it puts
    there ("absent" 0 for a diagnosis, "not known" NaN otherwise, and a CF score of 0 with
    the history); ``bits``: uint64 (G, words), the columns as :func:`.forest.feature_bits`.
    """

    groups: list[tuple[str, list[int]]]
    masks: np.ndarray
    values: np.ndarray
    bits: np.ndarray


def _occlusions(layout, n_columns: int) -> _Occlusions:
    """The layout's :class:`_Occlusions` (fixed by the layout: made once per layout)."""
    cached = layout.__dict__.get("_occlusions")
    if cached is None:
        found: dict[str, list[int]] = {}
        for j, group in enumerate(layout.groups):
            if group in PATIENT_GROUPS or group.startswith(("diagnosis:", "observation:")):
                found.setdefault(group, []).append(j)
        groups = list(found.items())
        masks = np.zeros((len(groups), n_columns), bool)
        values = np.full((len(groups), n_columns), np.nan)
        for g, (group, columns) in enumerate(groups):
            masks[g, columns] = True
            if group.startswith("diagnosis:"):
                values[g, columns] = 0.0
            if group == "history":
                values[g, layout.columns.index("cf_score")] = 0.0
        bits = np.array([feature_bits(columns, n_columns) for _, columns in groups], np.uint64)
        cached = _Occlusions(groups, masks, values, bits.reshape(len(groups), -1))
        layout.__dict__["_occlusions"] = cached
    return cached


def _present_groups(layout, row: np.ndarray) -> list[int]:
    """Positions in :func:`_occlusions`' groups of the patient's known features."""
    values = row.tolist()
    history_count = layout.columns.index("history_count") if layout.n_factors else -1
    present = []
    for g, (group, columns) in enumerate(_occlusions(layout, len(values)).groups):
        if group.startswith("diagnosis:"):
            if values[columns[0]] == 1:
                present.append(g)
        elif group == "history":
            if layout.n_factors and values[history_count] > 0:
                present.append(g)
        elif any(values[j] == values[j] for j in columns):  # some value is not NaN
            present.append(g)
    return present


def _describe(model, group: str, columns: list[int], row: np.ndarray) -> dict:
    """The readable part of a contribution entry (what the feature is and its value)."""
    dataset, layout = model.dataset_, model.layout_
    if group.startswith("diagnosis:"):
        return {"source": "condition", "id": str(dataset.conditions.external_ids[int(group[10:])])}
    if group.startswith("observation:"):
        code = int(group[12:])
        return {
            "source": "observation",
            "code": str(dataset.observation_ids.external_ids[code]),
            "value": round(float(row[columns[0]]), 3),
        }
    if group == "age":
        return {"source": "age", "value": round(float(row[columns[0]]), 1)}
    if group == "sex":
        return {"source": "sex", "value": layout.sexes[int(row[columns[0]])]}
    return {
        "source": "history",
        "treatments_on_record": int(row[layout.columns.index("history_count")]),
    }
