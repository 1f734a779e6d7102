"""The shared outcome rules: observation horizons, the tolerated rule and the harm start day."""

from __future__ import annotations

import pandas as pd
import pytest

from recommender.importers.rules import OutcomeRules, build_courses, derive_outcomes

RULES = OutcomeRules(
    resolution_window_days=90,
    switch_window_days=365,
    adverse_window_days=30,
    chronic_min_days=180,
    chronic_outcome=0.5,
    allergy_match="any",
)
NO_DEATHS = pd.Series([], dtype="datetime64[ns, UTC]")


def _t(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def _courses(*rows) -> pd.DataFrame:
    """Courses from (patient, treatment, start, stop, episode, episode_stop, horizon) rows."""
    frame = pd.DataFrame(
        [
            {
                "patient": patient,
                "treatment": treatment,
                "treatment_name": treatment,
                "start": _t(start),
                "stop": _t(stop) if stop else pd.NaT,
                "indication": "snomed|1",
                "episode": episode,
                "episode_stop": _t(episode_stop) if episode_stop else pd.NaT,
                "switchable": True,
                "horizon": _t(horizon) if horizon else pd.NaT,
            }
            for patient, treatment, start, stop, episode, episode_stop, horizon in rows
        ]
    )
    for column in ("start", "stop", "episode_stop", "horizon"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return build_courses(frame, extra=("horizon",))


def _harms(*rows) -> pd.DataFrame:
    frame = pd.DataFrame(
        [{"patient": p, "onset": _t(day), "code": "snomed|9", "name": "bleed"} for p, day in rows],
        columns=["patient", "onset", "code", "name"],
    )
    frame["onset"] = pd.to_datetime(frame["onset"], utc=True)
    return frame


def _rules_of(courses, harms=None, deaths=NO_DEATHS, **kwargs) -> dict:
    harms = _harms() if harms is None else harms
    out = derive_outcomes(courses, deaths, harms, RULES, **kwargs)
    return dict(zip(out["patient"] + "/" + out["treatment"], out["rule"]))


def test_a_harm_after_the_horizon_is_not_seen():
    courses = _courses(
        ("A", "d", "2020-01-01", "2020-01-02", "e1", "", "2020-01-10"),
        ("B", "d", "2020-01-01", "2020-01-02", "e2", "", "2020-12-31"),
    )
    harms = _harms(("A", "2020-01-20"), ("B", "2020-01-20"))
    rules = _rules_of(courses, harms)
    # A's follow-up ends on day 9, before the bleed: not harm, and too short to be tolerated
    assert rules == {"A/d": "no_evidence", "B/d": "adverse"}


def test_a_death_after_the_horizon_is_not_seen():
    courses = _courses(
        ("A", "d", "2020-01-01", "2020-01-02", "e1", "", "2020-01-10"),
        ("B", "d", "2020-01-01", "2020-01-02", "e2", "", "2020-01-10"),
    )
    deaths = pd.Series([_t("2020-01-15"), _t("2020-01-10")], index=["A", "B"])
    assert _rules_of(courses, deaths=deaths) == {"A/d": "no_evidence", "B/d": "adverse"}


def test_a_switch_after_the_horizon_is_not_seen():
    courses = _courses(
        ("A", "d1", "2020-01-01", "2020-01-02", "e1", "", "2020-03-01"),
        ("A", "d2", "2020-06-01", "2020-06-02", "e1", "", "2020-03-01"),
        ("B", "d1", "2020-01-01", "2020-01-02", "e2", "", "2020-12-31"),
        ("B", "d2", "2020-06-01", "2020-06-02", "e2", "", "2020-12-31"),
    )
    rules = _rules_of(courses)
    assert rules["A/d1"] == "tolerated"  # observed 60 days >= the 30-day harm window
    assert rules["B/d1"] == "switched"


def test_an_episode_ending_on_the_last_observed_day_is_censoring_not_resolution():
    courses = _courses(
        ("A", "d", "2020-01-01", "2020-01-02", "e1", "2020-01-20", "2020-01-20"),
        ("B", "d", "2020-01-01", "2020-01-02", "e2", "2020-01-19", "2020-01-20"),
    )
    assert _rules_of(courses) == {"A/d": "no_evidence", "B/d": "resolved"}


def test_chronic_duration_stops_at_the_horizon():
    courses = _courses(
        ("A", "d", "2020-01-01", "2021-01-01", "e1", "", "2020-03-01"),
        ("B", "d", "2020-01-01", "2021-01-01", "e2", "", "2020-12-31"),
    )
    assert _rules_of(courses) == {"A/d": "tolerated", "B/d": "chronic"}


def test_tolerated_needs_a_horizon_and_the_whole_harm_window():
    courses = _courses(
        ("A", "d", "2020-01-01", "2020-01-02", "e1", "", "2020-01-31"),  # 30 days observed
        ("B", "d", "2020-01-01", "2020-01-02", "e2", "", "2020-01-30"),  # 29 days
        ("C", "d", "2020-01-01", "2020-01-02", "e3", "", ""),  # unbounded (Synthea): dropped
    )
    out = derive_outcomes(courses, NO_DEATHS, _harms(), RULES)
    assert dict(zip(out["patient"], out["rule"])) == {
        "A": "tolerated",
        "B": "no_evidence",
        "C": "no_evidence",
    }
    assert out.set_index("patient").loc["A", "outcome"] == pytest.approx(0.5)


def test_harm_from_day_one_ignores_a_harm_recorded_on_the_start_day():
    courses = _courses(("A", "d", "2020-01-01", "2020-01-02", "e1", "", "2020-12-31"))
    harms = _harms(("A", "2020-01-01"))
    assert _rules_of(courses, harms) == {"A/d": "adverse"}
    assert _rules_of(courses, harms, harm_from_day=1) == {"A/d": "tolerated"}
    deaths = pd.Series([_t("2020-01-01")], index=["A"])
    assert _rules_of(courses, deaths=deaths, harm_from_day=1) == {"A/d": "adverse"}
