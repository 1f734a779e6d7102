"""The outcome model family: what works for whom, from observational treatment decisions.

Modules: ``features`` (the feature rows), ``history`` (outcome history as ALS factors),
``propensity`` (the clinicians' choices, for the confounding adjustment), ``forest`` (the
LightGBM boosters served as one forest), ``explain`` (intervals, overlap, contributions) and
``model`` (:class:`OutcomeRecommender`, kind ``"outcome"``).
"""

from __future__ import annotations

from .model import OutcomeRecommender

__all__ = ["OutcomeRecommender"]
