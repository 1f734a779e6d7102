"""Covariates as of a time: no future lab or diagnosis leaks into a past decision."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recommender.data.covariates import covariates_at, current_covariates, new_patient_covariates
from recommender.data.dataset import Dataset
from recommender.data.dataset_arrays import dataset_from_arrays, dataset_to_arrays
from tests.data.test_events import tables  # noqa: F401  (the fixture)


def ns(day: str) -> int:
    return pd.Timestamp(day, tz="UTC").value


def test_a_later_lab_or_diagnosis_never_reaches_an_earlier_time(tables):  # noqa: F811
    ds = Dataset.from_tables(tables)
    a = ds.patients.index_of("a")
    egfr, alt = ds.observation_ids.index_of("egfr"), ds.observation_ids.index_of("alt")
    codes = np.array([egfr, alt])
    times = np.array([ns("2019-06-01"), ns("2020-01-01"), ns("2020-04-30"), ns("2020-05-01")])
    cov = covariates_at(ds, np.full(4, a), times, codes)
    # eGFR 60 on 2020-01-01 and 40 on 2020-05-01; ALT has no time: never used for the past
    np.testing.assert_array_equal(cov.observations[:, 0], [np.nan, 60, 60, 40])
    assert np.isnan(cov.observations[:, 1]).all()
    ckd, c1 = ds.conditions.index_of("CKD"), ds.conditions.index_of("c1")
    dx = cov.diagnoses.toarray()
    assert dx[:, ckd].tolist() == [False, False, True, True]  # onset 2020-02-01
    assert dx[:, c1].tolist() == [False, True, True, True]  # onset 2019-12-01
    np.testing.assert_allclose(cov.age, [69.4, 70.0, 70.3, 70.3], atol=0.05)
    assert cov.sex.tolist() == ["F"] * 4


def test_the_current_state_survives_an_artifact_and_uses_every_value(tables):  # noqa: F811
    ds = Dataset.from_tables(tables)
    back = dataset_from_arrays(*dataset_to_arrays(ds))
    codes = np.arange(len(ds.observation_ids))
    everyone = np.arange(ds.n_patients)
    now, saved = current_covariates(ds, everyone, codes), current_covariates(back, everyone, codes)
    np.testing.assert_array_equal(now.observations, saved.observations)
    np.testing.assert_array_equal(now.age, saved.age)
    a = ds.patients.index_of("a")
    assert now.observations[a].tolist() == [0.0, 40.0]  # the untimed ALT counts now
    assert (now.diagnoses != saved.diagnoses).nnz == 0


def test_a_new_patient_from_the_request(tables):  # noqa: F811
    ds = Dataset.from_tables(tables)
    codes = np.arange(len(ds.observation_ids))
    cov = new_patient_covariates(
        ds,
        ["CKD", "nope"],
        codes,
        sex="M",
        birth_year=1980,
        observations={"egfr": 25.0, "unknown": 3},
    )
    assert cov.diagnoses.indices.tolist() == [ds.conditions.index_of("CKD")]
    assert np.isnan(cov.observations[0, 0]) and cov.observations[0, 1] == 25
    assert cov.sex.tolist() == ["M"] and 40 < cov.age[0] < 42
