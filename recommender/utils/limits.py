"""Bounds on what reading one input file may cost: decompressed bytes and rows.

A 4.7 MB ``.csv.gz`` that expands to 1 GiB (a gzip bomb, or a corrupt export) must stop with one
clear error naming the file, not exhaust the machine's memory. Every table reader (canonical
tables, the Arrow fast path, the Synthea, MIMIC and FHIR importers) opens its files through
:func:`open_bounded`, which decompresses as a stream and counts the bytes handed to the parser:

- at most ``max_bytes`` bytes per file after decompression (default 64 GiB);
- for a compressed file, also at most ``max_ratio`` times its size on disk (default 100; real
  CSV and NDJSON exports compress 5 to 20 times, bombs hundreds or thousands of times), with
  a floor of :data:`RATIO_FLOOR` bytes so that small files are never refused for their ratio;
- at most ``max_rows`` rows per file (default one billion; MIMIC-IV ``labevents`` has about
  120 million), checked by :meth:`ReadLimits.check_rows`.

The defaults fit full exports; a site lowers or raises them with the environment variables
``RECOMMENDER_MAX_FILE_BYTES``, ``RECOMMENDER_MAX_FILE_ROWS`` and
``RECOMMENDER_MAX_COMPRESSION_RATIO`` (read each time a file is opened, by
:meth:`ReadLimits.from_env`).
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..exceptions import DataValidationError

DEFAULT_MAX_BYTES = 64 * 2**30
DEFAULT_MAX_ROWS = 1_000_000_000
DEFAULT_MAX_RATIO = 100
#: Bytes a compressed file may always expand to, whatever its ratio.
RATIO_FLOOR = 64 * 2**20
ENVIRONMENT = {
    "max_bytes": "RECOMMENDER_MAX_FILE_BYTES",
    "max_rows": "RECOMMENDER_MAX_FILE_ROWS",
    "max_ratio": "RECOMMENDER_MAX_COMPRESSION_RATIO",
}


class InputTooLargeError(DataValidationError):
    """A file is beyond a read limit (:class:`ReadLimits`); the message names the setting."""


@dataclass(frozen=True)
class ReadLimits:
    """Per-file read limits.

    Parameters
    ----------
    max_bytes : int
        Most bytes one file may hold once decompressed.
    max_rows : int
        Most rows (lines, resources) one file may hold.
    max_ratio : float
        Most times a compressed file may expand (above :data:`RATIO_FLOOR` bytes).
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    max_rows: int = DEFAULT_MAX_ROWS
    max_ratio: float = DEFAULT_MAX_RATIO

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ReadLimits:
        """The defaults, overridden by the ``RECOMMENDER_MAX_*`` variables that are set.

        Raises
        ------
        DataValidationError
            A variable is not a positive number.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field, variable in ENVIRONMENT.items():
            text = environ.get(variable, "").strip()
            if not text:
                continue
            try:
                value = float(text) if field == "max_ratio" else int(text)
            except ValueError:
                value = 0
            if not value > 0:
                raise DataValidationError(f"{variable} must be a positive number; got {text!r}")
            values[field] = value
        return cls(**values)

    def byte_budget(self, path: Path) -> tuple[int, str]:
        """Bytes ``path`` may expand to, and the setting that decides it (for the message)."""
        if not _compressed(path):
            return self.max_bytes, ENVIRONMENT["max_bytes"]
        by_ratio = max(int(self.max_ratio * path.stat().st_size), RATIO_FLOOR)
        if by_ratio < self.max_bytes:
            return by_ratio, ENVIRONMENT["max_ratio"]
        return self.max_bytes, ENVIRONMENT["max_bytes"]

    def check_rows(self, rows: int, path: str | os.PathLike) -> None:
        """Raise :class:`InputTooLargeError` when ``rows`` is over ``max_rows``."""
        if rows > self.max_rows:
            raise InputTooLargeError(
                f"more than {self.max_rows:,} rows (raise {ENVIRONMENT['max_rows']} if the "
                "file is genuine)",
                file=str(path),
            )


def check_parquet(path: Path, limits: ReadLimits | None = None) -> None:
    """Apply the row and byte limits to a Parquet file from its footer, before reading it."""
    import pyarrow.parquet as pq

    limits = ReadLimits.from_env() if limits is None else limits
    metadata = pq.ParquetFile(path).metadata
    limits.check_rows(metadata.num_rows, path)
    size = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    if size > limits.max_bytes:
        raise InputTooLargeError(
            f"holds {size:,} bytes of column data, more than {limits.max_bytes:,} (raise "
            f"{ENVIRONMENT['max_bytes']} if it is genuine)",
            file=str(path),
        )


def _compressed(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def open_bounded(path: str | os.PathLike, limits: ReadLimits | None = None) -> BinaryIO:
    """``path`` opened for binary reading, gunzipped as a stream if it ends in ``.gz``.

    Reading past the file's byte budget (:meth:`ReadLimits.byte_budget`) raises
    :class:`InputTooLargeError` naming the file; pandas and pyarrow parsers let it through.
    """
    path = Path(path)
    limits = ReadLimits.from_env() if limits is None else limits
    budget, setting = limits.byte_budget(path)
    raw: io.BufferedIOBase = gzip.GzipFile(path, "rb") if _compressed(path) else open(path, "rb")
    return io.BufferedReader(_Bounded(raw, budget, setting, path), buffer_size=1 << 20)


class _Bounded(io.RawIOBase):
    """A raw stream that refuses to deliver more than ``budget`` bytes."""

    def __init__(self, inner: io.BufferedIOBase, budget: int, setting: str, path: Path):
        self._inner, self._budget, self._setting, self._path = inner, budget, setting, path
        self._delivered = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        # One byte more than the budget may be asked for, so a file exactly at it still reads.
        view = memoryview(buffer)[: max(0, min(len(buffer), self._budget + 1 - self._delivered))]
        try:
            count = self._inner.readinto(view) if len(view) else 0
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:  # truncated or not gzip
            raise DataValidationError(
                f"cannot be decompressed: {exc}", file=str(self._path)
            ) from None
        self._delivered += count
        if self._delivered > self._budget:
            raise InputTooLargeError(
                f"expands to more than {self._budget:,} bytes (a gzip bomb or a corrupt file? "
                f"raise {self._setting} if it is genuine)",
                file=str(self._path),
            )
        return count

    def close(self) -> None:
        self._inner.close()
        super().close()


def read_text_csv(path: Path, limits: ReadLimits, usecols=None):
    """A CSV file (optionally compressed) as a DataFrame of text, every cell a str ("" when
    empty), read through :func:`open_bounded` and held to ``limits.max_rows``."""
    import pandas as pd

    with open_bounded(path, limits) as handle:
        frame = pd.read_csv(
            handle,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            usecols=usecols,
            compression=None,
            nrows=limits.max_rows + 1,
        )
    limits.check_rows(len(frame), path)
    return frame
