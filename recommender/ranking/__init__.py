"""Ranking: model scores -> safety exclusions -> top-k, with explanations and evidence.

Modules
-------
protocols
    What ranking needs from a model (:class:`ScoringModel`), so this layer sits below
    :mod:`recommender.models` and never imports it.
safety
    The exclusion rules (harm, contraindication, severe interaction, evidence, tried) and the
    sentences that explain them.
topk
    The exact top-k kernel and the masks that make an exclusion a guarantee.
single
    One patient (known by id, or new from their record), one or several conditions.
batch
    Many known patients (evaluation, batch jobs); :mod:`factor_path` is its exact fast path
    for the factor models.
answer
    :class:`RecommendationList`: what a clinician sees.
evidence, contributions
    The two parts of every explanation: outcomes on record, and the patient's entries that
    drove the score.

Fast-path twins
---------------
Each of these pairs computes the same answer two ways, one per workload; a change to one must
be made to the other, and a property test checks each pair on random cohorts:

- ``safety.patient_codes`` (one patient, plain Python) / ``safety.exclusion_codes`` (sparse),
  and ``safety.patient_active`` / ``safety.active_treatments``:
  ``tests/ranking/test_safety.py::test_one_patient_rules_equal_the_batch_rules`` and, with
  shared ingredients (``duplicate_therapy``),
  ``tests/ranking/test_duplicates.py::test_one_patient_codes_equal_the_batch_codes_with_shared_ingredients``;
- ``single._top_candidates`` (a condition's candidates) / ``topk.mask_scores`` + ``topk.top_k``:
  ``tests/ranking/test_ranking.py::test_top_among_candidates_equals_masking_every_score``;
- ``factor_path.rank_factors`` (factor models) / the dense path of ``batch.rank_patients``:
  ``tests/ranking/test_batch_fast_path.py::test_fast_path_equals_generic_path``.
"""

from __future__ import annotations

from .answer import DISCLAIMER, Exclusion, Recommendation, RecommendationList, model_summary
from .batch import BATCH_SIZE, rank_patients, recommend_all, recommend_many
from .protocols import FactorScoringModel, ScoringModel
from .safety import REASONS
from .single import (
    recommend_known,
    recommend_known_conditions,
    recommend_unknown,
    recommend_unknown_conditions,
)
from .topk import allowed_columns, check_k, mask_scores, top_k

__all__ = [
    "BATCH_SIZE",
    "DISCLAIMER",
    "REASONS",
    "Exclusion",
    "FactorScoringModel",
    "Recommendation",
    "RecommendationList",
    "ScoringModel",
    "allowed_columns",
    "check_k",
    "mask_scores",
    "model_summary",
    "rank_patients",
    "recommend_all",
    "recommend_known",
    "recommend_known_conditions",
    "recommend_many",
    "recommend_unknown",
    "recommend_unknown_conditions",
    "top_k",
]
