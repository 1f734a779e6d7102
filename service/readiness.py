"""The model half of ``GET /ready``: can the model being served answer a patient request?

Every snapshot was verified when it was loaded (in a child process of the master, see
:mod:`service.model_store`); this re-runs the same smoke queries (a known and a new patient,
:func:`~recommender.models.verification.smoke_queries`) once in the process that answers,
on its first ``/ready``, and caches the result on the snapshot. A reload makes a new snapshot,
so the check runs again for it. Cost: a few milliseconds, once per worker and model.
"""

from __future__ import annotations

import logging

from recommender.exceptions import RecommenderError
from recommender.models.verification import smoke_queries

from .model_store import Served

log = logging.getLogger(__name__)
_KEY = "model_answers"


def model_problem(served: Served) -> str | None:
    """None when ``served`` answers its smoke queries, else why not (cached per snapshot)."""
    result = served.checks.get(_KEY)
    if result is None:
        result = served.checks[_KEY] = _run(served)
    return result or None


def _run(served: Served) -> str:
    try:
        smoke_queries(served.model)
    except RecommenderError as exc:
        log.error("model %s cannot answer: %s", served.version, exc)
        return str(exc)
    except Exception as exc:  # a probe reports what breaks; the traceback goes to the log
        log.exception("model %s cannot answer", served.version)
        return f"the smoke query raised {type(exc).__name__}"
    return ""
