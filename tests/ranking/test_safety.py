"""Safety rules: interactions with active treatments, minimum evidence, reasons and flags."""

from __future__ import annotations

import pandas as pd
import pytest

from recommender.data.dataset import Dataset
from recommender.data.policies import SafetyPolicy
from recommender.data.tables import validate_tables
from recommender.exceptions import ParameterError
from recommender.models import make_model


def cohort(min_support=3, on_x_days_before_latest=10):
    """Ten patients give every therapy support; patient A is on X (worked) and had W later."""
    rows = []
    for i in range(10):
        for t in ("X", "Y", "Z", "W"):
            rows.append(
                (f"P{i}", t, "responded" if (i + len(t)) % 2 else "no_response", "2020-01-01")
            )
    rows.append(("RARE1", "R", "responded", "2020-01-01"))
    rows.append(("RARE2", "R", "responded", "2020-01-01"))
    latest = pd.Timestamp("2021-06-01")
    x_day = latest - pd.Timedelta(days=on_x_days_before_latest)
    rows += [
        ("A", "X", "responded", x_day.strftime("%Y-%m-%d")),
        ("A", "W", "no_response", latest.strftime("%Y-%m-%d")),
    ]
    tables = validate_tables(
        {
            "outcomes": pd.DataFrame(
                rows, columns=["patient_id", "treatment_id", "outcome", "timestamp"]
            ),
            "interactions": pd.DataFrame(
                {
                    "treatment_a": ["X", "Z", "X"],
                    "treatment_b": ["Y", "X", "R"],
                    "severity": ["severe", "moderate", "minor"],
                }
            ),
        }
    )
    return Dataset.from_tables(tables, safety=SafetyPolicy(min_support=min_support))


def test_severe_interaction_with_an_active_treatment_is_excluded_and_moderate_flagged():
    model = make_model("popular").fit(cohort())
    answer = model.recommend("A", k=10)
    assert "Y" not in answer.treatment_ids
    (y,) = [e for e in answer.excluded if e.treatment_id == "Y"]
    assert y.reason == y.rule == "severe_interaction" and "X" in y.detail
    (z,) = [r for r in answer.recommendations if r.treatment_id == "Z"]
    assert z.flags == [{"type": "interaction", "severity": "moderate", "with": "X"}]


def test_an_old_treatment_is_not_active():
    model = make_model("popular").fit(cohort(on_x_days_before_latest=400))
    assert "Y" in model.recommend("A", k=10).treatment_ids


def test_active_treatments_given_in_the_request_count():
    model = make_model("popular").fit(cohort(on_x_days_before_latest=400))
    answer = model.recommend("A", k=10, active_treatments=["X", "NOT-A-DRUG"])
    assert "Y" not in answer.treatment_ids
    assert any("NOT-A-DRUG" in note for note in answer.notes)
    new = model.recommend_new([], conditions=[], k=10, active_treatments=["Y"])
    assert "X" not in new.treatment_ids and "Y" not in new.treatment_ids
    reasons = {e.treatment_id: e.reason for e in new.excluded}
    assert reasons["X"] == "severe_interaction" and reasons["Y"] == "duplicate_therapy"


def test_minimum_evidence():
    strict = make_model("popular").fit(cohort(min_support=3))
    assert "R" not in strict.recommend("P0", k=10, include_tried=True).treatment_ids
    assert any("fewer than 3 patients" in n for n in strict.recommend("P0", k=10).notes)
    relaxed = make_model("popular").fit(cohort(min_support=2))
    assert "R" in relaxed.recommend("P0", k=10, include_tried=True).treatment_ids
    batch = strict.recommend_batch(["P0", "A"], k=10, include_tried=True)
    assert "R" not in set(batch.treatment_id)


def test_policy_is_validated_and_saved(tmp_path):
    with pytest.raises(ParameterError, match="min_support"):
        SafetyPolicy(min_support=-1)
    model = make_model("popular").fit(cohort(min_support=2))
    loaded = type(model).load(model.save(tmp_path / "a"))
    assert loaded.dataset_.safety == SafetyPolicy(min_support=2)
    assert loaded.dataset_.interactions.nnz == 4  # X-Y and X-Z, both directions; minor dropped


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_one_patient_rules_equal_the_batch_rules(seed):
    """The service's one-patient shortcuts (active treatments, exclusion codes) give each
    patient exactly the row the batch computation gives."""
    import numpy as np

    from recommender.data.patient import Query
    from recommender.ranking import safety
    from tests.cohorts import random_cohort

    dataset = Dataset.from_tables(random_cohort(seed, n_patients=40, n_treatments=12, n_rows=300))
    everyone = np.arange(len(dataset.patients))
    batch = Query.known(dataset, everyone, np.full(len(everyone), -1))
    active = safety.active_treatments(dataset, batch)
    for include_tried in (False, True):
        codes = safety.exclusion_codes(dataset, batch, include_tried, active)
        for p in everyone:
            one = Query.known(dataset, np.array([p]), np.array([-1]))
            one_active = safety.active_treatments(dataset, one)
            assert one_active.indices.tolist() == active[[p]].indices.tolist()
            one_codes = safety.exclusion_codes(dataset, one, include_tried, one_active)
            assert one_codes.dtype == np.int8
            assert dict(zip(one_codes.indices.tolist(), one_codes.data.tolist())) == dict(
                zip(codes[[p]].indices.tolist(), codes[[p]].data.tolist())
            )
