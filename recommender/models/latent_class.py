"""Latent-class outcome model: patients belong to hidden response phenotypes.

A mixture model over outcomes (Hofmann's aspect model applied to treatment response): each
patient has a hidden class ``z`` among ``n_classes`` with prior ``pi_z``; given the class, each
treatment's outcome falls in one of four buckets, *responded* (outcome above 0.75), *partial*
(above the policy's threshold), *failed* or *harmed*, with probabilities ``theta[z, t, :]``. EM fits ``pi`` and ``theta`` from the outcomes on record (the
latest per patient and treatment); a patient's posterior over classes follows from their own
outcomes, and the score of a treatment is its expected outcome on the [-1, 1] scale::

    E[outcome of t | history] = sum_z P(z | history) * sum_b theta[z, t, b] * value_b

where ``value_b`` is the mean outcome recorded in bucket ``b``.

Unlike the implicit-feedback models it learns only from outcomes, so a therapy's exposure
(how often it is prescribed) does not inflate its score, and the score is a calibrated
probability a clinician can read. Side-information columns are not used.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import scipy.sparse as sp

from .base import Query, Recommender, integer, optional_seed, real

RESPONDED, PARTIAL, FAILED, HARMED = range(4)
N_BUCKETS = 4
FULL_RESPONSE = 0.75  # outcomes above it are a full response


class LatentClassRecommender(Recommender):
    """Mixture of response phenotypes fitted by EM (see the module docstring).

    Learned state: ``posterior_`` float32 (n_p, n_classes), ``prior_`` float64 (n_classes,),
    ``theta_`` float64 (n_classes, n_t, 4) and ``bucket_values_`` float64 (4,).

    Parameters
    ----------
    n_classes : int
        Number of hidden phenotypes.
    iterations : int
        EM iterations per restart.
    restarts : int
        Independent random starts; the one with the highest log-likelihood is kept.
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
    _constraints = {"n_classes": integer(1, 256), "iterations": integer(1, 10_000),
                    "restarts": integer(1, 100), "smoothing": real(0, low_open=True),
                    "objective": (lambda v: v in ("expected_outcome", "best"),
                                  "'expected_outcome' or 'best'"),
                    "random_state": optional_seed()}

    def __init__(self, n_classes: int = 4, iterations: int = 60, restarts: int = 3,
                 smoothing: float = 2.0, objective: str = "expected_outcome",
                 random_state: int | None = 0):
        self.n_classes = n_classes
        self.iterations = iterations
        self.restarts = restarts
        self.smoothing = smoothing
        self.objective = objective
        self.random_state = random_state

    # --- data ---------------------------------------------------------------------------------

    @staticmethod
    def _buckets(dataset, history: sp.csr_matrix, harmful: sp.csr_matrix) -> sp.csr_matrix:
        """CSR (n, n_t) int8 with the same pattern as ``history``, holding bucket + 1.

        The +1 keeps "worked" (bucket 0) from being an implicit zero. A cell that ever harmed
        the patient is *harmed* whatever its latest outcome.
        """
        buckets = history.copy()
        bucket = np.where(history.data > FULL_RESPONSE, RESPONDED,
                          np.where(dataset.policy.worked(history.data), PARTIAL, FAILED))
        if harmful.nnz:
            rows = np.repeat(np.arange(history.shape[0]), np.diff(history.indptr))
            flagged = np.asarray(harmful[rows, history.indices]).ravel()
            bucket = np.where(flagged, HARMED, bucket)
        buckets.data = (bucket + 1).astype(np.int8)
        return buckets

    # --- EM -----------------------------------------------------------------------------------

    def _fit(self, dataset, show_progress: bool) -> None:
        buckets = self._buckets(dataset, dataset.history, dataset.harmful)
        rows = np.repeat(np.arange(buckets.shape[0]), np.diff(buckets.indptr))
        cols, obs = buckets.indices, buckets.data.astype(np.int64) - 1
        base = self._base_rates(cols, obs, dataset.n_treatments)
        sums = np.bincount(obs, weights=dataset.history.data, minlength=N_BUCKETS)
        self.bucket_values_ = np.where(np.bincount(obs, minlength=N_BUCKETS) > 0, sums / np.maximum(
            np.bincount(obs, minlength=N_BUCKETS), 1), [1.0, 0.5, 0.0, -1.0])
        rng = np.random.default_rng(self.random_state)
        best = None
        for _ in range(self.restarts):
            prior, theta = self._initial(rng, base)
            for _ in range(self.iterations):
                posterior, loglik = self._e_step(prior, theta, rows, cols, obs, buckets.shape[0])
                prior, theta = self._m_step(posterior, rows, cols, obs, base)
            if best is None or loglik > best[0]:
                best = (loglik, prior, theta, posterior)
        _, self.prior_, self.theta_, posterior = best
        self.posterior_ = posterior.astype(np.float32)

    @staticmethod
    def _base_rates(cols, obs, n_t) -> np.ndarray:
        counts = np.zeros((n_t, N_BUCKETS))
        np.add.at(counts, (cols, obs), 1.0)
        return (counts + 1.0) / (counts.sum(axis=1, keepdims=True) + N_BUCKETS)

    def _initial(self, rng, base):
        noise = rng.dirichlet(np.full(N_BUCKETS, 5.0), size=(self.n_classes,) + base.shape[:1])
        theta = 0.5 * base[None] + 0.5 * noise
        return np.full(self.n_classes, 1.0 / self.n_classes), theta

    def _log_likelihoods(self, theta, rows, cols, obs, n_rows) -> np.ndarray:
        """Sum over each row's observations of log theta[z, t, o], shape (n_rows, n_classes)."""
        per_entry = np.log(theta[:, cols, obs]).T  # (nnz, Z)
        out = np.zeros((n_rows, self.n_classes))
        for z in range(self.n_classes):
            out[:, z] = np.bincount(rows, weights=per_entry[:, z], minlength=n_rows)
        return out

    def _e_step(self, prior, theta, rows, cols, obs, n_rows):
        log_joint = np.log(prior)[None] + self._log_likelihoods(theta, rows, cols, obs, n_rows)
        top = log_joint.max(axis=1, keepdims=True)
        posterior = np.exp(log_joint - top)
        total = posterior.sum(axis=1, keepdims=True)
        return posterior / total, float((np.log(total) + top).sum())

    def _m_step(self, posterior, rows, cols, obs, base):
        prior = posterior.mean(axis=0) + 1e-12
        counts = np.zeros((self.n_classes,) + base.shape)
        weights = posterior[rows]  # (nnz, Z)
        for z in range(self.n_classes):
            np.add.at(counts[z], (cols, obs), weights[:, z])
        theta = (counts + self.smoothing * base[None]) / (
            counts.sum(axis=2, keepdims=True) + self.smoothing)
        return prior / prior.sum(), theta

    # --- scoring ------------------------------------------------------------------------------

    def class_posterior(self, query: Query) -> np.ndarray:
        """P(class | history), shape (len(query), n_classes)."""
        if query.patients is not None:
            return np.asarray(self.posterior_[query.patients], dtype=np.float64)
        buckets = self._buckets(self.dataset_, query.history, query.harmful)
        rows = np.repeat(np.arange(buckets.shape[0]), np.diff(buckets.indptr))
        posterior, _ = self._e_step(self.prior_, self.theta_, rows, buckets.indices,
                                    buckets.data.astype(np.int64) - 1, buckets.shape[0])
        return posterior

    def _score(self, query: Query) -> np.ndarray:
        posterior = self.class_posterior(query)
        expected = posterior @ self._expected_outcome()
        if self.objective == "expected_outcome":
            return expected
        return self._best_probability(posterior, query.conditions) + 1e-3 * expected

    def _expected_outcome(self) -> np.ndarray:
        """Expected outcome per class and treatment, shape (n_classes, n_t)."""
        return self.theta_ @ self.bucket_values_

    def _best_probability(self, posterior: np.ndarray, conditions: np.ndarray) -> np.ndarray:
        """P(t is the best candidate for the patient's class), shape (n, n_t).

        The candidates are the condition's treatments when the query names one, else all.
        """
        works = self._expected_outcome()
        scores = np.zeros((len(posterior), works.shape[1]))
        for condition in np.unique(conditions):
            rows = np.flatnonzero(conditions == condition)
            allowed = np.zeros(works.shape[1], bool)
            allowed[self.dataset_.candidates(condition) if condition >= 0 else slice(None)] = True
            best = np.where(allowed[None], works, -np.inf).argmax(axis=1)  # (Z,)
            for z, t in enumerate(best):
                scores[rows, t] += posterior[rows, z]
        return scores

    def outcome_probabilities(self, query: Query) -> np.ndarray:
        """P(bucket | history) per treatment, shape (len(query), n_t, 4): responded, partial,
        failed, harmed."""
        return np.einsum("nz,ztb->ntb", self.class_posterior(query), self.theta_)

    def _treatment_vectors(self):
        """Expected outcome of each treatment in each phenotype, shape (n_t, n_classes)."""
        return self._expected_outcome().T

    def _state(self) -> dict[str, np.ndarray]:
        return {"posterior": self.posterior_, "prior": self.prior_, "theta": self.theta_,
                "bucket_values": self.bucket_values_}

    def _load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.posterior_, self.prior_, self.theta_ = arrays["posterior"], arrays["prior"], arrays["theta"]
        self.bucket_values_ = arrays["bucket_values"]
