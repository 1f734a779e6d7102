"""The observational cohort: determinism, schema, confounding, overlap, leakage and the bound."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import ndtr

from recommender.columns import Columns as C
from recommender.columns import Tables
from recommender.data.synthetic.observational import (
    HELD_OUT,
    REFERENCE_POLICIES,
    TRUTH_HELD_OUT,
    TRUTH_LOGGED,
    TRUTH_TREATMENTS,
    ObservationalCohort,
    generate_observational,
    write_observational,
)
from recommender.data.synthetic.observational_model import (
    STEP,
    Observables,
    first_line_propensity,
    fixed_index,
    harm_probability,
)
from recommender.data.synthetic.observational_sim import CODES, LABELS
from recommender.data.tables import read_tables, validate_tables

EGFR, ALT, CRP, SEVERITY = CODES
SUCCESS = {"responded", "partial"}


@pytest.fixture(scope="module")
def cohort() -> ObservationalCohort:
    return generate_observational(20_000, seed=1)


def _pairs(frame: pd.DataFrame, *columns: str) -> set[tuple]:
    return set(frame[list(columns)].itertuples(index=False, name=None))


def _values(cohort: ObservationalCohort) -> pd.DataFrame:
    return cohort.reference_policies.pivot(index="policy", columns="group", values="value")


def test_same_seed_same_cohort_and_other_seed_differs():
    first, second = generate_observational(300, seed=5), generate_observational(300, seed=5)
    for name, table in {**first.tables, **first.extra_tables()}.items():
        expected = {**second.tables, **second.extra_tables()}[name]
        pd.testing.assert_frame_equal(table, expected)
    np.testing.assert_array_equal(first.patients.u, second.patients.u)
    chunked = generate_observational(300, seed=5, chunk_size=7)
    np.testing.assert_allclose(chunked.truth.bound, first.truth.bound, rtol=0, atol=1e-12)
    other = generate_observational(300, seed=6)
    assert not first.tables[Tables.outcomes].equals(other.tables[Tables.outcomes])


def test_planted_model_does_not_depend_on_cohort_size():
    small, large = generate_observational(10, seed=3), generate_observational(400, seed=3)
    for field in ("role", "mechanism", "weights", "response", "severity_slope", "harm"):
        np.testing.assert_array_equal(getattr(small.model, field), getattr(large.model, field))


def test_canonical_tables_validate_and_round_trip(tmp_path):
    small = generate_observational(2000, seed=4)
    tables = validate_tables(small.tables)
    assert {name for name, _ in tables.items()} == set(Tables.all) - {Tables.interactions}
    assert tables.patient_conditions[C.timestamp].notna().all()
    assert set(tables.observations[C.code]) == set(CODES)
    outcomes = small.tables[Tables.outcomes]
    assert set(outcomes[C.outcome]) <= set(LABELS)
    assert ((outcomes[C.outcome] == "adverse") == (outcomes[C.adverse] == 1)).all()
    assert (
        outcomes[C.timestamp]
        .between(pd.Timestamp("2012-01-01", tz="UTC"), pd.Timestamp("2024-12-31", tz="UTC"))
        .all()
    )
    folder = write_observational(small, tmp_path / "cohort")
    read = read_tables(folder)
    assert len(read.observations) == len(small.tables[Tables.observations])
    np.testing.assert_array_equal(
        read.observations[C.value], small.tables[Tables.observations][C.value]
    )
    for name in (HELD_OUT, TRUTH_HELD_OUT, TRUTH_LOGGED, REFERENCE_POLICIES, TRUTH_TREATMENTS):
        assert len(pd.read_csv(folder / f"{name}.csv")) == len(small.extra_tables()[name])


def test_naive_success_favours_the_guideline_but_the_strong_drug_is_better(cohort):
    outcomes = cohort.tables[Tables.outcomes]
    first = outcomes.sort_values(C.timestamp, kind="stable").groupby([C.patient, C.condition])
    first = first.head(1).merge(cohort.truth_treatments[[C.treatment, "role"]], on=C.treatment)
    first["success"] = first[C.outcome].isin(SUCCESS) & (first[C.adverse] == 0)
    naive = first.groupby("role")["success"].mean()
    assert naive["strong"] < naive["guideline"] - 0.04
    logged = cohort.truth_logged.merge(cohort.truth_treatments[[C.treatment, "role"]])
    effect = logged.pivot_table(index=[C.patient, C.condition], columns="role", values="p_success")
    per_condition = (effect["strong"] - effect["guideline"]).groupby(level=C.condition).mean()
    assert (per_condition > 0.02).all()
    assert (effect["strong"] - effect["guideline"]).mean() > 0.04


def test_logging_policy_respects_contraindications_and_sums_to_one(cohort):
    tables = cohort.tables
    allergic = tables[Tables.patient_conditions].merge(
        tables[Tables.contraindications], on=C.condition
    )
    assert len(allergic) > 0
    assert not _pairs(allergic, C.patient, C.treatment) & _pairs(
        tables[Tables.outcomes], C.patient, C.treatment
    )
    logged = cohort.truth_logged
    assert (logged.loc[logged["contraindicated"] == 1, ["propensity", "chosen"]] == 0).all().all()
    decisions = logged.groupby([C.patient, C.condition])
    np.testing.assert_allclose(decisions["propensity"].sum(), 1.0)
    assert (decisions["chosen"].sum() == 1).all()


def test_step_therapies_are_rarely_first_line(cohort):
    logged = cohort.truth_logged.merge(cohort.truth_treatments[[C.treatment, "step_therapy"]])
    regular = logged[(logged["step_therapy"] == 0) & (logged["contraindicated"] == 0)]
    has_regular = regular.groupby([C.patient, C.condition]).size()
    step = logged[logged["step_therapy"] == 1].set_index([C.patient, C.condition])
    step = step[step.index.isin(has_regular.index)]
    assert (step["propensity"] <= 0.015 + 1e-12).all()
    assert 0.01 < step["chosen"].mean() < 0.02
    outcomes = cohort.tables[Tables.outcomes].merge(cohort.truth_treatments)
    line = outcomes.groupby([C.patient, C.condition]).cumcount()
    assert (line[outcomes["step_therapy"] == 1] > 0).mean() > 0.9


def test_cold_start_patients_have_no_outcomes_but_covariates(cohort):
    held_out = cohort.held_out
    cold = set(held_out.loc[held_out["cold_start"] == 1, C.patient])
    assert 0.17 < len(cold) / len(cohort.tables[Tables.patients]) < 0.23
    assert not cold & set(cohort.tables[Tables.outcomes][C.patient])
    assert cold <= set(cohort.tables[Tables.observations][C.patient])
    assert cold <= set(cohort.tables[Tables.patient_conditions][C.patient])
    assert held_out[C.patient].is_unique
    held = _pairs(held_out, C.patient, C.condition)
    assert not held & _pairs(cohort.tables[Tables.outcomes], C.patient, C.condition)
    assert held <= _pairs(cohort.tables[Tables.patient_conditions], C.patient, C.condition)
    last = cohort.tables[Tables.outcomes].groupby(C.patient)[C.timestamp].max()
    warm = held_out[held_out["cold_start"] == 0].set_index(C.patient)[C.timestamp]
    assert (warm > last.reindex(warm.index)).all()


def test_policy_values_are_ordered_with_clear_gaps(cohort):
    values = _values(cohort)
    for group in ("all", "warm", "cold"):
        column = values[group]
        assert column["oracle"] > column["bound"] >= column["observables"] > column["guideline"]
    assert values.loc["bound", "cold"] == values.loc["observables", "cold"]
    warm = values["warm"]
    assert warm["bound"] - warm["guideline"] >= 0.08
    assert warm["bound"] - warm["observables"] >= 0.03


def test_posterior_expectations_are_unbiased(cohort):
    """E[E[p | information]] = E[p] for every therapy: the bound and the observables columns
    are expectations under the right conditional distributions."""
    truth = cohort.truth_held_out
    for column in ("p_success_bound", "p_success_observables"):
        error = truth[column] - truth["p_success"]
        by_role = error.groupby(truth[C.treatment].str[-2:])
        standard_error = by_role.std() / np.sqrt(by_role.size())
        assert (by_role.mean().abs() < 4 * standard_error + 1e-3).all(), column


def _as_of(observations: pd.DataFrame, decisions: pd.DataFrame) -> pd.DataFrame:
    """The latest value of every code at or before each decision (patient_id, timestamp)."""
    wide = decisions[[C.patient, C.timestamp]].drop_duplicates().sort_values(C.timestamp)
    for code in CODES:
        rows = observations[observations[C.code] == code].sort_values(C.timestamp)
        rows = rows[[C.patient, C.timestamp, C.value]].rename(columns={C.value: code})
        wide = pd.merge_asof(wide, rows, on=C.timestamp, by=C.patient, direction="backward")
    return decisions.merge(wide, on=[C.patient, C.timestamp], how="left")


def test_decisions_use_only_observations_on_or_before_them(cohort):
    """Rebuild the observables of every logged first-line decision from the tables as of the
    decision time; the true propensities follow from them, so nothing later was used."""
    tables = cohort.tables
    logged = cohort.truth_logged
    decisions = logged.drop_duplicates([C.patient, C.condition])[
        [C.patient, C.condition, C.timestamp]
    ]
    features = _as_of(tables[Tables.observations], decisions).set_index([C.patient, C.condition])
    decisions = decisions.set_index([C.patient, C.condition])
    features = features.loc[decisions.index]
    assert features[list(CODES)].notna().all().all()
    diagnoses = tables[Tables.patient_conditions]
    condition = decisions.index.get_level_values(C.condition).str[1:].astype(int) - 1
    flags = {}
    for comorbidity in ("DM", "CHF"):
        onset = diagnoses[diagnoses[C.condition] == comorbidity].set_index(C.patient)[C.timestamp]
        known = onset.reindex(decisions.index.get_level_values(C.patient)).to_numpy()
        flags[comorbidity] = pd.notna(known) & (known <= decisions[C.timestamp].to_numpy())
    birth = tables[Tables.patients].set_index(C.patient)[C.birth_year]
    blocked = logged["contraindicated"].to_numpy(dtype=bool).reshape(len(decisions), -1)
    obs = Observables(
        condition=np.asarray(condition),
        age=decisions[C.timestamp].dt.year.to_numpy()
        - birth.loc[patient_ids(decisions)].to_numpy(),
        dm=flags["DM"],
        chf=flags["CHF"],
        egfr=features[EGFR].to_numpy(),
        alt=features[ALT].to_numpy(),
        crp=features[CRP].to_numpy(),
        s_obs=(features[SEVERITY].to_numpy() - 10) / 3,
        blocked=blocked,
    )
    propensity = first_line_propensity(cohort.model, obs, 0.015)
    np.testing.assert_allclose(propensity.ravel(), logged["propensity"], atol=1e-12)
    # a feature builder that reads the latest value whatever its date sees different values
    latest = tables[Tables.observations].groupby([C.patient, C.code])[C.value].last().unstack()
    later = latest.loc[patient_ids(decisions), SEVERITY].to_numpy()
    assert (later != features[SEVERITY].to_numpy()).mean() > 0.5


def patient_ids(frame: pd.DataFrame) -> np.ndarray:
    return frame.index.get_level_values(C.patient).to_numpy()


def test_outcome_and_truth_rows_are_dated_at_or_after_their_decision(cohort):
    outcomes = cohort.tables[Tables.outcomes]
    start = cohort.truth_logged.drop_duplicates([C.patient, C.condition])
    merged = outcomes.merge(
        start[[C.patient, C.condition, C.timestamp]],
        on=[C.patient, C.condition],
        suffixes=("", "_decision"),
    )
    assert len(merged) == len(outcomes)
    assert (merged[C.timestamp] >= merged[f"{C.timestamp}_decision"]).all()
    onsets = cohort.tables[Tables.patient_conditions].set_index([C.patient, C.condition])
    for truth in (cohort.truth_logged, cohort.truth_held_out):
        keys = pd.MultiIndex.from_frame(truth[[C.patient, C.condition]])
        np.testing.assert_array_equal(
            onsets.loc[keys, C.timestamp].to_numpy(), truth[C.timestamp].to_numpy()
        )


def _brute_force_bound(cohort: ObservationalCohort, p: int, grid: int = 81) -> np.ndarray:
    """E[P(success) | observables, logged outcomes] of patient ``p``'s held-out episode by
    dense grids over u (+-6 prior sd) and over every episode's severity (+-7 sd)."""
    model, episodes, tries = cohort.model, cohort.episodes, cohort.tries
    axis = np.linspace(-6, 6, grid)
    offsets = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
    sex, year = cohort.patients.sex[p], cohort.patients.birth_year[p]
    prior_mean = model.demographic @ np.array([sex - 0.5, (year - 1970) / 20])
    u = prior_mean + model.u_sd * offsets
    log_post = -0.5 * (offsets**2).sum(axis=1)
    rho = model.reliability
    x = np.linspace(-7, 7, 81)
    x_weight = np.exp(-0.5 * x**2) / np.exp(-0.5 * x**2).sum()

    def response(e: int, therapy: np.ndarray) -> np.ndarray:
        """(len(therapy), G, S) P(response | u, s) of episode ``e``."""
        obs = episodes.obs.take(np.array([e]))
        c = obs.condition[0]
        trait = (u @ model.weights.T).T[model.mechanism[c, therapy]]  # (t, G)
        index = fixed_index(model, obs)[0, therapy][:, None, None] + trait[:, :, None]
        s = rho * obs.s_obs[0] + np.sqrt(1 - rho**2) * x
        return ndtr(index - model.severity_slope[c, therapy][:, None, None] * s)

    mine = np.flatnonzero(episodes.patient == p)
    for e in mine[~episodes.held_out[mine]]:
        rows = np.flatnonzero(tries["episode"] == e)
        rows = rows[np.array(LABELS)[tries["label"][rows]] != "adverse"]  # P(adverse) has no u
        likelihood = np.ones((len(u), len(x)))
        for prob, label in zip(response(e, tries["therapy"][rows]), tries["label"][rows]):
            likelihood *= prob if LABELS[label] in SUCCESS else 1 - prob
        log_post += np.log(likelihood @ x_weight)
    post = np.exp(log_post - log_post.max())
    post /= post.sum()
    held = mine[episodes.held_out[mine]][0]
    harm = harm_probability(model, episodes.obs.take(np.array([held])))[0]
    all_therapies = np.arange(model.role.shape[1])
    return (response(held, all_therapies) @ x_weight) @ post * (1 - harm)


def test_bound_equals_the_bayes_rule_by_brute_force():
    small = generate_observational(1500, seed=2)
    truth, episodes = small.truth, small.episodes
    patient = episodes.patient[truth.episode]
    warm = np.flatnonzero(~small.patients.cold[patient])
    informative = np.bincount(
        episodes.patient[small.tries["episode"]], weights=~episodes.held_out[small.tries["episode"]]
    )
    richest = warm[np.argsort(-informative[patient[warm]], kind="stable")[:4]]
    chosen = np.r_[richest, np.random.default_rng(0).choice(warm, 4, replace=False)]
    for row in chosen:
        expected = _brute_force_bound(small, patient[row])
        np.testing.assert_allclose(truth.bound[row], expected, atol=5e-4)
        blocked = episodes.obs.blocked[truth.episode[row]]
        best = np.argmax(np.where(blocked, -np.inf, expected))
        assert expected[truth.choices["bound"][row]] >= expected[best] - 2e-3


def test_unobserved_confounding_keeps_the_truth_consistent():
    confounded = generate_observational(10_000, seed=3, unobserved_confounding=1.5)
    values = _values(confounded)
    assert values.loc["bound", "warm"] > values.loc["observables", "warm"] + 0.03
    logged = confounded.truth_logged.groupby([C.patient, C.condition])["propensity"].sum()
    np.testing.assert_allclose(logged, 1.0)
    truth = confounded.truth_held_out
    error = truth["p_success_bound"] - truth["p_success"]
    assert abs(error.mean()) < 4 * error.std() / np.sqrt(len(error)) + 1e-3
    logged = confounded.truth_logged.merge(confounded.truth_treatments[[C.treatment, "role"]])
    strong = logged[logged["role"] == "strong"]
    assert strong["propensity"].std() > 0


def test_model_roles_cover_every_condition(cohort):
    roles = cohort.truth_treatments.groupby(C.condition)["role"].agg(set)
    assert all({"guideline", "strong", "targeted", "renal", "step"} <= r for r in roles)
    assert (cohort.model.role == STEP).sum(axis=1).tolist() == [1] * cohort.model.role.shape[0]


@pytest.mark.parametrize(
    "name, value",
    [
        ("n_patients", 0),
        ("seed", -1),
        ("treatments_per_condition", 4),
        ("latent_dim", 4),
        ("cold_start_share", 1.5),
        ("step_first_line", 1.0),
        ("unobserved_confounding", np.inf),
        ("n_conditions", 1.5),
        ("n_patients", True),
        ("quadrature_nodes", 2),
    ],
)
def test_bad_parameters_are_named(name, value):
    with pytest.raises(ValueError, match=f"'{name}'.*Got {value!r}"):
        generate_observational(**{"n_patients": 10, name: value})
