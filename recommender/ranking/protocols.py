"""What the ranking layer needs from a model, stated without importing the model layer.

:mod:`recommender.models` implements these (every :class:`~recommender.models.base.Recommender`
is a :class:`ScoringModel`; the factor models are also :class:`FactorScoringModel`); ranking,
safety and explanations only call what is declared here, so they sit below the models.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, cast

import numpy as np

from ..data.dataset import Dataset
from ..data.patient import Query


class ScoringModel(Protocol):
    """A fitted model as the ranker sees it."""

    kind: ClassVar[str]
    #: Whether a patient's own record changes the scores (False for the popularity baselines).
    personalised: ClassVar[bool]
    #: Whether ``score(query)`` is ``patient_factors(query) @ item_factors_[:n_t].T`` whatever
    #: condition the query asks about; the ranker then takes the factor fast path
    #: (:mod:`recommender.ranking.factor_path`) and calls the :class:`FactorScoringModel` methods.
    scores_are_factor_products: ClassVar[bool]
    dataset_: Dataset

    def check_fitted(self) -> None: ...

    def score(self, query: Query) -> np.ndarray:
        """Scores float32 (len(query), n_t), higher is better; no safety rule applied."""

    def score_treatments(self, query: Query, treatments: np.ndarray) -> np.ndarray:
        """Scores float32 (len(query), len(treatments)) of those treatment indices."""

    def explanations(self, query: Query, treatments: np.ndarray, condition: int) -> list[dict]:
        """Per treatment index, the model's explanation entry (``basis``, ``contributions``
        and whatever more the model knows) for the single patient of ``query``."""


class FactorScoringModel(ScoringModel, Protocol):
    """A :class:`ScoringModel` whose scores are patient factors times treatment factors."""

    user_factors_: np.ndarray  # float32 (n_p, d)
    item_factors_: np.ndarray  # float32 (n_t + n_f, d)

    def patient_factors(self, query: Query) -> np.ndarray:
        """Factors float32 (len(query), d), folded in for patients outside the training data."""

    def factor_scores(self, users: np.ndarray, treatments: np.ndarray | None = None) -> np.ndarray:
        """Scores float32 (len(users), n) for the treatment indices (all when None)."""


def factor_model(model: ScoringModel) -> FactorScoringModel | None:
    """``model`` as a :class:`FactorScoringModel` when its scores are factor products, else None."""
    return cast(FactorScoringModel, model) if model.scores_are_factor_products else None
