"""Logistic matrix factorisation (implicit's CPU LMF) on what worked."""

from __future__ import annotations

from implicit.cpu.lmf import LogisticMatrixFactorization

from .base import positive_part
from .factorization import FactorModel
from .params import integer, optional_seed, real


class LMFRecommender(FactorModel):
    """LMF (Johnson 2014): models the probability that a treatment works for a patient.

    Trained on the positive part of the matrix, with ``neg_prop`` sampled negatives per positive.

    Parameters
    ----------
    factors : int
    learning_rate : float
    regularization : float
    iterations : int
    neg_prop : int
    num_threads : int
        Threads of implicit's stochastic updates. The default 1 makes a seeded fit exactly
        reproducible; more threads run lock-free ("Hogwild") updates whose order, and so the
        result, varies from run to run. 0 uses every core.
    random_state : int or None
    """

    kind = "lmf"
    _constraints = {
        "factors": integer(1, 4096),
        "learning_rate": real(0, low_open=True),
        "regularization": real(0),
        "iterations": integer(1, 100_000),
        "neg_prop": integer(1, 1000),
        "num_threads": integer(0, 1024),
        "random_state": optional_seed(),
    }
    # user rows end in (1, user bias); item rows end in (item bias, 1)
    _bias_layout = ((-2, -1), ())

    def __init__(
        self,
        factors: int = 32,
        learning_rate: float = 1.0,
        regularization: float = 0.6,
        iterations: int = 30,
        neg_prop: int = 30,
        num_threads: int = 1,
        random_state: int | None = 0,
    ):
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.neg_prop = neg_prop
        self.num_threads = num_threads
        self.random_state = random_state

    def _fit(self, dataset, show_progress: bool) -> None:
        model = LogisticMatrixFactorization(
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=self.iterations,
            neg_prop=self.neg_prop,
            random_state=self.random_state,
        )
        model.fit(positive_part(dataset.matrix), show_progress=show_progress)
        self.user_factors_, self.item_factors_ = model.user_factors, model.item_factors
