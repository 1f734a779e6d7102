"""The pandas implementation of ``Dataset.from_tables`` before the integer-code encoder.

Kept only as a slow reference: the tests check that the encoder in ``recommender.data.dataset``
builds exactly the same Dataset (ids in the same order, every sparse matrix with the same
pattern, explicit zeros and values). The logic below is the original code, unchanged except that
the helpers are module functions instead of methods.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recommender.columns import Columns as C
from recommender.data.dataset import Dataset
from recommender.data.ids import IdMap
from recommender.data.matrices import OUTCOME_BUCKETS
from recommender.data.policies import SEVERITY_CODES, ConfidencePolicy, SafetyPolicy
from recommender.data.side_info import (
    FEATURE_AGE,
    FEATURE_CONDITION,
    FEATURE_SEX,
    SideInfo,
    age_band,
)
from recommender.data.tables import CohortTables


def reference_from_tables(
    tables: CohortTables,
    policy: ConfidencePolicy | None = None,
    side_info: SideInfo | None = None,
    harm_threshold: float = 0.0,
    pseudonymizer=None,
    safety: SafetyPolicy | None = None,
) -> Dataset:
    policy, side_info = policy or ConfidencePolicy(), side_info or SideInfo()
    if pseudonymizer is not None:
        tables = _pseudonymise(tables, pseudonymizer)
    outcomes = tables.outcomes
    patient_conditions = _frame_or_empty(tables.patient_conditions, [C.patient, C.condition])
    contraindications = _frame_or_empty(tables.contraindications, [C.treatment, C.condition])
    patients_table = _frame_or_empty(tables.patients, [C.patient])

    patients = IdMap.from_values(
        pd.concat([outcomes[C.patient], patient_conditions[C.patient], patients_table[C.patient]]),
        "patient",
    )
    treatments = IdMap(np.sort(outcomes[C.treatment].unique()), "treatment")
    conditions = IdMap(
        np.sort(
            pd.unique(
                pd.concat(
                    [
                        outcomes[C.condition].dropna(),
                        patient_conditions[C.condition],
                        contraindications[C.condition],
                    ]
                )
            )
        ),
        "condition",
    )
    timestamps = outcomes[C.timestamp]
    reference_year = int(timestamps.max().year) if timestamps.notna().any() else None
    demographics = _demographics(patients, patients_table, reference_year)

    p = patients.to_internal(outcomes[C.patient])
    t = treatments.to_internal(outcomes[C.treatment])
    n_p, n_t = len(patients), len(treatments)
    latest = _latest_rows(outcomes)
    history = _csr(p[latest], t[latest], outcomes[C.outcome].to_numpy()[latest], (n_p, n_t))
    history_days = _csr(p[latest], t[latest], _days(timestamps.iloc[latest]), (n_p, n_t))
    harm_rows = (outcomes[C.adverse].to_numpy() == 1) | (
        outcomes[C.outcome].to_numpy() < harm_threshold
    )
    harmful = _pattern(p[harm_rows], t[harm_rows], (n_p, n_t))

    pc = _pattern(
        patients.to_internal(patient_conditions[C.patient]),
        conditions.to_internal(patient_conditions[C.condition]),
        (n_p, len(conditions)),
    )
    known_t = contraindications[C.treatment].isin(set(treatments.external_ids)).to_numpy()
    ci = _pattern(
        conditions.to_internal(contraindications[C.condition][known_t]),
        treatments.to_internal(contraindications[C.treatment][known_t]),
        (len(conditions), n_t),
    )
    has_c = outcomes[C.condition].notna().to_numpy()
    c = conditions.to_internal(outcomes[C.condition][has_c])
    worked = policy.worked(outcomes[C.outcome].to_numpy()[has_c]).astype(np.float32)
    shape_ct = (len(conditions), n_t)
    condition_outcomes = _csr(c, t[has_c], np.ones(len(c), np.float32), shape_ct, sum_dupes=True)
    condition_successes = _csr(c, t[has_c], worked, shape_ct, sum_dupes=True)
    support = np.asarray(_pattern(p, t, (n_p, n_t)).sum(axis=0)).ravel().astype(np.int64)
    labels = outcome_buckets(
        outcomes[C.outcome].to_numpy(), outcomes[C.adverse].to_numpy(), policy.positive_threshold
    )
    all_c = np.full(len(outcomes), len(conditions))
    label_counts = _csr(
        np.concatenate([c, all_c]),
        np.concatenate([t[has_c], t]) * len(OUTCOME_BUCKETS)
        + np.concatenate([labels[has_c], labels]),
        np.ones(len(c) + len(outcomes), np.float32),
        (len(conditions) + 1, n_t * len(OUTCOME_BUCKETS)),
        sum_dupes=True,
    )

    features = _feature_ids(side_info, conditions, demographics)
    values = history.copy()
    values.data = policy.values(values.data)
    side = _side_columns(pc, demographics, side_info, features, policy)
    matrix = sp.hstack([values, side], format="csr", dtype=np.float32)
    return Dataset(
        patients=patients,
        treatments=treatments,
        features=features,
        conditions=conditions,
        matrix=matrix,
        history=history,
        harmful=harmful,
        patient_conditions=pc,
        contraindications=ci,
        condition_outcomes=condition_outcomes,
        condition_successes=condition_successes,
        treatment_support=support,
        history_days=history_days,
        label_counts=label_counts,
        interactions=_interaction_matrix(tables.interactions, treatments),
        demographics=demographics,
        policy=policy,
        side_info=side_info,
        safety=safety or SafetyPolicy(),
        harm_threshold=harm_threshold,
        reference_year=reference_year,
        fingerprint=tables.fingerprint,
        pseudonym_fingerprint=pseudonymizer.fingerprint if pseudonymizer else "",
        pseudonymizer=pseudonymizer,
        treatment_names=_names(tables.treatments, C.treatment, treatments),
        condition_names=_names(tables.conditions, C.condition, conditions),
    )


def outcome_buckets(outcomes, adverse, positive_threshold):
    outcomes = np.asarray(outcomes, dtype=np.float32)
    bucket = np.select(
        [outcomes >= 0.75, outcomes > positive_threshold, outcomes >= 0, outcomes > -0.75],
        [0, 1, 2, 3],
        default=4,
    )
    return np.where(np.asarray(adverse) == 1, 4, bucket).astype(np.int64)


def _side_columns(patient_conditions, demographics, side_info, features, policy):
    n_rows = patient_conditions.shape[0]
    rows, cols = [], []
    if side_info.conditions:
        coo = patient_conditions.tocoo()
        rows.append(coo.row)
        cols.append(coo.col)
    for enabled, column, prefix in (
        (side_info.age_band, "age_band", FEATURE_AGE),
        (side_info.sex, C.sex, FEATURE_SEX),
    ):
        if enabled:
            labels = (prefix + demographics[column].fillna("").astype(str)).to_numpy()
            idx = features.to_internal(labels, strict=False)
            rows.append(np.flatnonzero(idx >= 0))
            cols.append(idx[idx >= 0])
    rows = np.concatenate(rows) if rows else np.array([], np.int64)
    cols = np.concatenate(cols) if cols else np.array([], np.int64)
    values = np.full(len(rows), policy.side_value, np.float32)
    return _csr(rows, cols, values, (n_rows, len(features)))


def _frame_or_empty(frame, columns):
    return (
        frame if frame is not None else pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    )


def _pseudonymise(tables, pseudonymizer):
    frames = {}
    for name in ("outcomes", "patients", "patient_conditions"):
        frame = getattr(tables, name)
        if frame is not None:
            unique = frame[C.patient].unique()
            mapping = dict(zip(unique, pseudonymizer.many(unique)))
            frames[name] = frame.assign(**{C.patient: frame[C.patient].map(mapping)})
    keyed = tables.replace(**frames)
    keyed.fingerprint = tables.fingerprint
    return keyed


def _names(dictionary, column, ids):
    if dictionary is None or "name" not in dictionary:
        return {}
    names = dictionary.drop_duplicates(column).set_index(column)["name"].astype(str)
    known = names[names.index.isin(set(ids.external_ids))]
    return {str(k): v for k, v in known.items() if v}


def _days(timestamps):
    values = pd.to_datetime(pd.Series(timestamps).reset_index(drop=True), utc=True)
    days = (values - pd.Timestamp("1970-01-01", tz="UTC")) / pd.Timedelta(days=1)
    return days.fillna(-1).to_numpy(dtype=np.float32)


def _interaction_matrix(interactions, treatments):
    n_t = len(treatments)
    if interactions is None or not len(interactions):
        return sp.csr_matrix((n_t, n_t), dtype=np.int8)
    a = treatments.to_internal(interactions[C.treatment_a], strict=False)
    b = treatments.to_internal(interactions[C.treatment_b], strict=False)
    severity = interactions[C.severity].map(SEVERITY_CODES).fillna(0).to_numpy()
    keep = (a >= 0) & (b >= 0) & (severity > 0) & (a != b)
    rows = np.concatenate([a[keep], b[keep]])
    cols = np.concatenate([b[keep], a[keep]])
    values = np.concatenate([severity[keep], severity[keep]]).astype(np.int8)
    order = np.lexsort((-values, cols, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    first = np.ones(len(rows), bool)
    first[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
    return sp.csr_matrix(
        (values[first], (rows[first], cols[first])), shape=(n_t, n_t), dtype=np.int8
    )


def _latest_rows(outcomes):
    keys = [C.patient, C.treatment] if C.patient in outcomes else [C.treatment]
    order = outcomes.assign(_pos=np.arange(len(outcomes)))
    if C.timestamp in order and order[C.timestamp].notna().any():
        order = order.sort_values([C.timestamp, "_pos"], na_position="first", kind="stable")
    return order.drop_duplicates(keys, keep="last")["_pos"].sort_values().to_numpy()


def _csr(rows, cols, values, shape, sum_dupes=False):
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    values = np.asarray(values, np.float32)
    order = np.lexsort((cols, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    if sum_dupes and len(rows):
        keys = rows * shape[1] + cols
        unique, start = np.unique(keys, return_index=True)
        values = np.add.reduceat(values, start)
        rows, cols = unique // shape[1], unique % shape[1]
    indptr = np.zeros(shape[0] + 1, np.int64)
    np.add.at(indptr, rows + 1, 1)
    return sp.csr_matrix((values, cols.astype(np.int32), np.cumsum(indptr)), shape=shape)


def _pattern(rows, cols, shape):
    matrix = _csr(rows, cols, np.ones(len(rows), np.float32), shape, sum_dupes=True)
    return sp.csr_matrix((np.ones(matrix.nnz, bool), matrix.indices, matrix.indptr), shape=shape)


def _demographics(patients, table, reference_year):
    frame = pd.DataFrame({C.patient: patients.external_ids})
    if C.sex in table:
        frame = frame.merge(table[[C.patient, C.sex]], on=C.patient, how="left")
    else:
        frame[C.sex] = None
    years = (
        table.set_index(C.patient)[C.birth_year]
        if C.birth_year in table
        else pd.Series(dtype="Int64")
    )
    frame["age_band"] = [
        age_band(y, reference_year) if reference_year else None
        for y in years.reindex(frame[C.patient]).to_numpy()
    ]
    frame[C.sex] = frame[C.sex].replace("", None)
    return frame[[C.sex, "age_band"]].reset_index(drop=True)


def _feature_ids(side_info, conditions, demographics):
    ids = []
    if side_info.conditions:
        ids += [FEATURE_CONDITION + c for c in conditions.external_ids]
    if side_info.age_band:
        ids += sorted(FEATURE_AGE + b for b in demographics["age_band"].dropna().unique())
    if side_info.sex:
        ids += sorted(FEATURE_SEX + s for s in demographics[C.sex].dropna().unique())
    return IdMap(ids, "feature")
