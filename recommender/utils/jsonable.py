"""Plain JSON types from numpy-laden structures (manifests, reports, results)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def jsonable(value):
    """Nested dicts/lists/tuples with numpy scalars and arrays turned into JSON types.

    Non-finite floats become None (JSON has no NaN).

    >>> jsonable({"a": np.float32(0.5), "b": np.arange(2), "c": float("nan")})
    {'a': 0.5, 'b': [0, 1], 'c': None}
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
