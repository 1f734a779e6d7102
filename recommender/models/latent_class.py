"""Latent-class outcome model: patients belong to hidden response phenotypes.

A mixture model over outcomes (Hofmann's aspect model applied to treatment response): each
patient has a hidden class ``z`` among ``n_classes`` with prior ``pi_z``; given the class, each
treatment's outcome falls in one of four buckets, *responded* (outcome above 0.75), *partial*
(above the policy's threshold), *failed* or *harmed*, with probabilities ``theta[z, t, :]``.
EM fits ``pi`` and ``theta`` from the outcomes on record (the latest per patient and
treatment); a patient's posterior over classes follows from their own outcomes, and the
expected outcome of a treatment on the [-1, 1] scale is::

    E[outcome of t | history] = sum_z P(z | history) * sum_b theta[z, t, b] * value_b

where ``value_b`` is the mean outcome recorded in bucket ``b``. EM finds a local optimum that
depends on its random start, so the model averages ``restarts`` independent runs (bagging over
starts), which reduces the variance of the ranking.

Unlike the implicit-feedback models it learns only from outcomes, so a therapy's exposure (how
often it is prescribed) does not inflate its score, and its numbers are probabilities a
clinician can read. Side-information columns are not used.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp

from ..data.patient import Query
from .base import Recommender
from .params import integer, optional_seed, real

RESPONDED, PARTIAL, FAILED, HARMED = range(4)
N_BUCKETS = 4
FULL_RESPONSE = 0.75  # outcomes above it are a full response
OBJECTIVES = ("expected_outcome", "best")


class LatentClassRecommender(Recommender):
    """Averaged mixtures of response phenotypes fitted by EM (see the module docstring).

    Learned state, with ``m = restarts`` runs: ``posterior_`` float32 (m, n_p, n_classes),
    ``prior_`` float64 (m, n_classes), ``theta_`` float64 (m, n_classes, n_t, 4) and
    ``bucket_values_`` float64 (4,).

    Parameters
    ----------
    n_classes : int
        Number of hidden phenotypes.
    iterations : int
        EM iterations per run.
    restarts : int
        Independent EM runs from random starts; their scores are averaged.
    smoothing : float
        Dirichlet pseudo-counts pulling each ``theta[z, t]`` towards the treatment's overall
        outcome distribution.
    objective : {"expected_outcome", "best"}
        Score a treatment by its expected outcome for the patient (``expected_outcome``),
        or by the probability that it is the best candidate for the patient's class (``best``,
        the rule that maximises the chance of ranking the patient's truly best therapy first).
    random_state : int or None
    """

    kind = "latent-class"
    _constraints = {
        "n_classes": integer(1, 256),
        "iterations": integer(1, 10_000),
        "restarts": integer(1, 100),
        "smoothing": real(0, low_open=True),
        "objective": (lambda v: v in OBJECTIVES, f"one of {OBJECTIVES}"),
        "random_state": optional_seed(),
    }

    def __init__(
        self,
        n_classes: int = 3,
        iterations: int = 60,
        restarts: int = 8,
        smoothing: float = 2.0,
        objective: str = "expected_outcome",
        random_state: int | None = 0,
    ):
        self.n_classes = n_classes
        self.iterations = iterations
        self.restarts = restarts
        self.smoothing = smoothing
        self.objective = objective
        self.random_state = random_state

    # --- fitting ------------------------------------------------------------------------------

    def _fit(self, dataset, show_progress: bool) -> None:
        observed = _Observations.of(dataset, dataset.history, dataset.harmful)
        self.bucket_values_ = _bucket_values(observed, dataset.history.data)
        base = _base_rates(observed, dataset.n_treatments)
        rng = np.random.default_rng(self.random_state)
        runs = [self._em(observed, base, rng) for _ in range(self.restarts)]
        self.prior_ = np.stack([prior for prior, _, _ in runs])
        self.theta_ = np.stack([theta for _, theta, _ in runs])
        self.posterior_ = np.stack([posterior for _, _, posterior in runs]).astype(np.float32)

    def _em(self, observed: _Observations, base: np.ndarray, rng: np.random.Generator):
        """One EM run: (prior (Z,), theta (Z, n_t, 4), posterior (n_p, Z))."""
        noise = rng.dirichlet(np.full(N_BUCKETS, 5.0), size=(self.n_classes, len(base)))
        theta = 0.5 * base[None] + 0.5 * noise
        prior = np.full(self.n_classes, 1.0 / self.n_classes)
        for _ in range(self.iterations):
            posterior = _e_step(prior, theta, observed)
            prior = posterior.mean(axis=0) + 1e-12
            prior /= prior.sum()
            theta = self._m_step(posterior, observed, base)
        return prior, theta, _e_step(prior, theta, observed)

    def _m_step(
        self, posterior: np.ndarray, observed: _Observations, base: np.ndarray
    ) -> np.ndarray:
        counts = np.zeros((self.n_classes,) + base.shape)
        weights = posterior[observed.rows]  # (nnz, Z)
        for z in range(self.n_classes):
            np.add.at(counts[z], (observed.cols, observed.buckets), weights[:, z])
        return (counts + self.smoothing * base[None]) / (
            counts.sum(axis=2, keepdims=True) + self.smoothing
        )

    # --- scoring ------------------------------------------------------------------------------

    def class_posterior(self, query: Query) -> np.ndarray:
        """P(class | history) per run, shape (restarts, len(query), n_classes)."""
        if query.patients is not None:
            return np.asarray(self.posterior_[:, query.patients], dtype=np.float64)
        observed = _Observations.of(self.dataset_, query.history, query.harmful)
        return np.stack(
            [_e_step(prior, theta, observed) for prior, theta in zip(self.prior_, self.theta_)]
        )

    def _expected_outcome(self) -> np.ndarray:
        """Expected outcome per run, class and treatment, shape (restarts, n_classes, n_t)."""
        return np.asarray(self.theta_) @ self.bucket_values_

    def _score(self, query: Query) -> np.ndarray:
        posterior, expected = self.class_posterior(query), self._expected_outcome()
        mean_outcome = np.einsum("mnz,mzt->nt", posterior, expected) / len(expected)
        if self.objective == "expected_outcome":
            return mean_outcome
        best = sum(
            self._best_probability(p, e, query.conditions) for p, e in zip(posterior, expected)
        )
        return best / len(expected) + 1e-3 * mean_outcome

    def _best_probability(
        self, posterior: np.ndarray, expected: np.ndarray, conditions: np.ndarray
    ) -> np.ndarray:
        """P(t is the best candidate for the patient's class) for one run, shape (n, n_t).

        The candidates are the condition's treatments when the query names one, else all.
        """
        scores = np.zeros((len(posterior), expected.shape[1]))
        for condition in np.unique(conditions):
            rows = np.flatnonzero(conditions == condition)
            allowed = np.zeros(expected.shape[1], bool)
            allowed[self.dataset_.candidates(condition) if condition >= 0 else slice(None)] = True
            best = np.where(allowed[None], expected, -np.inf).argmax(axis=1)  # (Z,)
            for z, t in enumerate(best):
                scores[rows, t] += posterior[rows, z]
        return scores

    def outcome_probabilities(self, query: Query) -> np.ndarray:
        """P(bucket | history) per treatment, averaged over runs, shape (len(query), n_t, 4):
        responded, partial, failed, harmed."""
        posterior = self.class_posterior(query)
        return np.einsum("mnz,mztb->ntb", posterior, np.asarray(self.theta_)) / len(posterior)

    def _treatment_vectors(self):
        """Expected outcome of each treatment in each run's phenotypes, shape (n_t, m * n_classes)."""
        expected = self._expected_outcome()
        return expected.reshape(-1, expected.shape[-1]).T

    # --- persistence --------------------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        return {
            "posterior": self.posterior_,
            "prior": self.prior_,
            "theta": self.theta_,
            "bucket_values": self.bucket_values_,
        }

    def state_shapes(self, arrays) -> dict[str, tuple]:
        runs, classes = self.restarts, self.n_classes
        return {
            "posterior": (runs, self.dataset_.n_patients, classes),
            "prior": (runs, classes),
            "theta": (runs, classes, self.dataset_.n_treatments, "buckets"),
            "bucket_values": ("buckets",),
        }

    def _load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.posterior_, self.prior_ = arrays["posterior"], arrays["prior"]
        self.theta_, self.bucket_values_ = arrays["theta"], arrays["bucket_values"]


class _Observations:
    """Observed (patient row, treatment, bucket) triples, one per tried treatment."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, buckets: np.ndarray, n_rows: int):
        self.rows, self.cols, self.buckets, self.n_rows = rows, cols, buckets, n_rows

    @classmethod
    def of(cls, dataset, history: sp.csr_matrix, harmful: sp.csr_matrix) -> _Observations:
        """From a history CSR (n, n_t) of latest outcomes and a harm pattern of the same shape.

        A cell that ever harmed the patient is *harmed* whatever its latest outcome.
        """
        rows = np.repeat(np.arange(history.shape[0]), np.diff(history.indptr))
        outcomes = history.data
        bucket = np.where(
            outcomes > FULL_RESPONSE,
            RESPONDED,
            np.where(dataset.policy.worked(outcomes), PARTIAL, FAILED),
        )
        if harmful.nnz:
            flagged = np.asarray(harmful[rows, history.indices]).ravel().astype(bool)
            bucket = np.where(flagged, HARMED, bucket)
        return cls(
            rows, history.indices.astype(np.int64), bucket.astype(np.int64), history.shape[0]
        )


def _bucket_values(observed: _Observations, outcomes: np.ndarray) -> np.ndarray:
    """Mean recorded outcome per bucket (defaults for a bucket never seen)."""
    counts = np.bincount(observed.buckets, minlength=N_BUCKETS)
    sums = np.bincount(observed.buckets, weights=outcomes, minlength=N_BUCKETS)
    return np.where(counts > 0, sums / np.maximum(counts, 1), [1.0, 0.5, 0.0, -1.0])


def _base_rates(observed: _Observations, n_t: int) -> np.ndarray:
    """Each treatment's smoothed overall bucket distribution, shape (n_t, 4)."""
    counts = np.zeros((n_t, N_BUCKETS))
    np.add.at(counts, (observed.cols, observed.buckets), 1.0)
    return (counts + 1.0) / (counts.sum(axis=1, keepdims=True) + N_BUCKETS)


def _e_step(prior: np.ndarray, theta: np.ndarray, observed: _Observations) -> np.ndarray:
    """Posterior over classes per row, shape (n_rows, Z)."""
    per_entry = np.log(theta[:, observed.cols, observed.buckets]).T  # (nnz, Z)
    log_joint = np.tile(np.log(prior), (observed.n_rows, 1))
    for z in range(len(prior)):
        log_joint[:, z] += np.bincount(
            observed.rows, weights=per_entry[:, z], minlength=observed.n_rows
        )
    log_joint -= log_joint.max(axis=1, keepdims=True)
    posterior = np.exp(log_joint)
    return posterior / posterior.sum(axis=1, keepdims=True)
