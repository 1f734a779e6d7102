"""Estimator discipline shared by every model: explicit hyperparameters, validated in ``fit``.

As in scikit-learn: hyperparameters are keyword arguments of ``__init__`` stored as given (no
logic there); ``fit`` checks them against the class's ``_constraints`` table, whose messages
name the parameter and the value; ``get_params``/``set_params``/``clone`` make tuning a loop of
``model.clone().set_params(**point).fit(dataset)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np

from ..exceptions import ParameterError

Check = tuple[Callable[[Any], bool], str]


def integer(low: int, high: float = np.inf) -> Check:
    return (
        lambda v: bool(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and low <= v <= high
        ),
        f"an int in the range [{low}, {high}]",
    )


def real(low: float, high: float = np.inf, low_open: bool = False) -> Check:
    def ok(v) -> bool:
        return bool(
            isinstance(v, (int, float, np.floating))
            and not isinstance(v, bool)
            and (low < v if low_open else low <= v)
            and v <= high
        )

    return ok, f"a number in the range {'(' if low_open else '['}{low}, {high}]"


def optional_seed() -> Check:
    return (
        lambda v: v is None or bool(isinstance(v, (int, np.integer)) and v >= 0),
        "None or a non-negative int",
    )


class Estimator:
    """Hyperparameter handling of :class:`~recommender.models.base.Recommender`."""

    _constraints: ClassVar[Mapping[str, Check]] = {}

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [
            p.name
            for p in signature.parameters.values()
            if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyperparameters as given to ``__init__`` (``deep`` is accepted for sklearn parity)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> Estimator:
        """Set hyperparameters; unknown names raise :class:`ParameterError`."""
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise ParameterError(
                    f"{type(self).__name__} has no parameter {name!r}; valid: {sorted(valid)}"
                )
            setattr(self, name, value)
        return self

    def clone(self) -> Estimator:
        """An unfitted copy with the same hyperparameters."""
        return type(self)(**self.get_params())

    def _validate_params(self) -> None:
        for name, (check, expected) in self._constraints.items():
            value = getattr(self, name)
            if not check(value):
                raise ParameterError(
                    f"The {name!r} parameter of {type(self).__name__} must be "
                    f"{expected}. Got {value!r} instead."
                )

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"
