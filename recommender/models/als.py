"""Alternating least squares on signed confidences (implicit's CPU ALS)."""

from __future__ import annotations

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares
from scipy.linalg import lapack

from ..data.patient import Query
from ..exceptions import ParameterError
from ..ranking.contributions import MIN_CONTRIBUTION
from ..utils import sparse_rows
from .factorization import FactorModel, StopTraining, SweepCallback, SweepMonitor
from .params import integer, optional_seed, real


class ALSRecommender(FactorModel):
    """Implicit-feedback ALS (Hu, Koren & Volinsky 2008) over the outcome confidence matrix.

    The matrix already holds confidences (:mod:`recommender.data.policies`), so implicit runs with
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
    early_stopping : int or None
        With a scoring ``fit(dataset, callback=...)``: stop after this many sweeps in a row
        without a validation gain above ``tol`` and keep the best sweep's factors
        (``iterations`` is then the most sweeps run). None trains ``iterations`` sweeps.
    tol : float
        Smallest validation gain that counts as an improvement.
    init_fraction : float or None
        Warm start: first fit ``init_iterations`` sweeps on the rows of this fraction of the
        patients (drawn with ``random_state``) and start the full sweeps from those treatment
        factors (patient factors at zero) instead of implicit's small random factors. The
        full sweeps then reach a given validation NDCG in fewer sweeps (benchmarks/README.md).
        None: implicit's random start.
    init_iterations : int
        Sweeps of the warm start.

    Attributes
    ----------
    user_factors_, item_factors_ : ndarray
        See :class:`~recommender.models.factorization.FactorModel`.
    n_iterations_ : int
        Sweeps run by the last ``fit`` (with early stopping: the sweep whose factors were kept
        is ``best_iteration_``, and ``validation_scores_`` lists the score after each sweep).
        Not saved in artifacts.
    """

    kind = "als"
    _constraints = {
        "factors": integer(1, 4096),
        "regularization": real(0),
        "iterations": integer(1, 10_000),
        "random_state": optional_seed(),
        "early_stopping": (
            lambda v: v is None or integer(1, 10_000)[0](v),
            "None or an int in the range [1, 10000]",
        ),
        "tol": real(0),
        "init_fraction": (
            lambda v: v is None or real(0, 1, low_open=True)[0](v),
            "None or a number in the range (0, 1]",
        ),
        "init_iterations": integer(1, 10_000),
    }

    def __init__(
        self,
        factors: int = 32,
        regularization: float = 0.1,
        iterations: int = 15,
        use_cg: bool = True,
        random_state: int | None = 0,
        early_stopping: int | None = None,
        tol: float = 1e-4,
        init_fraction: float | None = None,
        init_iterations: int = 5,
    ):
        self.factors = factors
        self.regularization = regularization
        self.iterations = iterations
        self.use_cg = use_cg
        self.random_state = random_state
        self.early_stopping = early_stopping
        self.tol = tol
        self.init_fraction = init_fraction
        self.init_iterations = init_iterations

    def fit(
        self, dataset, show_progress: bool = False, callback: SweepCallback | None = None
    ) -> ALSRecommender:
        """Learn from ``dataset``; returns self.

        ``callback(iteration, elapsed, loss)`` is called after every sweep, as implicit calls
        its own, with this model's factors set to the sweep's; with ``early_stopping`` it must
        return the sweep's validation score (higher is better), e.g.
        ``Validation(held_out_rows).callback(model)`` from :mod:`recommender.evaluation`.
        """
        self._validate_params()
        if self.early_stopping is not None and callback is None:
            raise ParameterError(
                "early_stopping needs validation rows: call fit(dataset, "
                "callback=Validation(held_out_rows).callback(model)) or set "
                "early_stopping=None"
            )
        self._callback = callback
        try:
            super().fit(dataset, show_progress=show_progress)
            return self
        finally:
            del self._callback

    def _implicit_model(self, iterations: int | None = None) -> AlternatingLeastSquares:
        """A fresh CPU implicit model with these hyperparameters (never the GPU factory)."""
        return AlternatingLeastSquares(
            factors=self.factors,
            regularization=self.regularization,
            alpha=1.0,
            iterations=self.iterations if iterations is None else iterations,
            use_cg=self.use_cg,
            random_state=self.random_state,
        )

    def _fit(self, dataset, show_progress: bool) -> None:
        model = self._implicit_model()
        self._forget_solver()
        if self.init_fraction is not None:
            model.item_factors = self._warm_start(dataset.matrix)
            model.user_factors = np.zeros((dataset.matrix.shape[0], self.factors), np.float32)
        callback = self.__dict__.get("_callback")
        if callback is None:
            model.fit(dataset.matrix, show_progress=show_progress)
            self.user_factors_, self.item_factors_ = model.user_factors, model.item_factors
            self.n_iterations_ = self.iterations
            return
        monitor = SweepMonitor(self, dataset, model, callback, self.early_stopping, self.tol)
        try:
            model.fit(dataset.matrix, show_progress=show_progress, callback=monitor)
        except StopTraining:
            pass
        finally:
            self.__dict__.pop("dataset_", None)  # set again by fit() only when fitting succeeded
        self.user_factors_, self.item_factors_ = monitor.kept()
        self.n_iterations_ = len(monitor.scores)
        if self.early_stopping is not None:
            self.best_iteration_ = monitor.best_iteration
            self.validation_scores_ = monitor.scores

    def _warm_start(self, matrix) -> np.ndarray:
        """Treatment (column) factors fitted on a random ``init_fraction`` of the patient rows."""
        n = matrix.shape[0]
        rng = np.random.default_rng(self.random_state)
        rows = np.sort(
            rng.choice(n, size=max(1, int(round(self.init_fraction * n))), replace=False)
        )
        model = self._implicit_model(iterations=self.init_iterations)
        model.fit(matrix[rows], show_progress=False)
        return model.item_factors

    def _solver(self) -> AlternatingLeastSquares:
        """An implicit model holding the learned item factors, for fold-in and explanations."""
        if "_solver_cache" not in self.__dict__:
            model = self._implicit_model()
            # a private writable copy: implicit's solver refuses read-only (memory-mapped) buffers
            model.item_factors = np.array(self.item_factors_, dtype=np.float32, order="C")
            model.user_factors = np.zeros((1, self.item_factors_.shape[1]), np.float32)
            self._solver_cache = model
            # A = YtY + reg I: the part of every patient's weighted Gram matrix they all share,
            # and Y A^-1 (n_items, d), which turns each explanation into a tiny solve
            base = model.YtY + model.regularization * np.eye(self.item_factors_.shape[1])
            self._gram_base = base
            self._shrunk_factors = np.ascontiguousarray(
                np.linalg.solve(base, model.item_factors.T.astype(np.float64)).T
            )
        return self._solver_cache

    def _forget_solver(self) -> None:
        """Drop what :meth:`_solver` derived from the factors (they are being replaced)."""
        for name in ("_solver_cache", "_gram_base", "_shrunk_factors"):
            self.__dict__.pop(name, None)

    def warm_up(self) -> None:
        """(Re)derive the explanation and fold-in state from the current item factors, then
        what every model warms (:meth:`Recommender.warm_up`)."""
        self._forget_solver()
        self._solver()
        super().warm_up()

    def _fold_in(self, rows) -> np.ndarray:
        if rows.shape[0] == 0:
            return np.zeros((0, self.item_factors_.shape[1]), np.float32)
        return self._solver().recalculate_user(np.arange(rows.shape[0]), rows)

    def _contribution_matrix(self, query: Query, treatments) -> tuple[np.ndarray, np.ndarray]:
        """Columns (m,) of the patient's positive entries, in decreasing order, and their
        contributions (m, len(treatments)) to each treatment's score.

        The arithmetic of ``implicit.cpu.als.AlternatingLeastSquares.explain`` (section 5 of
        Hu, Koren and Volinsky): entry j contributes ``c_j y_j W_u y_t`` with
        ``W_u = (A + Y_u^T D Y_u)^-1``, ``A = YtY + reg I``, ``D = diag(|c| - 1)`` over the
        patient's entries ``Y_u``. Rather than factorising the d x d matrix per patient, the
        identity ``Y_u W_u = (I + G D)^-1 Y_u A^-1`` with ``G = Y_u A^-1 Y_u^T`` leaves a system
        of the patient's few entries, since ``Y A^-1`` is computed once per model.
        """
        solver = self._solver()
        columns, confidence = sparse_rows.row_arrays(query.rows, 0)
        if solver.alpha != 1.0:
            confidence = confidence * solver.alpha
        positive = confidence >= 0
        if not positive.any() or not len(treatments):
            return columns[:0], np.zeros((0, len(treatments)))
        factors = solver.item_factors
        entries = factors[columns]  # (n, d) rows of Y
        weights = np.abs(confidence) - 1  # D
        shrunk = self._shrunk_factors[columns]  # (n, d) rows of Y A^-1
        system = (shrunk @ entries.T) * weights  # G D, (n, n)
        system.flat[:: len(columns) + 1] += 1.0
        targets = factors[treatments].T  # (d, k)
        _, _, solved, info = lapack.dgesv(system, shrunk @ targets)
        if info != 0:  # singular in floating point: the d x d route
            solved = entries @ np.linalg.solve(
                self._gram_base + (entries * weights[:, None]).T @ entries, targets
            )
        # rows in decreasing column order, so a stable sort leaves ties with the higher column first
        scores = (solved * confidence[:, None])[positive][::-1]
        return columns[positive][::-1], scores

    def contributions(self, query: Query, treatments: np.ndarray) -> list[list[tuple[int, float]]]:
        """implicit's exact decomposition of the (folded-in) score over the positive entries,
        for all ``treatments`` at once (see :meth:`_contribution_matrix`).

        Per treatment: (column, contribution) for each positive entry, largest first (ties: the
        higher column first, as implicit's heap gives them).
        """
        columns, scores = self._contribution_matrix(query, np.asarray(treatments, np.int64))
        order = np.argsort(-scores, axis=0, kind="stable")
        return _pairs(columns, scores, order)

    def strongest_contributions(
        self, query: Query, treatments: np.ndarray, limit: int
    ) -> list[list[tuple[int, float]]]:
        """See :meth:`Recommender.strongest_contributions`; ordered by numpy, not per pair."""
        columns, scores = self._contribution_matrix(query, np.asarray(treatments, np.int64))
        # magnitude first, then value, then the higher column (the rows' order; lexsort is stable)
        order = np.lexsort((-scores, -np.abs(scores)), axis=0)[:limit]
        return _pairs(columns, scores, order, minimum=MIN_CONTRIBUTION)

    def _load_state(self, arrays) -> None:
        super()._load_state(arrays)
        self._forget_solver()


def _pairs(
    columns: np.ndarray, scores: np.ndarray, order: np.ndarray, minimum: float | None = None
) -> list[list[tuple[int, float]]]:
    """Per treatment (column of ``scores``), (column, contribution) in ``order``'s row order;
    with ``minimum``, only the pairs of at least that magnitude (``order`` then ranks by
    magnitude, so they are a prefix of each treatment's pairs)."""
    ranked = scores[order, np.arange(scores.shape[1])]  # (len(order), len(treatments))
    shown = (
        [len(order)] * scores.shape[1]
        if minimum is None
        else (np.abs(ranked) >= minimum).sum(axis=0).tolist()
    )
    return [
        list(zip(c[:n], v[:n]))
        for c, v, n in zip(columns[order].T.tolist(), ranked.T.tolist(), shown)
    ]
