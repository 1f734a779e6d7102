"""External ids <-> internal indices, at exactly one boundary.

The engine, metrics and ranking see only indices ``0..n-1``; ingest, the CLI and the service
convert with an :class:`IdMap`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from ..exceptions import UnknownIdError


class IdMap:
    """A frozen bijection between external string ids and indices ``0..n-1``.

    Parameters
    ----------
    external_ids : array-like of str
        Unique ids, in index order.
    kind : str
        What the ids name ("patient", "treatment" ...), used in error messages.
    """

    def __init__(self, external_ids: Iterable[str], kind: str = "id"):
        if isinstance(external_ids, np.ndarray) and external_ids.dtype.kind == "U":
            ids = pd.Index(external_ids)  # already strings (an artifact's id array)
        else:
            ids = pd.Index(
                np.asarray(
                    list(external_ids) if not hasattr(external_ids, "__len__") else external_ids,
                    dtype=object,
                ).astype(str)
            )
        if not ids.is_unique:
            dupes = ids[ids.duplicated()].unique()[:5].tolist()
            raise ValueError(f"{kind} ids must be unique; repeated: {dupes}")
        self._index = ids
        self.kind = kind
        self._external: np.ndarray | None = None  # object array, built on first use

    @classmethod
    def from_distinct(cls, ids: pd.Index, kind: str = "id") -> IdMap:
        """Build from string ids known to be distinct, in index order (the distinct values of a
        factorisation, as in :class:`recommender.data.codes.CohortCodes`).

        Arrow-backed strings are kept as they are and the lookup table is only built on the
        first lookup, so a million patient ids cost tens of megabytes instead of hundreds
        while a model trains. Anything else goes through the checking constructor.
        """
        if not (
            isinstance(ids, pd.Index) and isinstance(ids.dtype, pd.StringDtype) and not ids.hasnans
        ):
            return cls(ids, kind)
        id_map = cls.__new__(cls)
        id_map._index = pd.Index(ids.astype("str"))
        id_map.kind = kind
        id_map._external = None
        return id_map

    @classmethod
    def from_values(cls, values: Iterable[str], kind: str = "id") -> IdMap:
        """Build from values with repeats, keeping the order of first appearance."""
        return cls(
            pd.unique(
                pd.Series(
                    list(values) if not hasattr(values, "__len__") else values, dtype=object
                ).astype(str)
            ),
            kind,
        )

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, external_id: object) -> bool:
        return str(external_id) in self._index

    @property
    def external_ids(self) -> np.ndarray:
        """Array of shape (n,) of the external ids, in index order (cached; do not modify)."""
        if self._external is None:
            self._external = self._index.to_numpy(dtype=object)
        return self._external

    def to_internal(self, external_ids, strict: bool = True) -> np.ndarray:
        """Indices (int64, shape (n,)) of ``external_ids``; -1 for unknown ones when not strict.

        Raises
        ------
        UnknownIdError
            If ``strict`` and any id is unknown; the message names the first few.
        """
        values = np.asarray(external_ids, dtype=object).astype(str)
        index = self._index.get_indexer(values)
        if strict and (index < 0).any():
            missing = pd.unique(values[index < 0])[:5].tolist()
            raise UnknownIdError(f"unknown {self.kind} id(s): {missing}")
        return index.astype(np.int64)

    def index_of(self, external_id: str) -> int:
        """Index of one external id. Raises :class:`UnknownIdError` if unknown."""
        try:
            position = self._index.get_loc(str(external_id))
        except KeyError:
            raise UnknownIdError(f"unknown {self.kind} id(s): {[str(external_id)]}") from None
        return int(position)

    def to_external(self, internal_ids) -> np.ndarray:
        """External ids (object array) of indices ``internal_ids``."""
        return self.external_ids[np.asarray(internal_ids, dtype=np.int64)]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and self._index.equals(other._index)

    def __repr__(self) -> str:
        return f"IdMap(kind={self.kind!r}, n={len(self)})"
