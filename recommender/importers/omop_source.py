"""Read the tables of an OMOP CDM 5.3 / 5.4 folder: CSV, gzip CSV or Parquet, in any name case.

A table is the file ``<table>.csv``, ``<table>.csv.gz`` or ``<table>.parquet`` in the folder, its
name matched case-insensitively (``PERSON.csv`` and ``person.csv`` are both the person table);
two files for one table are an error. Column names are matched case-insensitively too. Every
value is read as text (Parquet columns are cast to text: dates as ``YYYY-MM-DD``, integers as
digits), and the typed accessors of :class:`SourceTable` check the CDM's types: an id or concept
id that is not an integer, a date that is not ISO-8601, a number that is not one raises
:class:`~recommender.exceptions.DataValidationError` naming the file, the 1-based data row and
the column. Blank cells are blank (the caller decides what a missing value means).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..exceptions import DataValidationError
from .report import ImportReport

#: File name endings of a table, in the order they are looked for.
FORMATS = (".csv", ".csv.gz", ".parquet")
#: Rows read at a time when a table is filtered while it is read (see :meth:`OmopSource.read`).
CHUNK_ROWS = 1_000_000

_INTEGER = re.compile(r"^[+-]?\d+(?:\.0*)?$")
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")


@dataclass
class SourceTable:
    """One CDM table read as text.

    Attributes
    ----------
    name : str
        The CDM table name, lower case (``drug_era``).
    path : Path
        The file it was read from.
    frame : DataFrame
        The columns read, named in lower case, every value text ("" when empty); the index is
        the 0-based data row of the file (kept when rows were filtered while reading).
    written : dict of str -> str
        Lower-case column name -> the name as the file writes it (for error messages).
    """

    name: str
    path: Path
    frame: pd.DataFrame
    written: dict[str, str]

    def __len__(self) -> int:
        return len(self.frame)

    def has(self, column: str) -> bool:
        return column in self.frame

    def text(self, column: str) -> pd.Series:
        """The column's stripped text ("" everywhere when the table lacks it)."""
        if column not in self.frame:
            return pd.Series("", index=self.frame.index, dtype=object)
        return self.frame[column].str.strip()

    def ids(self, column: str) -> pd.Series:
        """An integer id or concept id column as canonical text (``"12"``; "" where blank).

        A float-written integer (``12.0``) loses its ``.0``. Raises DataValidationError at the
        first value that is not an integer.
        """
        text = self.text(column)
        bad = (text != "") & ~text.str.match(_INTEGER)
        self._raise_at(bad, column, "is not an integer (an OMOP id or concept_id)")
        return text.str.replace(r"\.0*$", "", regex=True).str.lstrip("+")

    def dates(self, column: str) -> pd.Series:
        """A date or date-time column as UTC timestamps (NaT where blank; naive = UTC).

        Raises DataValidationError at the first value that is not an ISO-8601 date.
        """
        text = self.text(column)
        parsed = pd.to_datetime(
            text.where(text != ""), errors="coerce", utc=True, format="ISO8601"
        ).astype("datetime64[ns, UTC]")
        self._raise_at(parsed.isna() & (text != ""), column, "is not an ISO-8601 date")
        return parsed

    def numbers(self, column: str) -> pd.Series:
        """A numeric column as floats (NaN where blank); raises at a value that is not a number."""
        text = self.text(column)
        bad = (text != "") & ~text.str.match(_NUMBER)
        self._raise_at(bad, column, "is not a number")
        values = pd.to_numeric(text.where(text != ""), errors="coerce").astype(float)
        self._raise_at(~np.isfinite(values.fillna(0.0)), column, "is not a finite number")
        return values

    def _raise_at(self, bad: pd.Series, column: str, what: str) -> None:
        if not bad.any():
            return
        position = bad.to_numpy().nonzero()[0][0]
        row = int(self.frame.index[position]) + 1
        value = self.frame[column].iloc[position]
        raise DataValidationError(
            f"{value!r} {what}",
            file=str(self.path),
            row=row,
            column=self.written.get(column, column),
        )


class OmopSource:
    """The tables of one OMOP CDM folder (see the module docstring).

    Parameters
    ----------
    folder : Path
        The folder holding the table files.
    report : ImportReport
        Rows read are recorded under the table's name.

    Raises
    ------
    DataValidationError
        If two files are one table (``person.csv`` and ``PERSON.csv.gz``).
    """

    def __init__(self, folder: Path, report: ImportReport):
        self.folder = folder
        self.report = report
        self.files: dict[str, Path] = {}
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            lower = path.name.lower()
            ending = next(
                (f for f in sorted(FORMATS, key=len, reverse=True) if lower.endswith(f)), ""
            )
            if not ending:
                continue
            name = lower[: -len(ending)]
            if name in self.files:
                raise DataValidationError(
                    f"two files for the {name} table: {self.files[name].name} and {path.name}; "
                    "keep one",
                    file=str(folder),
                )
            self.files[name] = path

    def has(self, name: str) -> bool:
        return name in self.files

    def read(
        self,
        name: str,
        required: tuple[str, ...],
        optional: tuple[str, ...] = (),
        *,
        where: tuple[str, Iterable[str]] | None = None,
    ) -> SourceTable | None:
        """Read the columns ``required`` and ``optional`` (lower-case names) of table ``name``.

        Returns None when the folder has no such table. ``where = (column, values)`` keeps only
        the rows whose ``column`` text is among ``values`` (read in chunks, for the vocabulary
        tables, which can be large).

        Raises
        ------
        DataValidationError
            If the file cannot be read or lacks a required column.
        """
        path = self.files.get(name)
        if path is None:
            return None
        wanted = set(required) | set(optional)
        try:
            if path.name.lower().endswith(".parquet"):
                frame, written = _read_parquet(path, wanted, where)
            else:
                frame, written = _read_csv(path, wanted, where)
        except (OSError, ValueError, pa.ArrowException, pd.errors.ParserError) as exc:
            raise DataValidationError(f"cannot be read: {exc}", file=str(path)) from None
        missing = [c for c in required if c not in frame]
        if missing:
            raise DataValidationError(
                f"missing column(s) {missing}; the OMOP {name} table needs {list(required)} "
                f"(found {sorted(written.values())})",
                file=str(path),
                column=missing[0],
            )
        self.report.read(name, len(frame))
        return SourceTable(name, path, frame, written)

    def cdm_version(self) -> str:
        """``5.3`` or ``5.4`` from ``cdm_source.cdm_version`` (``v5.3.1``), else ""."""
        table = self.read("cdm_source", (), ("cdm_version",))
        if table is None or not len(table):
            return ""
        found = re.search(r"(\d+)\.(\d+)", table.text("cdm_version").iloc[0])
        return f"{found.group(1)}.{found.group(2)}" if found else ""


def _read_csv(
    path: Path, wanted: set[str], where: tuple[str, Iterable[str]] | None
) -> tuple[pd.DataFrame, dict[str, str]]:
    header = pd.read_csv(path, nrows=0).columns
    written = {str(c).strip().lower(): str(c) for c in header if str(c).strip().lower() in wanted}
    options = dict(
        dtype=str, keep_default_na=False, na_filter=False, usecols=list(written.values())
    )
    if where is None:
        frame = pd.read_csv(path, **options)
    else:
        column, values = where
        keep = set(values)
        parts = []
        for chunk in pd.read_csv(path, chunksize=CHUNK_ROWS, **options):
            chunk.columns = [c.strip().lower() for c in chunk.columns]
            if column in chunk:
                chunk = chunk[chunk[column].str.strip().isin(keep)]
            parts.append(chunk)
        frame = pd.concat(parts) if parts else pd.DataFrame(columns=list(written))
    frame.columns = [c.strip().lower() for c in frame.columns]
    return frame, written


def _read_parquet(
    path: Path, wanted: set[str], where: tuple[str, Iterable[str]] | None
) -> tuple[pd.DataFrame, dict[str, str]]:
    names = pq.read_schema(path).names
    written = {n.strip().lower(): n for n in names if n.strip().lower() in wanted}
    table = pq.read_table(path, columns=list(written.values()))
    columns = {}
    for lower, original in written.items():
        array = table.column(original)
        if pa.types.is_timestamp(array.type):  # an aware time keeps its offset
            suffix = "%z" if array.type.tz else ""
            array = pc.strftime(array, format=f"%Y-%m-%dT%H:%M:%S{suffix}")
        elif not pa.types.is_string(array.type):
            array = pc.cast(array, pa.string())
        columns[lower] = array.to_pandas().fillna("").astype(object)
    frame = pd.DataFrame(columns, index=pd.RangeIndex(table.num_rows))
    if where is not None and where[0] in frame:
        frame = frame[frame[where[0]].str.strip().isin(set(where[1]))]
    return frame, written
