"""Model kind (as the CLI and artifacts name it) -> class: the one table every lookup uses.

A leaf module: :class:`~recommender.models.base.Recommender` fills it as each family class is
defined (``__init_subclass__``), and :mod:`recommender.models.persistence` reads it to rebuild a
saved model, without either importing the other.
"""

from __future__ import annotations

from typing import Any

from ..exceptions import ParameterError

#: Model kind -> class, in definition order.
MODELS: dict[str, Any] = {}
#: The model ``recommender train`` fits without ``--model``: the best on the cohort benchmarks
#: (policy value against the truth, benchmarks/README.md).
DEFAULT_MODEL = "outcome"


def register(cls: Any) -> Any:
    """Add ``cls`` under ``cls.kind``; a second class with the same kind is refused."""
    existing = MODELS.get(cls.kind)
    if existing is not None and existing is not cls:
        raise ParameterError(
            f"model kind {cls.kind!r} is taken by {existing.__name__}; "
            f"{cls.__name__} needs another kind"
        )
    MODELS[cls.kind] = cls
    return cls


def make_model(kind: str, **params):
    """A new unfitted model of ``kind`` with ``params`` (unknown kinds/params raise ParameterError)."""
    if kind not in MODELS:
        raise ParameterError(f"unknown model {kind!r}; choose one of {sorted(MODELS)}")
    return MODELS[kind]().set_params(**params)
