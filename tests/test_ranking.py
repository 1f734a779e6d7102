"""Ranking guarantees: no excluded therapy ever appears, for any data and any request."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recommender.dataset import Dataset
from recommender.models import MODELS, make_model
from recommender.ranking import top_k
from tests.cohorts import random_cohort

FAST = {"als": {"factors": 4, "iterations": 3}, "bpr": {"factors": 4, "iterations": 5},
        "lmf": {"factors": 4, "iterations": 5}, "cosine": {"K": 5}, "bm25": {"K": 5},
        "latent-class": {"n_classes": 2, "iterations": 5, "restarts": 1},
        "popular": {}, "condition-popular": {}}


def active(tables, patient, window=180):
    """Treatments that worked and started within ``window`` days of the patient's latest outcome."""
    o = tables.outcomes[tables.outcomes.patient_id == patient].reset_index(drop=True)
    o = o.assign(position=range(len(o))).sort_values(["timestamp", "position"])
    latest = o.drop_duplicates("treatment_id", keep="last")
    if latest.empty:
        return set()
    newest = latest.timestamp.max()
    recent = latest[(latest.outcome > 0) & ((newest - latest.timestamp).dt.days <= window)]
    return set(recent.treatment_id)


def severe_partners(tables, treatments):
    i = tables.interactions
    if i is None:
        return set()
    severe = i[i.severity == "severe"]
    return (set(severe.treatment_b[severe.treatment_a.isin(treatments)])
            | set(severe.treatment_a[severe.treatment_b.isin(treatments)]))


def forbidden(tables, patient, condition, include_tried, min_support=3):
    """Treatments the rules forbid, computed from the tables without the engine."""
    o = tables.outcomes[tables.outcomes.patient_id == patient]
    banned = set(o[(o.adverse == 1) | (o.outcome < 0)].treatment_id)
    own = set(tables.patient_conditions.condition_id[tables.patient_conditions.patient_id == patient])
    ci = tables.contraindications
    banned |= set(ci.treatment_id[ci.condition_id.isin(own)])
    banned |= severe_partners(tables, active(tables, patient))
    support = tables.outcomes.groupby("treatment_id").patient_id.nunique()
    banned |= set(support[support < min_support].index)
    if not include_tried:
        banned |= set(o.treatment_id)
    if condition is not None:
        used = set(tables.outcomes.treatment_id[tables.outcomes.condition_id == condition])
        banned |= set(tables.outcomes.treatment_id) - used
    return banned


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(sorted(MODELS)),
       k=st.integers(1, 15), include_tried=st.booleans(), data=st.data())
def test_no_excluded_treatment_in_any_result(seed, kind, k, include_tried, data):
    tables = random_cohort(seed, n_patients=40, n_treatments=10, n_rows=250)
    model = make_model(kind, **FAST[kind]).fit(Dataset.from_tables(tables))
    patients = sorted(model.dataset_.patients.external_ids)
    chosen = data.draw(st.lists(st.sampled_from(patients), min_size=1, max_size=5))
    conditions = data.draw(st.lists(st.sampled_from([None, "C0", "C1", "C2", "C3"]),
                                    min_size=len(chosen), max_size=len(chosen)))
    batch = model.recommend_batch(chosen, k=k, condition_ids=conditions, include_tried=include_tried)
    for patient, condition in zip(chosen, conditions):
        banned = forbidden(tables, patient, condition, include_tried)
        single = model.recommend(patient, k=k, condition_id=condition, include_tried=include_tried)
        assert not banned & set(single.treatment_ids)
        assert len(single.recommendations) <= k
        reported = {e.treatment_id for e in single.excluded}
        outside = (set(tables.outcomes.treatment_id) - set(
            tables.outcomes.treatment_id[tables.outcomes.condition_id == condition])
            if condition else set())
        support = tables.outcomes.groupby("treatment_id").patient_id.nunique()
        explained = banned - outside - set(support[support < 3].index)
        assert explained <= reported  # every per-patient exclusion among the candidates is explained
        same_condition = batch.condition_id.isna() if condition is None else batch.condition_id == condition
        rows = batch[(batch.patient_id == patient) & same_condition]
        assert not banned & set(rows.treatment_id)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(sorted(MODELS)), data=st.data())
def test_no_harmful_or_contraindicated_treatment_for_new_patients(seed, kind, data):
    tables = random_cohort(seed, n_patients=30, n_treatments=8, n_rows=150)
    model = make_model(kind, **FAST[kind]).fit(Dataset.from_tables(tables))
    treatments = sorted(model.dataset_.treatments.external_ids)
    history = data.draw(st.lists(st.fixed_dictionaries({
        "treatment_id": st.sampled_from(treatments + ["UNSEEN"]),
        "outcome": st.sampled_from(["responded", "partial", "no_response", "worsened", "adverse", 0.3]),
    }), max_size=6))
    conditions = data.draw(st.lists(st.sampled_from(["A0", "A1", "C2", "C3", "A3"]), max_size=3))
    active_now = data.draw(st.lists(st.sampled_from(treatments), max_size=2))
    answer = model.recommend_new(history, conditions, k=8, include_tried=True,
                                 active_treatments=active_now)
    harmed = {h["treatment_id"] for h in history if h["outcome"] in ("worsened", "adverse")}
    ci = tables.contraindications
    banned = harmed | set(ci.treatment_id[ci.condition_id.isin(conditions)])
    banned |= severe_partners(tables, set(active_now))
    support = tables.outcomes.groupby("treatment_id").patient_id.nunique()
    banned |= set(support[support < 3].index)
    assert not banned & set(answer.treatment_ids)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 6), m=st.integers(1, 12), k=st.integers(1, 15), seed=st.integers(0, 999))
def test_top_k_matches_a_full_sort(n, m, k, seed):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, m)).astype(np.float32)
    scores[rng.random((n, m)) < 0.3] = -np.inf
    idx, values = top_k(scores.copy(), k)
    for row in range(n):
        allowed = np.flatnonzero(np.isfinite(scores[row]))
        expected = allowed[np.lexsort((allowed, -scores[row, allowed]))][:k]
        got = idx[row][idx[row] >= 0]
        assert got.tolist() == expected.tolist()
        assert (values[row][len(got):] == -np.inf).all()


def test_fewer_than_k_when_fewer_are_allowed():
    tables = random_cohort(3, n_patients=20, n_treatments=5, n_rows=80)
    model = make_model("popular").fit(Dataset.from_tables(tables))
    for patient in model.dataset_.patients.external_ids:
        answer = model.recommend(patient, k=50)
        allowed = len(set(tables.outcomes.treatment_id) - forbidden(tables, patient, None, include_tried=False))
        assert len(answer.recommendations) == allowed


def test_nan_scores_are_never_ranked():
    tables = random_cohort(4)
    model = make_model("popular").fit(Dataset.from_tables(tables))
    model.scores_ = model.scores_.copy()
    model.scores_[:3] = np.nan
    answer = model.recommend("P1", k=20, include_tried=True)
    assert answer.recommendations
    assert not set(model.dataset_.treatments.to_external([0, 1, 2])) & set(answer.treatment_ids)
