"""Every model family behind the one contract of :class:`~recommender.models.base.Recommender`.

Importing this package defines (and so registers) every family; :data:`MODELS` maps each kind
to its class and :func:`make_model` builds one by name.
"""

from __future__ import annotations

from .als import ALSRecommender
from .base import Recommender
from .bpr import BPRRecommender
from .knn import BM25Recommender, CosineRecommender
from .latent_class import LatentClassRecommender
from .lmf import LMFRecommender
from .outcome import OutcomeRecommender
from .popularity import ConditionPopularRecommender, PopularRecommender
from .registry import MODELS, make_model

__all__ = [
    "MODELS",
    "make_model",
    "Recommender",
    "ALSRecommender",
    "BPRRecommender",
    "LMFRecommender",
    "OutcomeRecommender",
    "LatentClassRecommender",
    "CosineRecommender",
    "BM25Recommender",
    "PopularRecommender",
    "ConditionPopularRecommender",
]
