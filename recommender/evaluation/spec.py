"""Which models an evaluation fits, and the cut-offs it reports: the arguments shared by
:func:`~recommender.evaluation.evaluate.evaluate`, planted evaluation, tuning and the audit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..exceptions import ParameterError
from ..models import Recommender, make_model

DEFAULT_KS = (1, 3, 5, 10, 20)

ModelSpec = str | Recommender


def check_ks(k: int, ks: Sequence[int] | None) -> tuple[int, ...]:
    """Sorted distinct cut-offs including ``k``; each must be a positive int."""
    values = list(DEFAULT_KS if ks is None else ks) + [k]
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ParameterError(f"k must be a positive int; got {value!r}")
    return tuple(sorted({int(v) for v in values}))


def named_models(models) -> dict[str, Recommender]:
    """Fresh unfitted models by display name from kinds, instances, a sequence or a mapping."""
    if isinstance(models, (str, Recommender)):
        models = [models]
    pairs = (
        list(models.items()) if isinstance(models, Mapping) else [(None, spec) for spec in models]
    )
    if not pairs:
        raise ParameterError("no model to evaluate; pass at least one model kind or instance")
    named: dict[str, Recommender] = {}
    for name, spec in pairs:
        model = make_model(spec) if isinstance(spec, str) else spec.clone()
        name = name or model.kind
        base, n = name, 2
        while name in named:
            name, n = f"{base}-{n}", n + 1
        named[name] = model
    return named


def tqdm_disable(show_progress: bool | None) -> bool | None:
    """tqdm's ``disable``: None lets tqdm show the bar only on a terminal."""
    return None if show_progress is None else not show_progress
