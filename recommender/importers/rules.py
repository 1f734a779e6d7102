"""The outcome rule set shared by the Synthea and FHIR importers.

Source rows (one per prescription, procedure or care plan) are first merged into *courses*: the
rows of one patient with the same treatment for the same indication episode form one course,
starting at the earliest row start and ending at the latest row stop (open when any row has no
stop). Each course then gets the first rule below that applies; all comparisons are by calendar
day (UTC):

1. **adverse** (outcome -1, adverse=1): the patient died, or an allergy of the patient started
   (``allergy_match="substance"``: an allergy to this treatment, by equal code or by the allergy's
   substance name appearing in the treatment name; ``"any"``: any allergy), within
   ``adverse_window_days`` after the course start (the start day included).
2. **switched** (outcome 0): another treatment for the same indication episode (the same
   condition code when the episode is unknown) started after this course's start day and within
   ``switch_window_days``, before the episode ended. Switching and adding a drug (escalation)
   both count as failure of the earlier treatment. Only *switchable* courses (drugs; not
   procedures or care plans, which are often several steps of one plan) take part, on both
   sides.
3. **resolved** (outcome 1): the linked condition episode ended within
   ``resolution_window_days`` after the course start (the start day included).
4. **chronic** (outcome ``chronic_outcome``, default 0.5 = partial): no evidence above, and the
   course is still open or lasted at least ``chronic_min_days``: a continued treatment without
   switch. ``chronic_outcome=None`` drops these courses instead.
5. **tolerated** (outcome ``chronic_outcome``): only for courses with a known observation
   horizon (below): none of the above, and the patient was observed for the whole
   ``adverse_window_days`` after the start: the course ended without harm, switch or known
   resolution while it could have been seen. ``chronic_outcome=None`` drops these too.
6. otherwise no evidence: the course is dropped (counted in the report as "no evidence").

**Observation horizon.** A course may carry ``horizon``: the last day its patient is observed
(the end of the OMOP observation period holding its start). Nothing after that day is read:
a death, allergy or harm event, or another drug (switch) counts only up to the horizon, an
episode end counts as resolution only when it is before the horizon (an end on the last
observed day is the end of follow-up, not of the condition), and a course's duration for the
chronic rule stops there. Without a horizon (Synthea, FHIR) every window is unbounded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import pandas as pd

from ..exceptions import ParameterError
from .common import iso
from .report import ImportReport

#: Outcome value per rule name (``chronic`` and ``tolerated`` come from the parameters).
RULE_OUTCOMES = {"adverse": -1.0, "switched": 0.0, "resolved": 1.0}

#: Columns a row frame passed to :func:`build_courses` must have.
ROW_COLUMNS = (
    "patient",
    "treatment",
    "treatment_name",
    "start",
    "stop",
    "indication",
    "episode",
    "episode_stop",
    "switchable",
)


@dataclass(frozen=True)
class OutcomeRules:
    """Parameters of the outcome rule set (see the module docstring); windows are in days."""

    resolution_window_days: int = 90
    switch_window_days: int = 365
    adverse_window_days: int = 30
    chronic_min_days: int = 180
    chronic_outcome: float | None = 0.5
    allergy_match: Literal["substance", "any"] = "substance"

    def __post_init__(self):
        for name in (
            "resolution_window_days",
            "switch_window_days",
            "adverse_window_days",
            "chronic_min_days",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ParameterError(
                    f"The '{name}' outcome rule must be an int in the range "
                    f"[0, inf). Got {value!r} instead."
                )
        value = self.chronic_outcome
        if value is not None and not (isinstance(value, (int, float)) and -1 <= value <= 1):
            raise ParameterError(
                "The 'chronic_outcome' outcome rule must be a number in [-1, 1] "
                f"or None (drop). Got {value!r} instead."
            )
        if self.allergy_match not in ("substance", "any"):
            raise ParameterError(
                "The 'allergy_match' outcome rule must be 'substance' or 'any'. "
                f"Got {self.allergy_match!r} instead."
            )

    def to_dict(self) -> dict:
        return asdict(self)


def build_courses(rows: pd.DataFrame, extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """Merge source rows into courses (one per patient, treatment, indication and episode).

    Parameters
    ----------
    rows : DataFrame with :data:`ROW_COLUMNS`
        ``start``/``stop``/``episode_stop`` are UTC timestamps (stop NaT = still running);
        ``indication`` is a condition id, ``episode`` an episode key (None when unknown);
        ``switchable`` (bool) says whether the row may take part in the switch rule.
    extra : column names
        Further columns of ``rows`` carried over (the value of the course's first row).

    Returns
    -------
    DataFrame
        One row per course: patient, treatment, treatment_name, indication, episode, start,
        stop (NaT when open), open (bool), episode_stop, rows (source rows merged), ``extra``.
    """
    frame = rows.loc[:, list(ROW_COLUMNS) + list(extra)].copy()
    frame["episode_key"] = frame["episode"].where(frame["episode"].notna(), "")
    frame["open"] = frame["stop"].isna()
    keys = ["patient", "treatment", "indication", "episode_key"]
    courses = (
        frame.groupby(keys, sort=True, dropna=False)
        .agg(
            treatment_name=("treatment_name", "first"),
            start=("start", "min"),
            stop=("stop", "max"),
            open=("open", "any"),
            episode_stop=("episode_stop", "first"),
            switchable=("switchable", "all"),
            rows=("start", "size"),
            **{column: (column, "first") for column in extra},
        )
        .reset_index()
    )
    courses.loc[courses["open"], "stop"] = pd.NaT
    courses["episode"] = courses["episode_key"].where(courses["episode_key"] != "", None)
    return courses.drop(columns="episode_key")


def derive_outcomes(
    courses: pd.DataFrame,
    deaths: pd.Series,
    allergies: pd.DataFrame,
    rules: OutcomeRules,
    *,
    harm_from_day: int = 0,
) -> pd.DataFrame:
    """Apply the rule set to courses.

    Parameters
    ----------
    courses : DataFrame from :func:`build_courses`
        Optionally with ``horizon`` (UTC timestamp, NaT = unbounded): the last observed day of
        the course's patient (see the module docstring).
    deaths : Series of UTC timestamps indexed by patient (patients who died)
    allergies : DataFrame with patient, onset (UTC timestamp), code (condition id) and name
        The harm events besides death: allergies (Synthea, FHIR) or the first record of an
        adverse-event condition (OMOP, with ``allergy_match="any"``).
    rules : OutcomeRules
    harm_from_day : int
        First day after the course start on which an event of ``allergies`` counts (0 = the
        start day itself; 1 = from the next day, so an event recorded on the start day, which
        may be the reason for the treatment, is not taken as its harm). Deaths count from the
        start day.

    Returns
    -------
    DataFrame
        ``courses`` with ``outcome`` (float, NaN where no rule applies), ``adverse`` (0/1) and
        ``rule`` ("adverse", "switched", "resolved", "chronic", "tolerated" or "no_evidence").
    """
    out = courses.reset_index(drop=True).copy()
    start_day = out["start"].dt.floor("D")
    horizon = _horizon(out)
    limit = (horizon - start_day).dt.days  # days observed after the start; NaN = unbounded
    adverse = _died(out, start_day, limit, deaths, rules) | _allergic(
        out, start_day, limit, allergies, rules, harm_from_day
    )
    end_day = out["episode_stop"].dt.floor("D")
    days_to_end = (end_day - start_day).dt.days
    resolved = days_to_end.between(0, rules.resolution_window_days).to_numpy() & ~(
        days_to_end >= limit
    ).to_numpy(dtype=bool)
    switch_day = _first_switch(out, start_day, rules)
    switch_gap = (switch_day - start_day).dt.days
    switched = (
        switch_day.notna().to_numpy()
        & ~(end_day <= switch_day).fillna(False).to_numpy()
        & ~(switch_gap > limit).to_numpy(dtype=bool)
    )
    stop_day = out["stop"].dt.floor("D")
    stop_day = stop_day.where(~(stop_day > horizon), horizon)
    duration = (stop_day - start_day).dt.days
    chronic = (out["open"] | (duration >= rules.chronic_min_days).fillna(False)).to_numpy()
    tolerated = (limit >= rules.adverse_window_days).to_numpy(dtype=bool)
    rule = np.select(
        [adverse, switched, resolved, chronic, tolerated],
        ["adverse", "switched", "resolved", "chronic", "tolerated"],
        default="no_evidence",
    )
    out["rule"] = rule
    values = {**RULE_OUTCOMES, "chronic": rules.chronic_outcome, "tolerated": rules.chronic_outcome}
    out["outcome"] = pd.Series(rule).map(values).astype(float)
    out["adverse"] = adverse.astype(np.int8)
    return out


def _horizon(courses: pd.DataFrame) -> pd.Series:
    """The courses' last observed day (UTC midnight), NaT where unbounded."""
    if "horizon" not in courses:
        return pd.Series(pd.NaT, index=courses.index, dtype="datetime64[ns, UTC]")
    return pd.to_datetime(courses["horizon"], utc=True).dt.floor("D")


def _within(days: pd.Series, window: int, limit: pd.Series, first: int = 0) -> np.ndarray:
    """Days in [first, window] and not past ``limit`` (NaN limit = unbounded)."""
    inside = days.between(first, window).fillna(False).to_numpy(dtype=bool)
    return inside & ~(days > limit).to_numpy(dtype=bool)


def _died(
    courses: pd.DataFrame,
    start_day: pd.Series,
    limit: pd.Series,
    deaths: pd.Series,
    rules: OutcomeRules,
) -> np.ndarray:
    death_day = pd.to_datetime(deaths, utc=True).dt.floor("D")
    death_day = death_day[~death_day.index.duplicated()]
    aligned = pd.Series(death_day.reindex(courses["patient"].to_numpy()).array, index=courses.index)
    return _within((aligned - start_day).dt.days, rules.adverse_window_days, limit)


def _allergic(
    courses: pd.DataFrame,
    start_day: pd.Series,
    limit: pd.Series,
    allergies: pd.DataFrame,
    rules: OutcomeRules,
    harm_from_day: int,
) -> np.ndarray:
    if allergies.empty:
        return np.zeros(len(courses), dtype=bool)
    left = pd.DataFrame(
        {
            "course": np.arange(len(courses)),
            "patient": courses["patient"],
            "start_day": start_day,
            "limit": limit,
            "treatment": courses["treatment"],
            "treatment_name": courses["treatment_name"].fillna("").str.lower(),
        }
    )
    pairs = left.merge(allergies[["patient", "onset", "code", "name"]], on="patient")
    days = (pairs["onset"].dt.floor("D") - pairs["start_day"]).dt.days
    hit = _within(days, rules.adverse_window_days, pairs["limit"], harm_from_day).copy()
    if rules.allergy_match == "substance":
        names = pairs["name"].fillna("").str.lower().str.strip()
        by_name = np.array(
            [len(n) >= 4 and n in t for n, t in zip(names, pairs["treatment_name"])], dtype=bool
        )
        hit &= (pairs["code"] == pairs["treatment"]).to_numpy() | by_name
    flagged = np.zeros(len(courses), dtype=bool)
    flagged[pairs.loc[hit, "course"].to_numpy()] = True
    return flagged


def _first_switch(courses: pd.DataFrame, start_day: pd.Series, rules: OutcomeRules) -> pd.Series:
    """Day of the first other treatment started for the same indication episode, else NaT."""
    group = courses["episode"].where(
        courses["episode"].notna(), "indication:" + courses["indication"].astype(str)
    )
    frame = pd.DataFrame(
        {
            "course": np.arange(len(courses)),
            "patient": courses["patient"],
            "group": group,
            "treatment": courses["treatment"],
            "day": start_day,
        }
    )
    frame = frame[(courses["indication"].notna() & courses["switchable"]).to_numpy()]
    pairs = frame.merge(frame, on=["patient", "group"], suffixes=("", "_other"))
    gap = (pairs["day_other"] - pairs["day"]).dt.days
    pairs = pairs[
        (pairs["treatment_other"] != pairs["treatment"])
        & (gap > 0)
        & (gap <= rules.switch_window_days)
    ]
    first = pairs.groupby("course")["day_other"].min()
    result = pd.Series(pd.NaT, index=range(len(courses)), dtype="datetime64[ns, UTC]")
    result.loc[first.index] = first.array
    return result


def link_episodes(rows: pd.DataFrame, episodes: pd.DataFrame) -> pd.DataFrame:
    """Link each row to the latest episode of its indication that started on or before it.

    Parameters
    ----------
    rows : DataFrame with patient, indication (condition id) and start (UTC timestamp)
    episodes : DataFrame with patient, condition, start, stop and episode (key)

    Returns
    -------
    DataFrame
        ``rows`` (same order) plus ``episode`` (key or None) and ``episode_stop`` (NaT when the
        episode is open or unknown). Days are compared, so a same-day episode counts as before.
    """
    left = rows.assign(day=rows["start"].dt.floor("D"), order=np.arange(len(rows)))
    right = episodes.assign(day=episodes["start"].dt.floor("D"))[
        ["patient", "condition", "day", "episode", "stop"]
    ].rename(columns={"condition": "indication", "stop": "episode_stop"})
    right = right[right["day"].notna()]
    for frame in (left, right):  # merge_asof wants identical key dtypes
        for column in ("patient", "indication"):
            frame[column] = frame[column].astype(object)
    linked = pd.merge_asof(
        left.sort_values("day", kind="stable"),
        right.sort_values("day", kind="stable"),
        on="day",
        by=["patient", "indication"],
        direction="backward",
    )
    linked = linked.sort_values("order").reset_index(drop=True)
    linked["episode"] = linked["episode"].astype(object).where(linked["episode"].notna(), None)
    linked["episode_stop"] = pd.to_datetime(linked["episode_stop"], utc=True)
    return linked.drop(columns=["day", "order"])


def outcome_table(
    rows: pd.DataFrame,
    patients: set | None,
    deaths: pd.Series,
    allergies: pd.DataFrame,
    rules: OutcomeRules,
    report: ImportReport,
    *,
    harm_from_day: int = 0,
) -> pd.DataFrame:
    """Courses from ``rows`` with their derived outcome, as a canonical outcomes table.

    ``rows`` needs :data:`ROW_COLUMNS` plus ``source``, and optionally ``horizon`` (the last
    observed day of the row's patient: the course takes that of its first row, so pass rows
    sorted by start). Rows of patients not in ``patients`` (when given) and courses no rule
    applies to are dropped and counted in ``report``. ``harm_from_day`` is passed to
    :func:`derive_outcomes`.

    Returns
    -------
    DataFrame
        patient_id, treatment_id, outcome, timestamp (course start, ISO text), condition_id
        (indication), adverse, and the extra columns rule, stop, source and prescriptions (source
        rows merged into the course), and with a horizon ``observation_end`` (its day,
        ``YYYY-MM-DD``).
    """
    if patients is not None:
        unknown = ~rows["patient"].isin(patients)
        report.drop("treatment rows: patient not among the imported patients", int(unknown.sum()))
        rows = rows[~unknown]
    bounded = "horizon" in rows
    courses = build_courses(rows, extra=("source", "horizon") if bounded else ("source",))
    report.count("treatment rows merged into courses", len(rows))
    report.count("courses built", len(courses))
    derived = derive_outcomes(courses, deaths, allergies, rules, harm_from_day=harm_from_day)
    no_evidence = derived["outcome"].isna()
    report.drop("courses: no outcome evidence (no rule applied)", int(no_evidence.sum()))
    kept = derived[~no_evidence].reset_index(drop=True)
    table = pd.DataFrame(
        {
            "patient_id": kept["patient"],
            "treatment_id": kept["treatment"],
            "outcome": kept["outcome"].round(3),
            "timestamp": iso(kept["start"]),
            "condition_id": kept["indication"],
            "adverse": kept["adverse"].astype(int),
            "rule": kept["rule"],
            "stop": iso(kept["stop"]),
            "source": kept["source"],
            "prescriptions": kept["rows"].astype(int),
        }
    )
    if bounded:
        horizon = pd.to_datetime(kept["horizon"], utc=True)
        table["observation_end"] = horizon.dt.strftime("%Y-%m-%d").fillna("").astype(object)
    return table
