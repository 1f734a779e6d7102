"""The synthetic cohort: determinism, schema, planted truth and the Bayes oracle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recommender.columns import Columns as C
from recommender.columns import Tables
from recommender.data.synthetic.planted import (
    HELD_OUT,
    SyntheticCohort,
    bayes_rate,
    generate_cohort,
    popularity_rate,
    write_cohort,
)
from recommender.data.tables import read_tables, validate_tables


@pytest.fixture(scope="module")
def cohort() -> SyntheticCohort:
    return generate_cohort(3000, seed=1)


def _pairs(frame: pd.DataFrame, *columns: str) -> set[tuple]:
    return set(frame[list(columns)].itertuples(index=False, name=None))


def test_same_seed_same_cohort_and_other_seed_differs():
    first, second, other = (
        generate_cohort(300, seed=5),
        generate_cohort(300, seed=5),
        generate_cohort(300, seed=6),
    )
    for table in first.tables:
        pd.testing.assert_frame_equal(first.tables[table], second.tables[table])
    pd.testing.assert_frame_equal(first.held_out, second.held_out)
    np.testing.assert_array_equal(first.traits, second.traits)
    assert not first.tables[Tables.outcomes].equals(other.tables[Tables.outcomes])


def test_planted_model_does_not_depend_on_cohort_size():
    np.testing.assert_array_equal(
        generate_cohort(10, seed=3).response_probability,
        generate_cohort(500, seed=3).response_probability,
    )


def test_tables_pass_validation(cohort):
    tables = validate_tables(cohort.tables)
    assert set(name for name, _ in tables.items()) == set(Tables.all) - {Tables.observations}
    outcomes = cohort.tables[Tables.outcomes]
    assert set(outcomes[C.outcome]) <= {
        "responded",
        "partial",
        "no_response",
        "worsened",
        "adverse",
    }
    assert ((outcomes[C.outcome] == "adverse") == (outcomes[C.adverse] == 1)).all()
    assert (
        outcomes[C.timestamp]
        .between(pd.Timestamp("2012-01-01", tz="UTC"), pd.Timestamp("2024-12-31", tz="UTC"))
        .all()
    )


def test_write_cohort_round_trips_with_held_out(cohort, tmp_path):
    folder = write_cohort(cohort, tmp_path / "cohort")
    assert (folder / f"{HELD_OUT}.csv").is_file()
    tables = read_tables(folder)
    assert len(tables.outcomes) == len(cohort.tables[Tables.outcomes])
    held_out = pd.read_csv(folder / f"{HELD_OUT}.csv")
    assert bayes_rate(held_out) == pytest.approx(bayes_rate(cohort.held_out))


def test_held_out_episodes_absent_from_outcomes_but_diagnosed(cohort):
    held = _pairs(cohort.held_out, C.patient, C.condition)
    assert len(held) == len(cohort.held_out) > 0
    assert cohort.held_out[C.patient].is_unique
    assert not held & _pairs(cohort.tables[Tables.outcomes], C.patient, C.condition)
    assert held <= _pairs(cohort.tables[Tables.patient_conditions], C.patient, C.condition)


def test_held_out_episode_is_each_patients_last(cohort):
    outcomes = cohort.tables[Tables.outcomes]
    last_written = outcomes.groupby(C.patient)[C.timestamp].max()
    held = cohort.held_out.set_index(C.patient)[C.timestamp]
    assert (held > last_written.reindex(held.index)).all()
    episodes = cohort.tables[Tables.patient_conditions]
    n_episodes = episodes[episodes[C.condition].str.startswith("C")].groupby(C.patient).size()
    assert set(cohort.held_out[C.patient]) == set(n_episodes.index[n_episodes >= 2])


def test_no_contraindicated_therapy_given_to_an_allergic_patient(cohort):
    tables = cohort.tables
    allergic = tables[Tables.patient_conditions].merge(
        tables[Tables.contraindications], on=C.condition
    )
    assert len(allergic) > 0
    forbidden = _pairs(allergic, C.patient, C.treatment)
    assert not forbidden & _pairs(tables[Tables.outcomes], C.patient, C.treatment)
    allergies = set(tables[Tables.contraindications][C.condition])
    assert allergies <= set(tables[Tables.conditions][C.condition])


def test_bayes_rate_strictly_between_popularity_and_one(cohort):
    assert popularity_rate(cohort.held_out) < bayes_rate(cohort.held_out) < 1
    assert (
        cohort.held_out["bayes_hit_probability"]
        >= cohort.held_out["popularity_hit_probability"] - 1e-12
    ).all()


def test_oracle_probabilities_are_calibrated():
    held_out = generate_cohort(20000, seed=2).held_out
    truth = held_out["best_treatment_id"]
    assert (held_out["bayes_best_treatment_id"] == truth).mean() == pytest.approx(
        bayes_rate(held_out), abs=0.02
    )
    assert (held_out["popularity_best_treatment_id"] == truth).mean() == pytest.approx(
        popularity_rate(held_out), abs=0.02
    )


def test_best_therapy_differs_across_traits_and_matches_held_out_truth(cohort):
    best = cohort.response_probability.argmax(axis=2)  # (conditions, traits)
    assert all(len(set(row)) > 1 for row in best)
    patient = cohort.held_out[C.patient].str[1:].astype(int).to_numpy() - 1
    condition = cohort.held_out[C.condition].str[1:].astype(int).to_numpy() - 1
    expected = [
        f"RX{c + 1:02d}{t + 1:02d}"
        for c, t in zip(condition, best[condition, cohort.traits[patient]])
    ]
    assert cohort.held_out["best_treatment_id"].tolist() == expected


def test_most_prescribed_therapy_is_the_most_common_traits_best(cohort):
    outcomes = cohort.tables[Tables.outcomes]
    most = outcomes.groupby(C.condition)[C.treatment].agg(lambda s: s.value_counts().index[0])
    best = cohort.response_probability.argmax(axis=2)
    for condition, treatment in most.items():
        c, t = int(condition[1:]) - 1, int(treatment[-2:]) - 1
        assert best[c, 0] == t
        assert all(best[c, z] != t for z in range(1, best.shape[1]))


def test_contraindicated_therapy_is_nobodys_best(cohort):
    best = cohort.response_probability.argmax(axis=2)
    for treatment in cohort.tables[Tables.contraindications][C.treatment]:
        c, t = int(treatment[2:4]) - 1, int(treatment[-2:]) - 1
        assert t not in best[c]


@pytest.mark.parametrize(
    "name, value",
    [
        ("n_patients", 0),
        ("seed", -1),
        ("n_traits", 1),
        ("treatments_per_condition", 2),
        ("n_conditions", 1.5),
        ("n_patients", True),
    ],
)
def test_bad_parameters_are_named(name, value):
    with pytest.raises(ValueError, match=f"'{name}'.*Got {value!r}"):
        generate_cohort(**{"n_patients": 10, name: value})


def test_rates_reject_a_frame_without_the_oracle_columns():
    with pytest.raises(ValueError, match="bayes_hit_probability"):
        bayes_rate(pd.DataFrame({"x": [1]}))


def test_vectorised_at_scale():
    cohort = generate_cohort(200_000, seed=0, n_conditions=1000, treatments_per_condition=10)
    assert len(cohort.tables[Tables.treatments]) == 10_000
    assert len(cohort.tables[Tables.patients]) == 200_000
    assert cohort.response_probability.shape == (1000, 4, 10)
    assert len(cohort.held_out) > 150_000
