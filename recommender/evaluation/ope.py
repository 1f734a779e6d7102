"""Off-policy evaluation: the success rate a policy would have had, from logged decisions.

Logged decisions ``i`` (a patient, the therapy ``a_i`` the clinician chose with propensity
``e_i = P(a_i | x_i)``, and the outcome ``r_i`` in {0, 1}) and a deterministic policy's choice
``pi_i`` give three estimates of the policy's value ``V = E[r(pi(x))]``:

- IPS, inverse propensity scoring: ``mean(w_i r_i)`` with ``w_i = 1[a_i = pi_i] / e_i``;
- SNIPS, self-normalised: ``sum(w_i r_i) / sum(w_i)`` (biased, much lower variance);
- DR, doubly robust: ``mean(q_i(pi_i) + w_i (r_i - q_i(a_i)))`` with an outcome model's
  predictions ``q``; unbiased when either the propensities or the outcome model are right.

Propensities below ``min_propensity`` are raised to it (weights clipped at its inverse), which
trades a little bias for bounded variance. Each estimate carries a 95% percentile interval from
a bootstrap over *patients* (a patient's decisions stay together, since they are not
independent).

Where the policy chooses a therapy clinicians almost never gave to patients like this one
(``unsupported``: its propensity below ``support``), the logged data say nothing about its
outcome; every estimator then leans on the outcome model (or on rare, huge weights), and on the
generator that showed as a bias of +0.02 that the bootstrap does not see. The interval is
therefore widened by what those decisions could contribute at worst (outcome 0 or 1 instead of
the model's prediction): ``[low - sum(q) / n, high + sum(1 - q) / n]`` over the unsupported
decisions, and their share is reported.

Two weight diagnostics come with every estimate: the mean importance weight (about 1 when the
propensities are calibrated; well above 1 means IPS overshoots and SNIPS or DR are the ones to
read) and the effective sample size of the weights.

A success rate lies in [0, 1], so every value and bound is clipped to it (IPS, unbounded, can
exceed 1 on a small sample). SNIPS is undefined when no logged decision agrees with the policy
(no weight to normalise by): its value and interval are then None ("undefined" in reports), never
NaN. Written in numpy: the usual OPE packages pin old numpy and scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ESTIMATORS = ("ips", "snips", "dr")


@dataclass(frozen=True)
class Estimate:
    """A policy value with its 95% interval.

    ``ci95`` is the bootstrap interval widened for unsupported decisions (the one to quote);
    ``sampling_ci95`` is the bootstrap alone, which assumes the outcome model is right where
    the logged data cannot check it.
    """

    #: None when the estimator is undefined (SNIPS with no logged decision matching the policy).
    value: float | None
    ci95: tuple[float, float] | None
    #: Share of decisions whose policy choice had a propensity below the support threshold.
    unsupported: float = 0.0
    sampling_ci95: tuple[float, float] | None = None
    #: Mean importance weight over all decisions: about 1 when the propensities are calibrated
    #: (far above 1: the logged choices were given too small a propensity, so IPS overshoots).
    mean_weight: float = 1.0
    #: Kish effective sample size of the weights, (sum w)^2 / sum w^2 (0 when none matches).
    effective_n: float = 0.0

    def to_dict(self) -> dict:
        sampling = self.sampling_ci95 or self.ci95
        return {
            "value": self.value,
            "ci95": None if self.ci95 is None else [self.ci95[0], self.ci95[1]],
            "sampling_ci95": None if sampling is None else [sampling[0], sampling[1]],
            "unsupported_share": self.unsupported,
            "mean_weight": self.mean_weight,
            "effective_n": self.effective_n,
        }

    def text(self) -> str:
        """``0.712 [0.650, 0.771]``, or ``undefined`` (for reports)."""
        if self.value is None or self.ci95 is None:
            return "undefined"
        return f"{self.value:.3f} [{self.ci95[0]:.3f}, {self.ci95[1]:.3f}]"


def ope_estimates(
    reward: np.ndarray,
    propensity: np.ndarray,
    matched: np.ndarray,
    q_policy: np.ndarray,
    q_logged: np.ndarray,
    patients: np.ndarray,
    *,
    min_propensity: float = 0.01,
    unsupported: np.ndarray | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Estimate]:
    """IPS, SNIPS and DR estimates of a deterministic policy's value, with intervals.

    Parameters
    ----------
    reward : ndarray of float, shape (n,)
        Logged outcome of each decision (1 success, 0 not).
    propensity : ndarray of float, shape (n,)
        P(logged therapy | patient) under the logging policy, in (0, 1].
    matched : ndarray of bool, shape (n,)
        Whether the policy chose the logged therapy.
    q_policy, q_logged : ndarray of float, shape (n,)
        The outcome model's P(success) of the policy's choice and of the logged therapy.
    patients : ndarray, shape (n,)
        Patient of each decision (the bootstrap resamples patients).
    min_propensity : float
        Propensities are clipped from below at this value.
    unsupported : ndarray of bool, shape (n,), optional
        Decisions where the policy's choice lacks support in the logged data (see the module
        docstring); the intervals are widened by their worst case.
    n_bootstrap : int
        Bootstrap replicates for the intervals.

    Returns
    -------
    dict
        ``{"ips": Estimate, "snips": Estimate, "dr": Estimate}``.
    """
    reward = np.asarray(reward, np.float64)
    n = len(reward)
    if n == 0:
        raise ValueError("no logged decision to evaluate the policy on")
    weight = np.asarray(matched, bool) / np.maximum(
        np.asarray(propensity, np.float64), min_propensity
    )
    dr_terms = np.asarray(q_policy, np.float64) + weight * (
        reward - np.asarray(q_logged, np.float64)
    )
    groups, owner = np.unique(np.asarray(patients), return_inverse=True)
    per_patient = np.stack(
        [
            np.bincount(owner, weights=weight * reward, minlength=len(groups)),
            np.bincount(owner, weights=weight, minlength=len(groups)),
            np.bincount(owner, weights=dr_terms, minlength=len(groups)),
            np.bincount(owner, minlength=len(groups)).astype(np.float64),
        ],
        axis=1,
    )
    point = _estimates(per_patient.sum(axis=0))
    rng = np.random.default_rng(seed)
    draws = np.empty((n_bootstrap, 3))
    for b in range(n_bootstrap):
        sample = rng.integers(0, len(groups), len(groups))
        draws[b] = _estimates(per_patient[sample].sum(axis=0))
    low, high = _percentiles(draws)
    share, down, up = 0.0, 0.0, 0.0
    if unsupported is not None and np.any(unsupported):
        mask = np.asarray(unsupported, bool)
        q = np.asarray(q_policy, np.float64)
        share = float(mask.mean())
        down, up = float(q[mask].sum() / n), float((1 - q[mask]).sum() / n)
    total = float(weight.sum())
    diagnostics = {
        "mean_weight": total / n,
        "effective_n": total**2 / float((weight**2).sum()) if total > 0 else 0.0,
    }
    out = {}
    for j, name in enumerate(ESTIMATORS):
        if np.isnan(point[j]) or np.isnan(low[j]):
            out[name] = Estimate(None, None, share, None, **diagnostics)
            continue
        out[name] = Estimate(
            _rate(point[j]),
            (_rate(low[j] - down), _rate(high[j] + up)),
            share,
            (_rate(low[j]), _rate(high[j])),
            **diagnostics,
        )
    return out


def _percentiles(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2.5% and 97.5% percentiles per column over the finite draws (NaN for a column with none:
    SNIPS when no replicate holds a decision matching the policy)."""
    low, high = np.full(draws.shape[1], np.nan), np.full(draws.shape[1], np.nan)
    for j in range(draws.shape[1]):
        finite = draws[np.isfinite(draws[:, j]), j]
        if len(finite):
            low[j], high[j] = np.percentile(finite, [2.5, 97.5])
    return low, high


def _rate(value: float) -> float:
    """A success rate's estimate or bound, clipped to [0, 1]."""
    return float(min(max(value, 0.0), 1.0))


def _estimates(totals: np.ndarray) -> np.ndarray:
    """(IPS, SNIPS, DR) from the sums (w r, w, dr term, decisions)."""
    wr, w, dr, n = totals
    return np.array([wr / n, wr / w if w > 0 else np.nan, dr / n])
