"""Ranking guarantees: no excluded therapy ever appears, for any data and any request."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recommender.data.dataset import Dataset
from recommender.exceptions import UnknownIdError
from recommender.models import MODELS, make_model
from recommender.ranking import recommend_known_conditions, recommend_unknown_conditions, top_k
from tests.cohorts import random_cohort

FAST = {
    "als": {"factors": 4, "iterations": 3},
    "bpr": {"factors": 4, "iterations": 5},
    "lmf": {"factors": 4, "iterations": 5},
    "cosine": {"K": 5},
    "bm25": {"K": 5},
    "latent-class": {"n_classes": 2, "iterations": 5, "restarts": 1},
    "popular": {},
    "condition-popular": {},
    "outcome": {"factors": 3, "n_bags": 2, "n_trees": 10, "min_child_samples": 3},
}


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
    return set(severe.treatment_b[severe.treatment_a.isin(treatments)]) | set(
        severe.treatment_a[severe.treatment_b.isin(treatments)]
    )


def held(tables):
    """Treatment id -> its ingredient ids, read from the treatments table (its own id when it
    lists none)."""
    ids = set(tables.outcomes.treatment_id)
    listed = {}
    if tables.treatments is not None and "ingredients" in tables.treatments:
        t = tables.treatments
        listed = {a: set(b.split(";")) for a, b in zip(t.treatment_id, t.ingredients) if b}
    return {t: listed.get(t, {t}) for t in ids}


def duplicates(tables, treatments, ingredients=()):
    """Treatments sharing an ingredient with ``treatments`` (themselves included) or holding
    one of ``ingredients``."""
    holds = held(tables)
    taken = set(ingredients).union(*[holds[t] for t in treatments if t in holds])
    return set(treatments) | {t for t, own in holds.items() if own & taken}


def forbidden(tables, patient, condition, include_tried, min_support=3):
    """Treatments the rules forbid, computed from the tables without the engine."""
    o = tables.outcomes[tables.outcomes.patient_id == patient]
    banned = set(o[(o.adverse == 1) | (o.outcome < 0)].treatment_id)
    own = set(
        tables.patient_conditions.condition_id[tables.patient_conditions.patient_id == patient]
    )
    ci = tables.contraindications
    banned |= set(ci.treatment_id[ci.condition_id.isin(own)])
    banned |= severe_partners(tables, active(tables, patient))
    banned |= duplicates(tables, active(tables, patient))
    support = tables.outcomes.groupby("treatment_id").patient_id.nunique()
    banned |= set(support[support < min_support].index)
    if not include_tried:
        banned |= set(o.treatment_id)
    if condition is not None:
        used = set(tables.outcomes.treatment_id[tables.outcomes.condition_id == condition])
        banned |= set(tables.outcomes.treatment_id) - used
    return banned


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(sorted(MODELS)),
    k=st.integers(1, 15),
    include_tried=st.booleans(),
    data=st.data(),
)
def test_no_excluded_treatment_in_any_result(seed, kind, k, include_tried, data):
    tables = random_cohort(seed, n_patients=40, n_treatments=10, n_rows=250, ingredients=True)
    model = make_model(kind, **FAST[kind]).fit(Dataset.from_tables(tables))
    patients = sorted(model.dataset_.patients.external_ids)
    chosen = data.draw(st.lists(st.sampled_from(patients), min_size=1, max_size=5))
    conditions = data.draw(
        st.lists(
            st.sampled_from([None, "C0", "C1", "C2", "C3"]),
            min_size=len(chosen),
            max_size=len(chosen),
        )
    )
    batch = model.recommend_batch(
        chosen, k=k, condition_ids=conditions, include_tried=include_tried
    )
    for patient, condition in zip(chosen, conditions):
        banned = forbidden(tables, patient, condition, include_tried)
        single = model.recommend(patient, k=k, condition_id=condition, include_tried=include_tried)
        assert not banned & set(single.treatment_ids)
        assert len(single.recommendations) <= k
        reported = {e.treatment_id for e in single.excluded}
        outside = (
            set(tables.outcomes.treatment_id)
            - set(tables.outcomes.treatment_id[tables.outcomes.condition_id == condition])
            if condition
            else set()
        )
        support = tables.outcomes.groupby("treatment_id").patient_id.nunique()
        explained = banned - outside - set(support[support < 3].index)
        assert (
            explained <= reported
        )  # every per-patient exclusion among the candidates is explained
        same_condition = (
            batch.condition_id.isna() if condition is None else batch.condition_id == condition
        )
        rows = batch[(batch.patient_id == patient) & same_condition]
        assert not banned & set(rows.treatment_id)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(sorted(MODELS)), data=st.data())
def test_no_harmful_or_contraindicated_treatment_for_new_patients(seed, kind, data):
    tables = random_cohort(seed, n_patients=30, n_treatments=8, n_rows=150, ingredients=True)
    model = make_model(kind, **FAST[kind]).fit(Dataset.from_tables(tables))
    treatments = sorted(model.dataset_.treatments.external_ids)
    ingredients = sorted(set(model.dataset_.ingredients.external_ids) - set(treatments))
    history = data.draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "treatment_id": st.sampled_from(treatments + ["UNSEEN"]),
                    "outcome": st.sampled_from(
                        ["responded", "partial", "no_response", "worsened", "adverse", 0.3]
                    ),
                }
            ),
            max_size=6,
        )
    )
    conditions = data.draw(st.lists(st.sampled_from(["A0", "A1", "C2", "C3", "A3"]), max_size=3))
    active_now = data.draw(st.lists(st.sampled_from(treatments + ingredients), max_size=2))
    answer = model.recommend_new(
        history, conditions, k=8, include_tried=True, active_treatments=active_now
    )
    harmed = {h["treatment_id"] for h in history if h["outcome"] in ("worsened", "adverse")}
    ci = tables.contraindications
    banned = harmed | set(ci.treatment_id[ci.condition_id.isin(conditions)])
    banned |= severe_partners(tables, set(active_now))
    banned |= duplicates(
        tables, set(active_now) & set(treatments), set(active_now) & set(ingredients)
    )
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
        assert (values[row][len(got) :] == -np.inf).all()


def test_fewer_than_k_when_fewer_are_allowed():
    tables = random_cohort(3, n_patients=20, n_treatments=5, n_rows=80)
    model = make_model("popular").fit(Dataset.from_tables(tables))
    for patient in model.dataset_.patients.external_ids:
        answer = model.recommend(patient, k=50)
        allowed = len(
            set(tables.outcomes.treatment_id)
            - forbidden(tables, patient, None, include_tried=False)
        )
        assert len(answer.recommendations) == allowed


def test_nan_scores_are_never_ranked():
    tables = random_cohort(4)
    model = make_model("popular").fit(Dataset.from_tables(tables))
    model.scores_ = model.scores_.copy()
    model.scores_[:3] = np.nan
    answer = model.recommend("P1", k=20, include_tried=True)
    assert answer.recommendations
    assert not set(model.dataset_.treatments.to_external([0, 1, 2])) & set(answer.treatment_ids)


def condition_bound(tables):
    """The cohort with T0-T5 each used for one condition only (C0-C2), so that each condition
    has its own candidates; T6-T9 keep their random conditions."""
    outcomes = tables.outcomes.copy()
    number = outcomes.treatment_id.str[1:].astype(int)
    bound = number < 6
    outcomes.loc[bound, "condition_id"] = "C" + (number[bound] % 3).astype(str)
    return tables.replace(outcomes=outcomes)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(sorted(MODELS)),
    k=st.integers(1, 6),
    include_tried=st.booleans(),
    explain=st.booleans(),
    data=st.data(),
)
def test_several_conditions_at_once_equal_one_call_per_condition(
    seed, kind, k, include_tried, explain, data
):
    tables = condition_bound(random_cohort(seed, n_patients=30, n_treatments=10, n_rows=200))
    model = make_model(kind, **FAST[kind]).fit(Dataset.from_tables(tables))
    treatments = sorted(model.dataset_.treatments.external_ids)
    conditions = data.draw(
        st.lists(st.sampled_from([None, "C0", "C1", "C2", "C3"]), min_size=1, max_size=4)
    )  # repeats and None included
    active_now = data.draw(st.lists(st.sampled_from(treatments + ["UNSEEN"]), max_size=2))
    options = dict(k=k, include_tried=include_tried, active_treatments=active_now, explain=explain)
    patient = data.draw(st.sampled_from(sorted(model.dataset_.patients.external_ids)))
    together = recommend_known_conditions(model, patient, conditions, **options)
    apart = [model.recommend(patient, condition_id=c, **options) for c in conditions]
    assert [a.to_dict() for a in together] == [a.to_dict() for a in apart]
    history = data.draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "treatment_id": st.sampled_from(treatments + ["UNSEEN"]),
                    "outcome": st.sampled_from(
                        ["responded", "partial", "no_response", "worsened", 0.3]
                    ),
                    "timestamp": st.sampled_from(["2021-01-01", "2021-06-01", None]),
                }
            ),
            max_size=6,
        )
    )
    diagnoses = data.draw(st.lists(st.sampled_from(["A0", "A1", "C2", "C3", "X9"]), max_size=3))
    together = recommend_unknown_conditions(
        model, history, diagnoses, conditions, sex="F", birth_year=1970, **options
    )
    apart = [
        model.recommend_new(history, diagnoses, condition_id=c, sex="F", birth_year=1970, **options)
        for c in conditions
    ]
    assert [a.to_dict() for a in together] == [a.to_dict() for a in apart]


def test_several_conditions_answer_in_request_order_and_check_every_id_first():
    tables = condition_bound(random_cohort(7, n_patients=30, n_treatments=10, n_rows=200))
    model = make_model("als", **FAST["als"]).fit(Dataset.from_tables(tables))
    history = [
        {"treatment_id": "T1", "outcome": "adverse"},
        {"treatment_id": "T2", "outcome": "responded"},
    ]
    answers = recommend_unknown_conditions(model, history, ["A1"], ["C2", None, "C0"], k=10)
    assert [a.condition_id for a in answers] == ["C2", None, "C0"]
    assert all("T1" not in a.treatment_ids for a in answers)
    assert any(e.treatment_id == "T1" and e.reason == "previous_harm" for e in answers[1].excluded)
    assert "T5" in answers[0].treatment_ids and "T0" in answers[2].treatment_ids
    assert not {"T0", "T3", "T4"} & set(answers[0].treatment_ids)  # other conditions' therapies
    assert not {"T2", "T4", "T5"} & set(answers[2].treatment_ids)
    with pytest.raises(UnknownIdError, match="NOPE"):
        recommend_unknown_conditions(model, history, [], ["C0", "NOPE"])
    with pytest.raises(UnknownIdError, match="NOPE"):
        recommend_known_conditions(model, "P1", ["C0", "NOPE"])


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_top_among_candidates_equals_masking_every_score(data):
    """The service's path (rank the condition's candidates only) picks exactly what masking
    all n_t scores and taking the top-k picks: same treatments, order, ties and scores."""
    from types import SimpleNamespace

    import scipy.sparse as sp

    from recommender.data.policies import SafetyPolicy
    from recommender.ranking import mask_scores
    from recommender.ranking.single import _top_candidates

    n_t = data.draw(st.integers(1, 40))
    values = st.sampled_from([0.0, 0.5, -1.0, 2.0, np.nan, np.inf, -np.inf]) | st.floats(
        -3, 3, width=32
    )
    scores = np.array(data.draw(st.lists(values, min_size=n_t, max_size=n_t)), np.float32)[None, :]
    support = np.array(data.draw(st.lists(st.integers(0, 5), min_size=n_t, max_size=n_t)))
    dataset = SimpleNamespace(
        treatment_support=support, safety=SafetyPolicy(min_support=2), n_treatments=n_t
    )
    candidates = np.array(sorted(data.draw(st.sets(st.integers(0, n_t - 1), min_size=1))))
    coded = np.array(sorted(data.draw(st.sets(st.integers(0, n_t - 1)))), np.int32)
    codes = sp.csr_matrix((np.ones(len(coded), np.int8), coded, [0, len(coded)]), shape=(1, n_t))
    k = data.draw(st.integers(1, 12))
    idx, expected = top_k(mask_scores(dataset, scores.copy(), codes, candidates), k)
    chosen, got = _top_candidates(
        dataset, scores[0, candidates], dict.fromkeys(coded.tolist(), 1), candidates, k
    )
    assert chosen.tolist() == idx[0][idx[0] >= 0].tolist()
    np.testing.assert_array_equal(got[0][: len(chosen)], expected[0][: len(chosen)])
