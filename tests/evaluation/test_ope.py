"""Off-policy estimators on a simulated bandit whose policy values are known exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recommender.evaluation.ope import ope_estimates


def bandit(seed: int, n: int = 4000):
    """Three arms; a binary context tilts both the logging policy and the rewards."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, n)
    success = np.array([[0.3, 0.6, 0.5], [0.7, 0.2, 0.5]])  # P(success | x, arm)
    logging = np.array([[0.6, 0.1, 0.3], [0.2, 0.5, 0.3]])  # clinicians' choice given x
    arm = (rng.random(n)[:, None] > np.cumsum(logging[x], axis=1)).sum(axis=1)
    reward = (rng.random(n) < success[x, arm]).astype(float)
    policy = np.where(x == 0, 1, 0)  # the best arm for each context
    truth = 0.5 * 0.6 + 0.5 * 0.7
    patients = np.arange(n) // 2  # two decisions per patient
    return x, arm, reward, logging[x, arm], policy, success, truth, patients


def estimates(seed: int, q_noise: float = 0.0, **options):
    x, arm, reward, propensity, policy, success, truth, patients = bandit(seed)
    q = success + q_noise  # a (possibly wrong) outcome model
    out = ope_estimates(
        reward,
        propensity,
        arm == policy,
        q[x, policy],
        q[x, arm],
        patients,
        n_bootstrap=200,
        seed=seed,
        **options,
    )
    return out, truth


def test_estimates_are_close_and_their_intervals_cover_the_truth():
    covered = {"ips": 0, "snips": 0, "dr": 0}
    errors = {"ips": [], "snips": [], "dr": []}
    for seed in range(30):
        out, truth = estimates(seed)
        for name, est in out.items():
            covered[name] += est.ci95[0] <= truth <= est.ci95[1]
            errors[name].append(est.value - truth)
    for name in covered:
        assert covered[name] >= 25, (name, covered[name])  # ~95% of 30
        assert abs(np.mean(errors[name])) < 0.01, name
    assert np.std(errors["dr"]) < np.std(errors["ips"])  # the outcome model cuts the variance


def test_dr_stays_unbiased_with_a_wrong_outcome_model():
    errors = [estimates(seed, q_noise=0.2)[0]["dr"].value - 0.65 for seed in range(30)]
    assert abs(np.mean(errors)) < 0.015


def test_clipping_bounds_the_weights():
    x, arm, reward, propensity, policy, success, truth, patients = bandit(1)
    tiny = np.full_like(propensity, 1e-6)
    out = ope_estimates(
        reward,
        tiny,
        arm == policy,
        success[x, policy],
        success[x, arm],
        patients,
        min_propensity=0.5,
        n_bootstrap=10,
    )
    assert out["ips"].value <= 2 * reward.mean() + 1e-9


def test_no_decision_is_an_error():
    with pytest.raises(ValueError, match="no logged decision"):
        ope_estimates(
            np.zeros(0), np.zeros(0), np.zeros(0, bool), np.zeros(0), np.zeros(0), np.zeros(0)
        )


def test_unsupported_choices_widen_the_interval_by_their_worst_case():
    x, arm, reward, propensity, policy, success, truth, patients = bandit(2)
    args = (reward, propensity, arm == policy, success[x, policy], success[x, arm], patients)
    plain = ope_estimates(*args, n_bootstrap=50, seed=0)["dr"]
    unsupported = x == 1  # pretend clinicians never chose arm 0 for x = 1
    wide = ope_estimates(*args, unsupported=unsupported, n_bootstrap=50, seed=0)["dr"]
    q = success[x, policy][unsupported]
    assert wide.sampling_ci95 == plain.ci95
    assert wide.ci95[0] == pytest.approx(plain.ci95[0] - q.sum() / len(x))
    assert wide.ci95[1] == pytest.approx(plain.ci95[1] + (1 - q).sum() / len(x))
    assert wide.unsupported == pytest.approx(unsupported.mean())
    assert wide.to_dict()["sampling_ci95"] == list(plain.ci95)


def test_values_and_bounds_stay_in_zero_one():
    """Few decisions, tiny propensities: IPS alone would exceed 1; reported values do not."""
    reward = np.array([1.0, 1.0, 0.0, 1.0])
    out = ope_estimates(
        reward,
        np.array([0.05, 0.05, 0.9, 0.9]),
        np.array([True, True, False, False]),
        np.full(4, 0.9),
        np.full(4, 0.5),
        np.arange(4),
        n_bootstrap=200,
        unsupported=np.array([True, False, False, False]),
    )
    for estimate in out.values():
        assert 0.0 <= estimate.value <= 1.0
        assert 0.0 <= estimate.ci95[0] <= estimate.ci95[1] <= 1.0
    assert out["ips"].value == 1.0  # (20 + 20) / 4 = 10, clipped


def test_snips_is_undefined_when_no_decision_matches_the_policy():
    out = ope_estimates(
        np.array([1.0, 0.0, 1.0]),
        np.full(3, 0.5),
        np.zeros(3, bool),
        np.full(3, 0.4),
        np.full(3, 0.6),
        np.arange(3),
        n_bootstrap=50,
    )
    assert out["snips"].value is None and out["snips"].ci95 is None
    assert out["snips"].text() == "undefined"
    assert out["snips"].to_dict()["value"] is None
    assert out["ips"].value == 0.0 and out["dr"].value is not None
    json.dumps({k: e.to_dict() for k, e in out.items()}, allow_nan=False)


def test_weight_diagnostics():
    """Calibrated propensities give a mean weight near 1; halving them doubles it."""
    x, arm, reward, propensity, policy, success, truth, patients = bandit(0)
    args = (reward, propensity, arm == policy, success[x, policy], success[x, arm], patients)
    good = ope_estimates(*args, n_bootstrap=20)["dr"]
    assert abs(good.mean_weight - 1.0) < 0.1
    assert 0 < good.effective_n < len(reward)
    halved = ope_estimates(reward, propensity / 2, *args[2:], n_bootstrap=20)["dr"]
    assert halved.mean_weight == pytest.approx(2 * good.mean_weight)
    assert halved.to_dict()["mean_weight"] == halved.mean_weight
