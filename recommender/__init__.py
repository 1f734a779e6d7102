"""Treatment recommender: rank candidate therapies for a patient from historical outcomes.

Subpackages, from the bottom layer up (each imports only from the layers below it; the
contracts in ``.importlinter`` are checked by ``make test``; ``docs/architecture.md`` explains
the cut):

``columns``, ``exceptions``
    The shared vocabulary: table and column names, the error types.
``utils``
    Helpers with no domain knowledge: atomic files, JSON conversion, BLAS threads, CSR rows.
``data``
    Canonical tables and their validation, integer codes, id maps, the
    :class:`~recommender.data.dataset.Dataset`, confidence and safety policies, splits,
    pseudonyms, feedback, one patient as the engine sees them, synthetic cohorts.
``importers``
    EHR exports (Synthea, MIMIC, FHIR) to canonical tables.
``ranking``
    Scores to top-k with the safety rules as a guarantee, explanations and evidence.
``models``
    The model contract (:class:`~recommender.models.base.Recommender`), every family, the
    registry and the artifact format.
``training``
    A data folder to a verified artifact.
``evaluation``
    Metrics, offline evaluation, early stopping, tuning, reports.
``trust``
    Subgroup audit and model card.
``spark``, ``cli``
    Interfaces: Spark for scale, the ``recommender`` command.

The names below are the public API, importable from here (loaded on first use, so that
``import recommender`` stays cheap)::

    from recommender import read_tables, Dataset, make_model
"""

from __future__ import annotations

import importlib

#: Public name -> the module that defines it.
_PUBLIC = {
    "CohortTables": "recommender.data.tables",
    "read_tables": "recommender.data.tables",
    "validate_tables": "recommender.data.tables",
    "write_tables": "recommender.data.tables",
    "Dataset": "recommender.data.dataset",
    "SideInfo": "recommender.data.side_info",
    "ConfidencePolicy": "recommender.data.policies",
    "SafetyPolicy": "recommender.data.policies",
    "Pseudonymizer": "recommender.data.pseudonym",
    "Split": "recommender.data.splits",
    "leave_last": "recommender.data.splits",
    "leave_last_episode": "recommender.data.splits",
    "generate_cohort": "recommender.data.synthetic.planted",
    "write_cohort": "recommender.data.synthetic.planted",
    "MODELS": "recommender.models.registry",
    "make_model": "recommender.models.registry",
    "Recommender": "recommender.models.base",
    "load_artifact": "recommender.models.persistence",
    "RecommendationList": "recommender.ranking.answer",
    "train_artifact": "recommender.training",
    "evaluate": "recommender.evaluation.evaluate",
    "evaluate_split": "recommender.evaluation.evaluate",
    "tune": "recommender.evaluation.tune",
    "audit": "recommender.trust.subgroup_audit",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'recommender' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
