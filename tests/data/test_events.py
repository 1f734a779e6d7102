"""The dated events beside a Dataset, and the patient state it saves (observations, tries)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recommender.data.codes import NAT
from recommender.data.dataset import Dataset
from recommender.data.dataset_arrays import dataset_from_arrays, dataset_to_arrays
from recommender.data.pseudonym import Pseudonymizer
from recommender.data.tables import validate_tables


@pytest.fixture
def tables():
    return validate_tables(
        {
            "outcomes": pd.DataFrame(
                {
                    "patient_id": ["a", "a", "a", "b"],
                    "treatment_id": ["x", "y", "x", "y"],
                    "outcome": ["no_response", "responded", "responded", "adverse"],
                    "timestamp": ["2020-01-01", "2020-03-01", "2021-01-01", "2020-02-01"],
                    "condition_id": ["c1", "c1", "c2", "c1"],
                }
            ),
            "patients": pd.DataFrame(
                {
                    "patient_id": ["a", "b", "z"],
                    "sex": ["F", "M", ""],
                    "birth_year": ["1950", "", "2001"],
                }
            ),
            "patient_conditions": pd.DataFrame(
                {
                    "patient_id": ["a", "a", "z", "a"],
                    "condition_id": ["c1", "CKD", "c2", "CKD"],
                    "timestamp": ["2019-12-01", "2020-06-01", "", "2020-02-01"],
                }
            ),
            "observations": pd.DataFrame(
                {
                    "patient_id": ["a", "a", "a", "b", "z"],
                    "code": ["egfr", "egfr", "alt", "egfr", "alt"],
                    "value": ["60", "40", "0", "90", "25"],
                    "timestamp": ["2020-01-01", "2020-05-01", "", "2020-01-01", "2020-01-01"],
                }
            ),
        }
    )


def test_events_hold_every_dated_row_in_dataset_indices(tables):
    ds = Dataset.from_tables(tables)
    ev = ds.events
    a = ds.patients.index_of("a")
    assert len(ev.patient) == 4 and (ev.patient == a).sum() == 3
    onset = {
        (ds.patients.external_ids[p], ds.conditions.external_ids[c]): t
        for p, c, t in zip(ev.dx_patient, ev.dx_condition, ev.dx_time)
    }
    assert onset[("a", "CKD")] == pd.Timestamp("2020-02-01", tz="UTC").value  # the earliest
    assert onset[("z", "c2")] == NAT  # unknown onset
    assert ds.observation_ids.external_ids.tolist() == ["alt", "egfr"]
    assert len(ev.obs_value) == 5


def test_the_current_state_is_the_latest_value_of_each_code(tables):
    ds = Dataset.from_tables(tables)
    latest = ds.latest_observations.toarray()
    a, b, z = (ds.patients.index_of(p) for p in "abz")
    alt, egfr = ds.observation_ids.index_of("alt"), ds.observation_ids.index_of("egfr")
    assert latest[a, egfr] == 40 and latest[b, egfr] == 90 and latest[z, alt] == 25
    row = ds.latest_observations[a]
    assert alt in row.indices and latest[a, alt] == 0  # a measured zero is kept
    assert egfr not in ds.latest_observations[z].indices  # never measured: absent
    assert ds.birth_year[a] == 1950 and np.isnan(ds.birth_year[b]) and ds.birth_year[z] == 2001


def test_a_keyed_dataset_matches_observations_before_pseudonymising(tables):
    ds = Dataset.from_tables(tables, pseudonymizer=Pseudonymizer(b"0123456789abcdef-test-key"))
    a = ds.patient_index("a")
    assert ds.latest_observations.toarray()[a, ds.observation_ids.index_of("egfr")] == 40


def test_the_state_is_saved_and_the_events_are_not(tables):
    ds = Dataset.from_tables(tables)
    back = dataset_from_arrays(*dataset_to_arrays(ds))
    assert back.events is None
    np.testing.assert_array_equal(back.birth_year, ds.birth_year)
    assert back.observation_ids.external_ids.tolist() == ["alt", "egfr"]
    for name in ("latest_observations",):
        assert (getattr(back, name) != getattr(ds, name)).nnz == 0


def test_an_artifact_of_format_2_still_loads(tables):
    ds = Dataset.from_tables(tables)
    arrays, meta = dataset_to_arrays(ds)
    old = {k: v for k, v in arrays.items() if not k.startswith(("latest_obs", "birth"))}
    meta = {k: v for k, v in meta.items() if k != "observation_ids"}
    back = dataset_from_arrays(old, meta)
    assert back.birth_year is None and back.latest_observations is None
