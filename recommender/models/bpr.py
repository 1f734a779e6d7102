"""Bayesian personalised ranking (implicit's CPU BPR) on what worked."""

from __future__ import annotations

from implicit.cpu.bpr import BayesianPersonalizedRanking

from .base import positive_part
from .factorization import FactorModel
from .params import integer, optional_seed, real


class BPRRecommender(FactorModel):
    """BPR (Rendle et al. 2009): learns to rank treatments that worked above untried ones.

    Trained on the positive part of the matrix (outcomes that worked and side columns); failures
    are not negatives it can use, so they only act through the exclusion rules.

    Parameters
    ----------
    factors : int
    learning_rate : float
    regularization : float
    iterations : int
    num_threads : int
        Threads of implicit's stochastic updates. The default 1 makes a seeded fit exactly
        reproducible; more threads run lock-free ("Hogwild") updates whose order, and so the
        result, varies from run to run. 0 uses every core.
    random_state : int or None
    """

    kind = "bpr"
    _constraints = {
        "factors": integer(1, 4096),
        "learning_rate": real(0, low_open=True),
        "regularization": real(0),
        "iterations": integer(1, 100_000),
        "num_threads": integer(0, 1024),
        "random_state": optional_seed(),
    }
    _bias_layout = ((-1,), ())  # user rows end in a constant 1 that meets the item bias

    def __init__(
        self,
        factors: int = 32,
        learning_rate: float = 0.05,
        regularization: float = 0.01,
        iterations: int = 200,
        num_threads: int = 1,
        random_state: int | None = 0,
    ):
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.num_threads = num_threads
        self.random_state = random_state

    def _fit(self, dataset, show_progress: bool) -> None:
        model = BayesianPersonalizedRanking(
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=self.iterations,
            num_threads=self.num_threads,
            random_state=self.random_state,
        )
        model.fit(positive_part(dataset.matrix), show_progress=show_progress)
        self.user_factors_, self.item_factors_ = model.user_factors, model.item_factors
