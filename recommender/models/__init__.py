"""Every model family behind the one contract of :class:`~recommender.models.base.Recommender`."""
from __future__ import annotations

from ..exceptions import ParameterError
from .als import ALSRecommender
from .base import Query, Recommender
from .bpr import BPRRecommender
from .knn import BM25Recommender, CosineRecommender
from .latent_class import LatentClassRecommender
from .lmf import LMFRecommender
from .popularity import ConditionPopularRecommender, PopularRecommender

#: Model kind (as the CLI and artifacts name it) -> class.
MODELS: dict[str, type[Recommender]] = {cls.kind: cls for cls in (
    ALSRecommender, BPRRecommender, LMFRecommender, CosineRecommender, BM25Recommender,
    LatentClassRecommender, PopularRecommender, ConditionPopularRecommender)}


def make_model(kind: str, **params) -> Recommender:
    """A new unfitted model of ``kind`` with ``params`` (unknown kinds/params raise ParameterError)."""
    if kind not in MODELS:
        raise ParameterError(f"unknown model {kind!r}; choose one of {sorted(MODELS)}")
    return MODELS[kind]().set_params(**params)


__all__ = ["MODELS", "make_model", "Query", "Recommender", "ALSRecommender", "BPRRecommender",
           "LMFRecommender", "LatentClassRecommender", "CosineRecommender", "BM25Recommender",
           "PopularRecommender", "ConditionPopularRecommender"]
