"""Decisions, their lines and their histories, checked against a direct reading of the rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from recommender.data.dataset import Dataset
from recommender.data.decisions import decisions, prior_history
from recommender.data.tables import validate_tables

LABELS = ["responded", "partial", "no_response", "worsened", "adverse"]


def random_tables(seed: int, n_rows: int = 60):
    rng = np.random.default_rng(seed)
    days = rng.integers(0, 12, n_rows)  # few days: many ties
    return validate_tables(
        {
            "outcomes": pd.DataFrame(
                {
                    "patient_id": [f"p{i}" for i in rng.integers(0, 6, n_rows)],
                    "treatment_id": [f"t{i}" for i in rng.integers(0, 5, n_rows)],
                    "outcome": rng.choice(LABELS, n_rows),
                    "timestamp": [
                        "" if rng.random() < 0.1 else f"2020-01-{d + 1:02d}" for d in days
                    ],
                    "condition_id": [
                        "" if rng.random() < 0.1 else f"c{i}" for i in rng.integers(0, 3, n_rows)
                    ],
                }
            )
        }
    )


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_lines_and_histories_equal_a_direct_reading(seed):
    tables = random_tables(seed)
    ds = Dataset.from_tables(tables)
    made = decisions(ds)
    history = prior_history(ds, made)
    rows = tables.outcomes.assign(position=np.arange(len(tables.outcomes)))
    assert sorted(made.row.tolist()) == rows.index[rows.condition_id.notna()].tolist()
    for i, r in enumerate(made.row.tolist()):
        me = rows.iloc[r]
        same = rows[(rows.patient_id == me.patient_id) & (rows.condition_id == me.condition_id)]
        if pd.isna(me.timestamp):
            earlier = same.iloc[:0]
        else:
            earlier = same[same.timestamp.notna() & (same.timestamp < me.timestamp)]
        # same-time rows of the episode sort by file order
        ties = same[(same.timestamp == me.timestamp) & (same.position < r)]
        if pd.isna(me.timestamp):
            ties = same[same.timestamp.isna() & (same.position < r)]
            unknown_first = same.iloc[:0]
        else:
            unknown_first = same[same.timestamp.isna()]  # an unknown time sorts first
        expected_line = len(
            set(earlier.treatment_id) | set(ties.treatment_id) | set(unknown_first.treatment_id)
        )
        assert made.line[i] == expected_line, (i, r)
        # history: every treatment of the patient started strictly before, its latest outcome
        mine = rows[rows.patient_id == me.patient_id]
        if pd.isna(me.timestamp):
            before = mine.iloc[:0]
        else:
            before = mine[mine.timestamp.notna() & (mine.timestamp < me.timestamp)]
        latest = before.sort_values(["timestamp", "position"]).drop_duplicates(
            "treatment_id", keep="last"
        )
        got = history[i]
        expected = {
            ds.treatments.index_of(t): ds.policy.values(np.array([o]))[0]
            for t, o in zip(latest.treatment_id, latest.outcome)
        }
        assert dict(zip(got.indices.tolist(), got.data.tolist())) == expected


def test_success_and_harm_follow_the_policy():
    tables = random_tables(3, n_rows=200)
    ds = Dataset.from_tables(tables)
    made = decisions(ds)
    outcome = tables.outcomes.outcome.to_numpy()[made.row]
    adverse = tables.outcomes.adverse.to_numpy()[made.row] == 1
    harm = adverse | (outcome < 0)
    np.testing.assert_array_equal(made.harm, harm)
    np.testing.assert_array_equal(made.success, (outcome > 0) & ~harm)
    assert made.first_line.any() and (made.line > 0).any()
