"""The model's external-id questions (what the service asks instead of reading the Dataset)."""

from __future__ import annotations

import pytest

from recommender.data.dataset import Dataset
from recommender.exceptions import NotFittedError, UnknownIdError
from recommender.models import make_model
from recommender.ranking.evidence import evidence


@pytest.fixture(scope="module")
def model():
    from tests.conftest import make_cohort

    return make_model("popular").fit(Dataset.from_tables(make_cohort(seed=3)))


def test_ids_and_names_are_the_datasets(model):
    dataset = model.dataset_
    assert model.treatment_ids() == list(dataset.treatments.external_ids)
    assert model.condition_ids() == list(dataset.conditions.external_ids)
    assert model.display_names() == (dataset.treatment_names, dataset.condition_names)


def test_patient_record_reads_the_stored_history_in_external_ids(model):
    dataset = model.dataset_
    record = model.patient_record("P001")
    assert record is not None
    tried = {item["treatment_id"] for item in record.history}
    assert tried == set(
        dataset.treatments.to_external(
            dataset.history.getrow(dataset.patient_index("P001")).indices
        )
    )
    assert all(set(item) >= {"treatment_id", "outcome", "adverse"} for item in record.history)
    assert all(len(item["timestamp"]) == 10 for item in record.history)  # ISO dates
    assert set(record.conditions) <= set(model.condition_ids())
    assert record.sex in ("F", "M")
    assert model.patient_record("nobody") is None


def test_candidates_and_evidence(model):
    dataset = model.dataset_
    condition = "C1"
    candidates = set(
        dataset.treatments.to_external(dataset.candidates(dataset.condition_index(condition)))
    )
    for treatment in model.treatment_ids():
        assert model.is_candidate(treatment, condition) is (treatment in candidates)
    assert model.has_candidates(condition) and not model.has_candidates("unknown")
    assert not model.is_candidate("unknown", condition)
    assert not model.is_candidate(model.treatment_ids()[0], "unknown")
    treatment = sorted(candidates)[0]
    assert model.evidence(treatment, condition) == evidence(
        dataset, dataset.treatments.index_of(treatment), dataset.condition_index(condition)
    )
    assert model.evidence(treatment)["scope"] == "all conditions"
    with pytest.raises(UnknownIdError):
        model.evidence("unknown", condition)


def test_an_unfitted_model_refuses():
    with pytest.raises(NotFittedError):
        make_model("popular").patient_record("P001")
