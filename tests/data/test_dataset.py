"""Dataset: id maps, the confidence matrix, history, harm, side information, new patients."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recommender.data.dataset import Dataset
from recommender.data.dataset_arrays import dataset_from_arrays, dataset_to_arrays
from recommender.data.patient import encode_patient
from recommender.data.policies import ConfidencePolicy
from recommender.data.side_info import SideInfo
from recommender.data.tables import validate_tables
from recommender.exceptions import DataValidationError, ParameterError


@pytest.fixture
def tables():
    outcomes = pd.DataFrame(
        {
            "patient_id": ["a", "a", "b", "c", "a"],
            "treatment_id": ["x", "y", "x", "z", "x"],
            "outcome": ["responded", "0", "-1", "partial", "no_response"],
            "timestamp": ["2020-01-01", "2020-02-01", "2021-03-04", "2021-01-01", "2019-01-01"],
            "condition_id": ["c1", "c1", "c1", "c2", "c1"],
            "adverse": ["0", "0", "1", "0", "0"],
        }
    )
    patients = pd.DataFrame(
        {
            "patient_id": ["a", "b", "c", "d"],
            "sex": ["F", "M", "F", ""],
            "birth_year": ["1950", "1980", "2000", ""],
        }
    )
    pc = pd.DataFrame({"patient_id": ["a", "d"], "condition_id": ["c1", "alg"]})
    ci = pd.DataFrame({"treatment_id": ["x"], "condition_id": ["alg"]})
    return validate_tables(
        {
            "outcomes": outcomes,
            "patients": patients,
            "patient_conditions": pc,
            "contraindications": ci,
        }
    )


def test_policy_maps_outcomes_to_signed_confidences():
    policy = ConfidencePolicy(alpha=4, failure_floor=0.5, side_weight=0.5)
    values = policy.values(np.array([1, 0.5, 0, -0.5, -1]))
    np.testing.assert_allclose(values, [5, 3, -3, -3, -5])
    assert policy.side_value == 3.0
    with pytest.raises(ParameterError, match="alpha"):
        ConfidencePolicy(alpha=0)


def test_matrix_history_and_harm_known_answer(tables):
    ds = Dataset.from_tables(tables, side_info=SideInfo(conditions=True, age_band=True, sex=True))
    assert ds.patients.external_ids.tolist() == ["a", "b", "c", "d"]
    assert ds.treatments.external_ids.tolist() == ["x", "y", "z"]
    assert ds.features.external_ids.tolist() == [
        "condition:alg",
        "condition:c1",
        "condition:c2",
        "age:20-29",
        "age:40-49",
        "age:70-79",
        "sex:F",
        "sex:M",
    ]
    # a: x latest is "responded" (2020) not "no_response" (2019); y no effect; c1, 70-79, F
    np.testing.assert_allclose(ds.matrix.toarray()[0], [5, -3, 0, 0, 3, 0, 0, 0, 3, 3, 0])
    assert ds.history.nnz == 4  # the explicit zero of a/y is kept: y was tried
    assert ds.harmful.toarray().tolist() == [
        [False] * 3,
        [True, False, False],
        [False] * 3,
        [False] * 3,
    ]
    assert ds.treatment_support.tolist() == [2, 1, 1]
    assert ds.contraindications.toarray()[ds.conditions.index_of("alg")].tolist() == [
        True,
        False,
        False,
    ]
    assert ds.candidates(ds.conditions.index_of("c1")).tolist() == [0, 1]
    assert ds.matrix.dtype == np.float32 and ds.matrix.shape == (4, 11)


def test_side_information_can_be_switched_off(tables):
    ds = Dataset.from_tables(tables, side_info=SideInfo(conditions=False))
    assert len(ds.features) == 0 and ds.matrix.shape == (4, 3)


def test_arrays_round_trip(tables):
    ds = Dataset.from_tables(tables, side_info=SideInfo(True, True, True))
    arrays, meta = dataset_to_arrays(ds)
    back = dataset_from_arrays(arrays, meta)
    assert back.patients == ds.patients and back.features == ds.features
    assert (back.matrix != ds.matrix).nnz == 0 and back.history.nnz == ds.history.nnz
    assert back.policy == ds.policy and back.side_info == ds.side_info


def test_encode_new_patient(tables):
    ds = Dataset.from_tables(tables)
    record = encode_patient(
        ds,
        [
            {"treatment_id": "x", "outcome": "adverse"},
            {"treatment_id": "q", "outcome": 1},
            {"treatment_id": "y", "outcome": "responded", "timestamp": "2020-01-01"},
            {"treatment_id": "y", "outcome": "no_response", "timestamp": "2021-01-01"},
        ],
        conditions=["c2", "zz"],
    )
    assert record.tried.tolist() == [0, 1] and record.harmful.tolist() == [0]
    assert record.ignored == ["q", "zz"]
    row = record.row.toarray()[0]
    assert row[1] == -3  # latest y outcome (no_response) wins
    assert row[3 + ds.conditions.index_of("c2")] == ds.policy.side_value
    with pytest.raises(DataValidationError, match="outcome 'wonderful'"):
        encode_patient(ds, [{"treatment_id": "x", "outcome": "wonderful"}])


def test_repr_is_one_line_of_sizes_without_ids(tables):
    dataset = Dataset.from_tables(tables)
    text = repr(dataset)
    assert "\n" not in text and len(text) < 200
    assert text.startswith("Dataset(patients=4, treatments=3, conditions=")
    assert "pairs=4" in text
    for raw in ("'a'", "1950", "birth_year"):
        assert raw not in text
