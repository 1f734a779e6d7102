"""Read a data folder straight into integer codes with pyarrow (the training path).

:func:`read_codes` returns what ``CohortCodes.from_tables(read_tables(folder))`` returns, without
building the pandas tables. The large tables (outcomes, patient_conditions, patients) are read
column by column as dictionary-encoded Arrow arrays; every per-value rule of
:func:`recommender.data.tables.validate_tables` (ids stripped and non-empty, outcome labels and numbers,
ISO-8601 timestamps, flags, birth years) runs once per *distinct* value of a column, through the
same functions the pandas reader uses, and the rules across rows (exact duplicate rows, patients
listed twice, ids a dictionary table does not define) run on the int32 codes. The small
dictionary tables (contraindications, interactions, treatments, conditions) are read and checked
by the pandas reader's own code.

This reader only decides that a folder is valid. At the first problem, or at a column type it
does not handle (a Parquet timestamp or integer id column, say), it hands the folder to
:func:`~recommender.data.tables.read_tables`, which raises the error naming file, row and column (or
reads the folder, slowly). Error messages therefore come from one place.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..columns import Columns as C
from ..columns import Tables
from ..exceptions import DataValidationError
from ..utils.limits import InputTooLargeError, ReadLimits, check_parquet, open_bounded
from .codes import NAT, CohortCodes, group_edges, sorted_codes, take_codes
from .tables import (
    REQUIRED,
    birth_year_values,
    check_folder,
    check_ingredients,
    check_severity,
    clean_table,
    fingerprint_files,
    flag_values,
    normalise_observations,
    outcome_values,
    read_file,
    read_tables,
    table_files,
    text_values,
    timestamp_values,
)

log = logging.getLogger(__name__)

LARGE = (Tables.outcomes, Tables.patient_conditions, Tables.patients, Tables.observations)
OUTCOME_COLUMNS = (C.patient, C.treatment, C.outcome, C.timestamp, C.condition, C.adverse)
#: Outcome columns compared as values (after the patient and treatment codes) for duplicates.
OUTCOME_VALUES = ("outcome", "timestamp", "condition", "adverse")


class _Unsupported(Exception):
    """Raised inside this module: leave the folder to the pandas reader."""


def read_codes(folder: str | Path) -> CohortCodes:
    """The validated tables of ``folder`` as :class:`~recommender.data.codes.CohortCodes`.

    Raises
    ------
    DataValidationError
        As :func:`~recommender.data.tables.read_tables` does, for the same problems and with the same
        messages.
    """
    folder = Path(folder)
    check_folder(folder)
    paths = table_files(folder)
    try:
        codes = _read(paths)
    except InputTooLargeError:
        raise  # the pandas reader would read as far again to say the same
    except (
        _Unsupported,
        DataValidationError,
        pa.ArrowException,
        OSError,
        EOFError,
        ValueError,
        TypeError,
    ) as reason:
        log.info("%s: %s; reading the tables with pandas", folder, reason)
        return CohortCodes.from_tables(read_tables(folder))
    finally:
        pa.default_memory_pool().release_unused()
    codes.fingerprint = fingerprint_files(paths)
    return codes


def _read(paths: dict[str, Path]) -> CohortCodes:
    small = {}
    for table in Tables.all:  # the pandas reader's checks and normalisation, small tables only
        if table in paths and table not in LARGE:
            frame = clean_table(read_file(paths[table], table), table, str(paths[table]))
            if table == Tables.interactions:
                check_severity(frame, str(paths[table]))
            if table == Tables.treatments:
                check_ingredients(frame, str(paths[table]))
            small[table] = frame
    outcomes = _outcomes(_Source(paths[Tables.outcomes], Tables.outcomes))
    pc = (
        _patient_conditions(_Source(paths[Tables.patient_conditions], Tables.patient_conditions))
        if Tables.patient_conditions in paths
        else None
    )
    patients = (
        _patients(_Source(paths[Tables.patients], Tables.patients))
        if Tables.patients in paths
        else None
    )
    observations = None
    if Tables.observations in paths:  # read as pandas does: its rows are not coded here
        path = paths[Tables.observations]
        observations = normalise_observations(
            clean_table(read_file(path, Tables.observations), Tables.observations, str(path)),
            str(path),
        )
    tables = [t for t in (outcomes, pc, patients) if t is not None]
    patient_ids, patient_codes = _patient_codes(tables)
    if patients is not None:
        listed = np.bincount(patient_codes[-1], minlength=len(patient_ids))
        if listed.max(initial=1) > 1:
            raise _Unsupported("a patient is listed twice in the patients table")
        if listed.min(initial=1) == 0:
            raise _Unsupported("a patient id is not defined in the patients table")
        if observations is not None and not observations[C.patient].isin(patient_ids).all():
            raise _Unsupported("an observation's patient is not defined in the patients table")
    _check_defined(outcomes["treatment_ids"], small.get(Tables.treatments), C.treatment)
    treatment, treatment_ids = sorted_codes(outcomes["treatment"], outcomes["treatment_ids"])
    kept, pair_order = _drop_exact_duplicates(
        [patient_codes[0], treatment]
        + [outcomes[name] for name in OUTCOME_VALUES]
        + outcomes["extra"]
    )

    n_outcome = len(outcomes["condition_ids"])
    condition_codes, condition_ids = pd.factorize(
        pd.concat(
            [outcomes["condition_ids"]] + ([pc["condition_ids"]] if pc else []), ignore_index=True
        )
    )
    _check_defined(condition_ids, small.get(Tables.conditions), C.condition)
    contraindications = small.get(Tables.contraindications)
    condition_codes, condition_ids = sorted_codes(
        condition_codes,
        condition_ids,
        contraindications[C.condition] if contraindications is not None else (),
    )
    rows: dict[str, Any] = {
        "patient": patient_codes[0],
        "treatment": treatment,
        "condition": take_codes(condition_codes[:n_outcome], outcomes["condition"], -1),
        **{name: outcomes[name] for name in OUTCOME_VALUES if name != "condition"},
    }
    if kept is not None:
        rows = {name: values[kept] for name, values in rows.items()}
    return CohortCodes(
        patient_ids=pd.Index(patient_ids),
        treatment_ids=treatment_ids,
        condition_ids=condition_ids,
        **rows,
        pc_patient=patient_codes[1] if pc else np.zeros(0, np.int32),
        pc_condition=condition_codes[n_outcome:][pc["condition"]] if pc else np.zeros(0, np.int32),
        table_patients=patient_codes[-1] if patients else None,
        sex=patients["sex"] if patients else None,
        birth_year=patients["birth_year"] if patients else None,
        contraindications=contraindications,
        interactions=small.get(Tables.interactions),
        treatments=small.get(Tables.treatments),
        conditions=small.get(Tables.conditions),
        pc_time=pc["time"] if pc else None,
        observations=observations,
        pair_order=pair_order,
    )


def _patient_codes(tables: list[dict]) -> tuple[pd.Index, list[np.ndarray]]:
    """Distinct patient ids in order of first appearance over the tables' rows, and each
    table's rows as codes into them (one factorisation of every table's dictionaries)."""
    codes, patient_ids = pd.factorize(
        pd.concat([t["patient_ids"] for t in tables], ignore_index=True)
    )
    codes = codes.astype(np.int32)
    parts, start = [], 0
    for table in tables:
        size = len(table["patient_ids"])
        parts.append(codes[start : start + size][table["patient"]])
        start += size
    if not _in_appearance_order(parts, len(patient_ids)):  # dictionaries out of row order
        used = pd.unique(np.concatenate(parts))
        renumber = np.empty(len(patient_ids), np.int32)
        renumber[used] = np.arange(len(used), dtype=np.int32)
        parts, patient_ids = [renumber[part] for part in parts], patient_ids[used]
    return patient_ids, parts


def _check_defined(ids: pd.Series, dictionary: pd.DataFrame | None, column: str) -> None:
    if dictionary is not None and not pd.Index(ids, dtype=object).isin(dictionary[column]).all():
        raise _Unsupported(f"a {column} is not defined in its dictionary table")


# --- the three large tables ----------------------------------------------------------------------


def _outcomes(source: _Source) -> dict:
    """Every column of the outcomes table as codes or numbers (exact duplicates not dropped)."""
    source.require(REQUIRED[Tables.outcomes])
    patient, patient_ids = _raw_ids(source.column(C.patient))
    treatment, treatment_ids = _ids(source.column(C.treatment))
    outcome = _outcome_numbers(source.column(C.outcome))
    n = len(outcome)
    timestamp = (
        _timestamps(source.column(C.timestamp)) if C.timestamp in source else np.full(n, NAT)
    )
    condition, condition_ids = (
        _optional_ids(source.column(C.condition))
        if C.condition in source
        else (np.full(n, -1, np.int32), pd.Series([], dtype=object))
    )
    adverse = _flags(source.column(C.adverse)) if C.adverse in source else np.zeros(n, np.int8)
    return {
        "patient": patient,
        "patient_ids": patient_ids,
        "treatment": treatment,
        "treatment_ids": treatment_ids,
        "outcome": outcome,
        "timestamp": timestamp,
        "condition": condition,
        "condition_ids": condition_ids,
        "adverse": adverse,
        "extra": [
            source.codes_as_read(name) for name in source.names if name not in OUTCOME_COLUMNS
        ],
    }


def _patient_conditions(source: _Source) -> dict:
    source.require(REQUIRED[Tables.patient_conditions])
    patient, patient_ids = _raw_ids(source.column(C.patient))
    condition, condition_ids = _ids(source.column(C.condition))
    return {
        "patient": patient,
        "patient_ids": patient_ids,
        "condition": condition,
        "condition_ids": condition_ids,
        "time": _timestamps(source.column(C.timestamp)) if C.timestamp in source else None,
    }


def _patients(source: _Source) -> dict:
    source.require(REQUIRED[Tables.patients])
    patient, patient_ids = _raw_ids(source.column(C.patient))
    sex = birth_year = None
    if C.sex in source:
        codes, values = _distinct(source.column(C.sex))
        sex = take_codes(text_values(values).to_numpy(object), codes, "")
    if C.birth_year in source:
        codes, values = _distinct(source.column(C.birth_year))
        _, years, bad = birth_year_values(values)
        if bad.any():
            raise _Unsupported("a birth year is not a year")
        birth_year = years.astype("Int64").array.take(codes, allow_fill=True)
    return {"patient": patient, "patient_ids": patient_ids, "sex": sex, "birth_year": birth_year}


# --- columns -------------------------------------------------------------------------------------


def _ids(column: pa.ChunkedArray) -> tuple[np.ndarray, pd.Series]:
    """Codes (int32) and distinct stripped ids of an id column."""
    codes, text = _raw_ids(column)
    merged, uniques = pd.factorize(text)
    return _used(take_codes(merged.astype(np.int32), codes, -1), pd.Series(uniques))


def _raw_ids(column: pa.ChunkedArray) -> tuple[np.ndarray, pd.Series]:
    """Codes (int32) into the stripped dictionary values of an id column (which may repeat)."""
    if pa.types.is_floating(column.type):
        raise _Unsupported("id column of numbers with a fraction")
    codes, values = _dictionary_codes(column)
    if len(codes) and codes.min() < 0:
        raise _Unsupported("missing id")
    text = text_values(values)
    if (text == "").any():
        raise _Unsupported("empty id")
    return codes, text


def _optional_ids(column: pa.ChunkedArray) -> tuple[np.ndarray, pd.Series]:
    """As :func:`_ids`, with -1 where the value is missing or blank (condition_id of outcomes)."""
    codes, values = _dictionary_codes(column)
    text = text_values(values)
    merged, uniques = pd.factorize(text.where(text != ""))
    return _used(take_codes(merged.astype(np.int32), codes, -1), pd.Series(uniques))


def _outcome_numbers(column: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_floating(column.type) or pa.types.is_integer(column.type):
        values = column.to_numpy().astype(np.float64)  # nulls are NaN and rejected below
        _refuse_negative_zero(values)
        codes, uniques = pd.factorize(values)
        numbers = outcome_values(pd.Series(uniques))
    else:
        codes, distinct = _distinct(column)
        numbers = outcome_values(distinct)
    if (
        np.isnan(numbers).any()
        or (numbers < -1).any()
        or (numbers > 1).any()
        or codes.min(initial=0) < 0
    ):
        raise _Unsupported("an outcome is not a number in [-1, 1] or a label")
    return numbers.astype(np.float32)[codes]


def _timestamps(column: pa.ChunkedArray) -> np.ndarray:
    if not _is_text(column.type):
        raise _Unsupported(f"timestamp column of type {column.type}")
    codes, values = _distinct(column)
    _, parsed, bad = timestamp_values(values)
    if bad.any():
        raise _Unsupported("a timestamp is not ISO-8601")
    nanoseconds = np.asarray(parsed.astype("datetime64[ns, UTC]").array.asi8, np.int64)
    return take_codes(nanoseconds, codes, NAT)  # a missing value is blank: unknown time


def _flags(column: pa.ChunkedArray) -> np.ndarray:
    codes, values = _distinct(column)
    _, mapped = flag_values(values)
    if mapped.isna().any():
        raise _Unsupported("a flag is not 0 or 1")
    return take_codes(mapped.to_numpy(np.int8), codes, 0)  # a missing value is blank: 0


def _distinct(column: pa.ChunkedArray) -> tuple[np.ndarray, pd.Series]:
    """(int32 code per row, -1 where null; the distinct non-null values as a pandas Series,
    each used by some row)."""
    codes, values = _dictionary_codes(column)
    merged, uniques = pd.factorize(values)
    return _used(take_codes(merged.astype(np.int32), codes, -1), pd.Series(uniques))


def _dictionary_codes(column: pa.ChunkedArray) -> tuple[np.ndarray, pd.Series]:
    """(int32 code per row, -1 where null; the values of the column's dictionaries, in order).

    Parquet gives one dictionary per row group, each listing its values in order of first
    appearance; a value seen in several row groups is listed once per group.
    """
    if not (
        _is_text(column.type)
        or pa.types.is_integer(column.type)
        or pa.types.is_floating(column.type)
        or pa.types.is_boolean(column.type)
    ):
        raise _Unsupported(f"column of type {column.type}")
    if pa.types.is_floating(column.type):
        _refuse_negative_zero(column.to_numpy())
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    chunks = [chunk for chunk in column.chunks if len(chunk)]
    if not chunks:
        return np.zeros(0, np.int32), pd.Series([], dtype=object)
    dictionaries: list[pa.Array] = []
    starts: dict[tuple, int] = {}
    offsets: list[int] = []
    for chunk in chunks:  # chunks of one row group (or one dictionary_encode) share a dictionary
        start = starts.get(_identity(chunk.dictionary))
        if start is None:
            start = starts[_identity(chunk.dictionary)] = sum(len(d) for d in dictionaries)
            dictionaries.append(chunk.dictionary)
        offsets.append(start)
    codes = np.concatenate(
        [
            (pc.fill_null(chunk.indices, -1) if chunk.null_count else chunk.indices).to_numpy()
            for chunk in chunks
        ]
    ).astype(np.int32, copy=False)
    if any(offsets):
        position = 0
        for chunk, start in zip(chunks, offsets):
            if start:
                segment = codes[position : position + len(chunk)]
                segment[segment >= 0] += np.int32(start)
            position += len(chunk)
    values = pa.concat_arrays(dictionaries) if len(dictionaries) > 1 else dictionaries[0]
    if pa.types.is_large_string(values.type) or pa.types.is_string(values.type):
        values = values.cast(pa.large_string())
    return codes, pd.Series(values.to_pandas())


def _used(codes: np.ndarray, values: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """Drop the values no row uses (a Parquet dictionary may hold unused categories)."""
    used = np.zeros(len(values) + 1, bool)
    used[codes] = True  # code -1 marks the extra last slot
    if used[:-1].all():
        return codes, values
    order = np.flatnonzero(used[:-1])
    renumber = np.full(len(values) + 1, -1, np.int32)
    renumber[order] = np.arange(len(order), dtype=np.int32)
    return renumber[codes], values.iloc[order].reset_index(drop=True)


def _in_appearance_order(parts: list[np.ndarray], n_values: int) -> bool:
    """Whether the codes of ``parts`` read one after the other number every value 0..n-1 in
    order of first appearance (each new code is one more than the largest so far)."""
    largest = -1
    for codes in parts:
        if not len(codes):
            continue
        running = np.maximum.accumulate(codes)
        np.maximum(running, largest, out=running)  # the largest code of the earlier parts
        if running[0] > largest + 1 or (np.diff(running) > 1).any():
            return False
        largest = int(running[-1])
    return largest == n_values - 1


def _drop_exact_duplicates(columns: list[np.ndarray]) -> tuple[np.ndarray | None, np.ndarray]:
    """(rows to keep, or None when every row is kept; the kept rows in a stable order by
    columns 0 and 1, as int32 positions among the kept rows).

    Only rows that share columns 0 and 1 (patient, treatment) can be equal; pandas'
    ``duplicated`` decides among those, so equality is the pandas reader's.
    """
    first, second = columns[0], columns[1]
    key = first.astype(np.int64)
    key *= int(second.max(initial=0)) + 1
    key += second
    order = np.argsort(key, kind="stable")
    del key
    head, last = group_edges(first[order], second[order])
    shared = ~(head & last)
    del head, last
    index = np.int32 if len(first) < 2**31 else np.int64
    if not shared.any():
        return None, order.astype(index)
    rows = np.sort(order[shared])
    duplicate = rows[
        pd.DataFrame({i: values[rows] for i, values in enumerate(columns)}).duplicated().to_numpy()
    ]
    if not len(duplicate):
        return None, order.astype(index)
    keep = np.ones(len(first), bool)
    keep[duplicate] = False
    position = np.cumsum(keep, dtype=index) - 1
    return keep, position[order[keep[order]]]


def _refuse_negative_zero(values: np.ndarray) -> None:
    """pandas finds -0.0 equal to 0.0, but their text (what the rules parse) differs."""
    if (np.signbit(values) & (values == 0)).any():
        raise _Unsupported("negative zero")


def _is_text(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _identity(array: pa.Array) -> tuple:
    """The buffers an array views (equal for chunks that share one dictionary)."""
    return (array.offset, len(array)) + tuple(
        None if buffer is None else buffer.address for buffer in array.buffers()
    )


# --- files ---------------------------------------------------------------------------------------


class _Source:
    """The columns of one table file, read on demand as pyarrow arrays.

    Parquet is read one column at a time (strings dictionary-encoded by the reader); CSV is
    parsed once with every column as dictionary-encoded strings, like ``pandas.read_csv`` with
    ``dtype=str, keep_default_na=False``.
    """

    def __init__(self, path: Path, table: str):
        self.path, self.table = path, table
        self._csv: pa.Table | None = None
        if path.suffix == ".parquet":
            check_parquet(path)
            schema = pq.read_schema(path)
            index = (schema.pandas_metadata or {}).get("index_columns", [])
            self.names = [name for name in schema.names if name not in index]
            self._types = {name: schema.field(name).type for name in self.names}
        else:
            self.names = _csv_header(path)
            limits = ReadLimits.from_env()
            with open_bounded(path, limits) as handle:
                self._csv = pacsv.read_csv(
                    handle,
                    read_options=pacsv.ReadOptions(column_names=self.names, skip_rows=1),
                    parse_options=pacsv.ParseOptions(newlines_in_values=True),
                    convert_options=pacsv.ConvertOptions(
                        column_types={
                            name: pa.dictionary(pa.int32(), pa.string()) for name in self.names
                        },
                        strings_can_be_null=False,
                        quoted_strings_can_be_null=False,
                    ),
                )
            limits.check_rows(self._csv.num_rows, path)
        if len(set(self.names)) != len(self.names) or any(not name for name in self.names):
            raise _Unsupported(f"{path.name}: repeated or empty column names")

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def require(self, columns) -> None:
        if any(column not in self for column in columns):
            raise _Unsupported(f"{self.path.name}: a required column is missing")

    def column(self, name: str) -> pa.ChunkedArray:
        if self._csv is not None:
            return self._csv.column(name)
        text = _is_text(self._types[name]) and not pa.types.is_dictionary(self._types[name])
        return pq.read_table(
            self.path, columns=[name], read_dictionary=[name] if text else None
        ).column(name)

    def codes_as_read(self, name: str) -> np.ndarray:
        """Codes of a column kept as it is, equal where pandas' ``duplicated`` finds it equal."""
        if self._csv is not None:  # strings, never missing
            return _distinct(self._csv.column(name))[0]
        return pd.factorize(pd.read_parquet(self.path, columns=[name])[name])[0]


def _csv_header(path: Path) -> list[str]:
    """Column names of a CSV file, from its first line (BOM removed as pandas does)."""
    with io.TextIOWrapper(open_bounded(path), encoding="utf-8-sig", newline="") as handle:
        line = handle.readline(1 << 20)  # a header line longer than a MiB is not one
    if '"' in line or "\r" in line.rstrip("\r\n"):
        raise _Unsupported(f"{path.name}: quoted header")
    return next(csv.reader([line]), [])
