"""Alternating least squares on signed confidences (implicit's CPU ALS)."""
from __future__ import annotations

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares

from .base import Query, integer, optional_seed, real
from .factorization import FactorModel


class ALSRecommender(FactorModel):
    """Implicit-feedback ALS (Hu, Koren & Volinsky 2008) over the outcome confidence matrix.

    The matrix already holds confidences (:mod:`recommender.confidence`), so implicit runs with
    its own ``alpha = 1``. A patient outside the training data gets the exact least-squares
    factors for their history row (implicit's ``recalculate_user``).

    Parameters
    ----------
    factors : int
        Latent dimensions.
    regularization : float
        L2 penalty on the factors (implicit's convention: not scaled by the number of entries).
    iterations : int
        ALS sweeps.
    use_cg : bool
        Conjugate-gradient solver (faster) instead of Cholesky.
    random_state : int or None
        Seed of the initial factors.
    """

    kind = "als"
    _constraints = {"factors": integer(1, 4096), "regularization": real(0),
                    "iterations": integer(1, 10_000), "random_state": optional_seed()}

    def __init__(self, factors: int = 32, regularization: float = 0.1, iterations: int = 15,
                 use_cg: bool = True, random_state: int | None = 0):
        self.factors = factors
        self.regularization = regularization
        self.iterations = iterations
        self.use_cg = use_cg
        self.random_state = random_state

    def _implicit_model(self, iterations: int | None = None) -> AlternatingLeastSquares:
        """A fresh CPU implicit model with these hyperparameters (never the GPU factory)."""
        return AlternatingLeastSquares(
            factors=self.factors, regularization=self.regularization, alpha=1.0,
            iterations=self.iterations if iterations is None else iterations,
            use_cg=self.use_cg, random_state=self.random_state)

    def _fit(self, dataset, show_progress: bool) -> None:
        model = self._implicit_model()
        model.fit(dataset.matrix, show_progress=show_progress)
        self.user_factors_, self.item_factors_ = model.user_factors, model.item_factors

    def _solver(self) -> AlternatingLeastSquares:
        """An implicit model holding the learned item factors, for fold-in and explanations."""
        if "_solver_cache" not in self.__dict__:
            model = self._implicit_model()
            model.item_factors = np.ascontiguousarray(self.item_factors_, dtype=np.float32)
            model.user_factors = np.zeros((1, self.item_factors_.shape[1]), np.float32)
            self._solver_cache = model
        return self._solver_cache

    def _fold_in(self, rows) -> np.ndarray:
        if rows.shape[0] == 0:
            return np.zeros((0, self.item_factors_.shape[1]), np.float32)
        return self._solver().recalculate_user(np.arange(rows.shape[0]), rows)

    def contributions(self, query: Query, treatments: np.ndarray) -> list[list[tuple[int, float]]]:
        """implicit's exact decomposition of the (folded-in) score over the positive entries."""
        solver, weights, result = self._solver(), None, []
        for treatment in treatments:
            _, pairs, weights = solver.explain(0, query.rows, int(treatment), user_weights=weights,
                                               N=query.rows.nnz or 1)
            result.append([(int(column), float(value)) for column, value in pairs])
        return result

    def _load_state(self, arrays) -> None:
        super()._load_state(arrays)
        self.__dict__.pop("_solver_cache", None)
