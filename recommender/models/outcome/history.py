"""The patient's outcome history as collaborative-filtering factors (implicit's ALS).

ALS is fitted on the signed outcome confidences of the treatment columns only (what worked and
what failed, :mod:`recommender.data.policies`); covariates go to the learner directly. A
history row (the outcomes a patient had before a decision) becomes factors ``u`` by the exact
least-squares fold-in ALS itself uses for a user (implicit's ``recalculate_user``), so a patient
at a past decision, a known patient now and a new patient are encoded the same way. Patients
with similar histories get similar ``u``; ``u . y_t`` is the collaborative score of therapy t.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from ...data.dataset import Dataset
from ...utils.threads import single_threaded_blas


def fit_item_factors(
    dataset: Dataset, factors: int, regularization: float, iterations: int, random_state: int | None
) -> np.ndarray:
    """Treatment factors float32 (n_t, factors) of ALS on the outcome columns of the matrix."""
    outcomes = dataset.matrix[:, : dataset.n_treatments].tocsr()
    model = _solver(factors, regularization, iterations, random_state)
    with single_threaded_blas():
        model.fit(outcomes, show_progress=False)
    return np.ascontiguousarray(model.item_factors, dtype=np.float32)


def fold_in(item_factors: np.ndarray, rows: sp.csr_matrix, regularization: float) -> np.ndarray:
    """Factors float32 (n, d) for history rows CSR (n, n_t) of signed confidences (an empty row
    gives zeros)."""
    if rows.shape[0] == 0:
        return np.zeros((0, item_factors.shape[1]), np.float32)
    model = _solver(item_factors.shape[1], regularization, 1, 0)
    model.item_factors = np.array(item_factors, dtype=np.float32, order="C")  # writable copy
    model.user_factors = np.zeros((1, item_factors.shape[1]), np.float32)
    with single_threaded_blas():
        return np.asarray(
            model.recalculate_user(np.arange(rows.shape[0]), rows.tocsr().astype(np.float32)),
            np.float32,
        )


def _solver(factors, regularization, iterations, random_state) -> AlternatingLeastSquares:
    """A fresh CPU implicit ALS with alpha 1 (the matrix holds confidences already)."""
    return AlternatingLeastSquares(
        factors=factors,
        regularization=regularization,
        alpha=1.0,
        iterations=iterations,
        use_cg=True,
        random_state=random_state,
    )
