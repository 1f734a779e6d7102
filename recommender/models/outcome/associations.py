"""Therapy-to-therapy outcome associations: what an earlier outcome says about a candidate.

``W[t, j]`` is how much more often therapy ``t`` worked, than is usual for it, in decisions whose
patient had earlier *worked* on therapy ``j`` rather than *failed* it:

    W[t, j] = sum_i (r_i - rbar_t) h_ij / (sum_i |h_ij| + shrinkage)

over the training decisions ``i`` for therapy ``t`` (``r_i`` 1 when it worked, ``h_ij`` +1 / -1
for the earlier outcome of ``j``, ``rbar_t`` the therapy's success rate). A pair seen in few
decisions is shrunk toward 0. A candidate's *pair score* for a patient is
``sum_j W[t, j] h_j`` over their history. Unlike matrix factors, the associations are fitted to
predict a later outcome from earlier ones, which is the question asked at a decision.

The scores of the training decisions are cross-fitted (associations from the other half of the
patients), so a decision's own outcome never feeds its own feature.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def fit_associations(
    history: sp.csr_matrix,
    treatment: np.ndarray,
    success: np.ndarray,
    n_treatments: int,
    shrinkage: float,
) -> sp.csr_matrix:
    """W CSR float32 (n_t, n_t) from decisions' history rows (signed), therapy and success."""
    signs = _signs(history)
    rate = np.bincount(treatment, weights=success, minlength=n_treatments) / np.maximum(
        np.bincount(treatment, minlength=n_treatments), 1
    )
    residual = success.astype(np.float64) - rate[treatment]
    chosen = sp.csr_matrix(
        (np.ones(len(treatment)), (treatment, np.arange(len(treatment)))),
        shape=(n_treatments, len(treatment)),
    )
    numerator = (chosen @ sp.diags(residual) @ signs).tocsr()
    inverse = (chosen @ abs(signs)).tocsr()  # the numerator's entries are within its pattern
    inverse.data = 1.0 / (inverse.data + shrinkage)
    return numerator.multiply(inverse).tocsr().astype(np.float32)


def pair_scores(
    W: sp.csr_matrix, history: sp.csr_matrix, rows: np.ndarray, treatments: np.ndarray
) -> np.ndarray:
    """Float64 (m,): ``sum_j W[treatments[i], j] h_j`` over history row ``rows[i]``."""
    if not len(rows):
        return np.zeros(0)
    signs = _signs(history)[rows]
    return np.asarray(W[treatments].multiply(signs).sum(axis=1)).ravel()


def crossfit_scores(
    history: sp.csr_matrix,
    treatment: np.ndarray,
    success: np.ndarray,
    patient: np.ndarray,
    n_treatments: int,
    shrinkage: float,
    seed: int | None,
) -> np.ndarray:
    """Pair scores of the training decisions themselves, each from the associations fitted on
    the other half of the patients."""
    rng = np.random.default_rng(seed)
    half = rng.random(int(patient.max()) + 1 if len(patient) else 1) < 0.5
    fold = half[patient]
    scores = np.zeros(len(treatment))
    for own in (True, False):
        train, score = np.flatnonzero(fold != own), np.flatnonzero(fold == own)
        W = fit_associations(
            history[train], treatment[train], success[train], n_treatments, shrinkage
        )
        scores[score] = pair_scores(W, history, score, treatment[score])
    return scores


def _signs(history: sp.csr_matrix) -> sp.csr_matrix:
    out = history.tocsr().astype(np.float64, copy=True)
    out.data = np.where(out.data > 0, 1.0, -1.0)
    return out
