"""Splits: the right rows held out, reproducible for a seed, disjoint, unscorable rows counted."""

from __future__ import annotations

import doctest

import pandas as pd
import pytest

import recommender.data.splits as S
from recommender.data.tables import validate_tables
from recommender.exceptions import DataValidationError, ParameterError


def tables_from(rows, **extra):
    columns = ["patient_id", "treatment_id", "outcome", "timestamp", "condition_id"]
    return validate_tables({"outcomes": pd.DataFrame(rows, columns=columns), **extra})


def pairs(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame["patient_id"], frame["treatment_id"]))


def row_keys(frame: pd.DataFrame) -> list[tuple]:
    return sorted(map(tuple, frame.astype(str).to_numpy().tolist()))


def assert_partition(tables, split):
    """Train and test rows are disjoint and (with nothing dropped) make up the outcomes."""
    assert not pairs(split.train.outcomes) & pairs(split.test)
    if not any(split.dropped.values()):
        assert row_keys(pd.concat([split.train.outcomes, split.test])) == row_keys(tables.outcomes)


def test_leave_last_picks_latest_by_timestamp_then_file_order():
    tables = tables_from(
        [
            ("a", "x", 1, "2020-03-01", "C"),
            ("a", "y", 0, "2020-05-01", "C"),  # a: y is latest
            ("a", "z", 1, "2020-01-01", "C"),
            ("b", "x", 1, "2020-02-01", "C"),
            ("b", "y", 1, "2020-02-01", "C"),  # tie: later row
            ("c", "x", 1, "", "C"),
            ("c", "z", 0, "", "C"),  # no time: last row
            ("d", "y", 1, "2020-01-01", "C"),
            ("d", "z", 1, "", "C"),  # NaT counts earliest
            ("e", "x", 1, "2020-01-01", "C"),  # single: stays
            ("f", "y", 1, "2020-01-01", "C"),
            ("g", "z", 1, "2020-01-01", "C"),  # keep y, z known
        ]
    )
    split = S.leave_last(tables)
    assert sorted(pairs(split.test)) == [("a", "y"), ("b", "y"), ("c", "z"), ("d", "y")]
    assert "e" in set(split.train.outcomes["patient_id"])
    assert_partition(tables, split)


def test_leave_last_moves_every_row_of_the_pair_and_keeps_single_treatment_patients():
    tables = tables_from(
        [
            ("a", "x", 0, "2020-01-01", "C"),
            ("a", "y", 1, "2020-02-01", "C"),
            ("a", "x", 1, "2020-03-01", "C"),  # x repeated: both x rows leave
            ("b", "x", 0, "2020-01-01", "C"),
            ("b", "x", 1, "2020-02-01", "C"),  # one treatment
        ]
    )
    train, test = S.leave_last(tables)
    assert test[["patient_id", "treatment_id"]].values.tolist() == [["a", "x"], ["a", "x"]]
    assert pairs(train.outcomes) == {("a", "y"), ("b", "x")}


def test_leave_k_out_is_reproducible_and_seed_dependent(tiny_tables):
    first = S.leave_k_out(tiny_tables, k=2, seed=7)
    again = S.leave_k_out(tiny_tables, k=2, seed=7)
    other = S.leave_k_out(tiny_tables, k=2, seed=8)
    pd.testing.assert_frame_equal(first.test, again.test)
    pd.testing.assert_frame_equal(first.train.outcomes, again.train.outcomes)
    assert pairs(first.test) != pairs(other.test)
    assert_partition(tiny_tables, first)


def test_leave_k_out_holds_k_per_patient_with_more_than_k(tiny_tables):
    split = S.leave_k_out(tiny_tables, k=2, seed=0)
    distinct = tiny_tables.outcomes.groupby("patient_id")["treatment_id"].nunique()
    held = split.test.groupby("patient_id")["treatment_id"].nunique()
    eligible = distinct[distinct > 2].index
    assert set(held.index) == set(eligible)
    assert (held == 2).all()


def test_leave_k_out_rejects_bad_k(tiny_tables):
    with pytest.raises(ParameterError, match="k must be a positive int; got 0"):
        S.leave_k_out(tiny_tables, k=0)


def test_temporal_cutoff_and_fraction(tiny_tables):
    cutoff = "2020-04-01"
    split = S.temporal(tiny_tables, cutoff=cutoff)
    assert (split.train.outcomes["timestamp"] <= pd.Timestamp(cutoff, tz="UTC")).all()
    assert (split.test["timestamp"] > pd.Timestamp(cutoff, tz="UTC")).all()
    assert_partition(tiny_tables, split)
    share = len(S.temporal(tiny_tables, fraction=0.3).test) / len(tiny_tables.outcomes)
    assert 0.2 < share <= 0.3


def test_temporal_drops_retried_treatments_and_needs_timestamps():
    tables = tables_from(
        [
            ("a", "x", 0, "2020-01-01", "C"),
            ("a", "y", 1, "2020-02-01", "C"),
            ("a", "x", 1, "2021-01-01", "C"),
            ("a", "z", 1, "2021-02-01", "C"),
            ("b", "z", 1, "2020-01-01", "C"),
        ]
    )
    split = S.temporal(tables, cutoff="2020-06-01")
    assert pairs(split.test) == {("a", "z")}
    assert split.dropped["retried"] == 1
    with pytest.raises(DataValidationError, match="needs timestamps"):
        S.temporal(tables_from([("a", "x", 1, "", "C")]))


def test_unscorable_rows_are_dropped_and_counted():
    tables = tables_from(
        [
            ("a", "x", 1, "2020-01-01", "C"),
            ("a", "new", 1, "2020-02-01", "C"),  # only a tried new
            ("b", "x", 1, "2020-01-01", "C"),
            ("b", "y", 1, "2020-02-01", "D"),  # only b had D
            ("c", "x", 1, "2020-01-01", "C"),
            ("c", "y", 1, "2020-02-01", "C"),
            ("f", "y", 1, "2020-01-01", "C"),  # keeps y known
        ]
    )
    split = S.leave_last(tables)
    assert split.dropped == {
        "unknown_treatment": 1,
        "unknown_patient": 0,
        "unknown_condition": 1,
        "retried": 0,
    }
    assert pairs(split.test) == {("c", "y")}
    assert split.summary()["n_test_rows"] == 1


def test_leave_last_episode_holds_out_the_latest_condition():
    tables = tables_from(
        [
            ("a", "x", 1, "2020-01-01", "C"),
            ("a", "y", 0, "2020-03-01", "D"),
            ("a", "z", 1, "2020-04-01", "D"),
            ("a", "w", 1, "2020-02-01", "C"),
            ("b", "x", 1, "2020-01-01", "C"),
            ("b", "y", 1, "2020-02-01", "C"),  # one episode: stays
            ("b", "z", 1, "2020-03-01", "C"),
            ("b", "w", 1, "2020-04-01", "C"),
            ("c", "y", 1, "2020-01-01", "D"),  # keeps D known
        ]
    )
    split = S.leave_last_episode(tables)
    assert sorted(pairs(split.test)) == [("a", "y"), ("a", "z")]
    assert_partition(tables, split)


def test_split_unpacks_and_keeps_other_tables(tiny_tables):
    train, test = S.leave_last(tiny_tables)
    assert train.patient_conditions is tiny_tables.patient_conditions
    assert train.fingerprint != tiny_tables.fingerprint
    assert list(test.columns) == list(tiny_tables.outcomes.columns)
    assert len(test) == tiny_tables.outcomes["patient_id"].nunique()


def test_docstring_examples():
    failures, tried = doctest.testmod(S)
    assert tried > 0 and failures == 0
