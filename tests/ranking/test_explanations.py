"""Explanations: contributions and evidence match what the data says."""

from __future__ import annotations

import pytest

from recommender.data.dataset import Dataset
from recommender.models import make_model
from recommender.models.base import positive_part
from recommender.ranking.evidence import wilson_interval
from tests.cohorts import checkerboard


@pytest.fixture(scope="module")
def data():
    tables, truth = checkerboard()
    return tables, Dataset.from_tables(tables), truth


def test_evidence_counts_match_the_tables(data):
    tables, dataset, truth = data
    probe, best = next(iter(truth.items()))
    model = make_model("latent-class", n_classes=2).fit(dataset)
    item = model.recommend(probe, k=1, condition_id="C").recommendations[0]
    assert item.treatment_id == best
    evidence = item.explanation["evidence"]
    rows = tables.outcomes[
        (tables.outcomes.treatment_id == best) & (tables.outcomes.condition_id == "C")
    ]
    assert evidence["scope"] == "condition C"
    assert evidence["outcomes_recorded"] == len(rows)
    assert evidence["outcomes"]["responded"] == int((rows.outcome == 1).sum())
    assert evidence["outcomes"]["no_response"] == int((rows.outcome == 0).sum())
    assert (
        evidence["patients_treated"]
        == tables.outcomes[tables.outcomes.treatment_id == best].patient_id.nunique()
    )
    worked = int((rows.outcome > 0).sum())
    assert evidence["response_rate"] == pytest.approx(worked / len(rows), abs=1e-4)
    low, high = wilson_interval(worked, len(rows))
    assert evidence["response_rate_ci95"] == pytest.approx([low, high], abs=1e-4)


def test_wilson_interval_known_values():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)


@pytest.mark.parametrize("kind", ["als", "latent-class", "cosine", "bpr"])
def test_what_worked_elsewhere_drives_the_suggestion(kind, data):
    """Probes have one success (S0 or S1) for condition D: it must be the top contribution."""
    _, dataset, truth = data
    params = {"als": {"factors": 8}, "bpr": {"factors": 8, "iterations": 100}}.get(kind, {})
    model = make_model(kind, **params).fit(dataset)
    for probe, best in list(truth.items())[:4]:
        item = model.recommend(probe, k=1, condition_id="C").recommendations[0]
        contributions = item.explanation["contributions"]
        worked = "S0" if best == "T0" else "S1"
        assert contributions[0]["source"] == "outcome"  # the record, not the diagnosis, decides
        (entry,) = [c for c in contributions if c.get("treatment_id") == worked]
        assert entry["outcome"] == 1.0 and entry["contribution"] > 0


def test_knn_contribution_is_similarity_times_weight(data):
    _, dataset, truth = data
    model = make_model("cosine", K=20).fit(dataset)
    probe, best = next(iter(truth.items()))
    item = model.recommend(probe, k=1, condition_id="C").recommendations[0]
    p, t = dataset.patient_index(probe), dataset.treatments.index_of(best)
    row = positive_part(dataset.matrix[p])
    expected = {int(c): float(v * model.similarity_[c, t]) for c, v in zip(row.indices, row.data)}
    for contribution in item.explanation["contributions"]:
        column = (
            dataset.treatments.index_of(contribution["treatment_id"])
            if contribution["source"] == "outcome"
            else dataset.n_treatments + dataset.features.index_of(f"condition:{contribution['id']}")
        )
        assert contribution["contribution"] == pytest.approx(expected[column], rel=1e-4)


def test_baselines_say_they_are_not_personalised(data):
    _, dataset, _ = data
    item = make_model("condition-popular").fit(dataset).recommend("P0200", k=1).recommendations[0]
    assert item.explanation["contributions"] == []
    assert "does not use the patient's own record" in item.explanation["basis"]


def test_explanations_can_be_skipped(data):
    _, dataset, _ = data
    answer = make_model("popular").fit(dataset).recommend("P0200", k=2, explain=False)
    assert all(r.explanation is None for r in answer.recommendations)
    assert "explanation" not in answer.to_dict()["recommendations"][0]


def test_warmed_evidence_equals_evidence_computed_on_demand(data):
    """warm_evidence remembers every (condition, candidate) entry and the all-conditions ones;
    what it remembers is what a cold dataset computes, and the cap is respected."""
    import numpy as np

    from recommender.ranking.evidence import evidence_many, warm_evidence

    tables, _, _ = data
    warm, cold = Dataset.from_tables(tables), Dataset.from_tables(tables)
    expected = sum(len(warm.candidates(c)) for c in range(len(warm.conditions))) + warm.n_treatments
    assert warm_evidence(warm) == expected
    assert len(vars(warm)["_evidence_cache"]) == expected
    for condition in [*range(len(warm.conditions)), -1]:
        treatments = warm.candidates(condition) if condition >= 0 else np.arange(warm.n_treatments)
        assert evidence_many(warm, treatments, condition) == evidence_many(
            cold, treatments, condition
        )
    first = len(warm.candidates(0))
    assert warm_evidence(Dataset.from_tables(tables), max_entries=first) == first
