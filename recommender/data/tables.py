"""Read, validate and write the canonical tables of a data folder (schema: ``data/README.md``).

A folder holds one file per table, named after the table; the extension decides the reader:
``outcomes.csv``, ``outcomes.csv.gz`` or ``outcomes.parquet``. Only ``outcomes`` is required.
Every problem is reported as a :class:`~recommender.exceptions.DataValidationError` naming the
file, the 1-based data row (header excluded) and the column.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from ..columns import OUTCOME_LABELS, TABLE_EXTENSIONS, Columns, Tables
from ..exceptions import DataValidationError
from ..utils.fileutil import atomic_dir
from ..utils.limits import ReadLimits, check_parquet, read_text_csv
from .ingredients import join_ingredients, parse_ingredients

log = logging.getLogger(__name__)

C = Columns

#: Required columns of each table; other columns are kept as they are.
REQUIRED = {
    Tables.outcomes: (C.patient, C.treatment, C.outcome),
    Tables.patients: (C.patient,),
    Tables.patient_conditions: (C.patient, C.condition),
    Tables.contraindications: (C.treatment, C.condition),
    Tables.interactions: (C.treatment_a, C.treatment_b, C.severity),
    Tables.treatments: (C.treatment, "name"),
    Tables.conditions: (C.condition, "name"),
    Tables.observations: (C.patient, C.code, C.value),
}
#: Id columns of each table: read as strings, must not be empty.
ID_COLUMNS = {
    Tables.outcomes: (C.patient, C.treatment),
    Tables.patients: (C.patient,),
    Tables.patient_conditions: (C.patient, C.condition),
    Tables.contraindications: (C.treatment, C.condition),
    Tables.interactions: (C.treatment_a, C.treatment_b),
    Tables.treatments: (C.treatment,),
    Tables.conditions: (C.condition,),
    Tables.observations: (C.patient, C.code),
}
SEVERITIES = ("severe", "moderate", "minor")
#: Optional column of the treatments table: its ";"-separated ingredient ids.
INGREDIENTS = "ingredients"


@dataclass
class CohortTables:
    """The canonical tables of one cohort, validated and normalised.

    ``outcomes`` always has the columns patient_id (str), treatment_id (str), outcome (float32 in
    [-1, 1]), timestamp (datetime64[ns, UTC], NaT when unknown), condition_id (str or None) and
    adverse (int8 0/1), in file order. ``patient_conditions`` has a ``timestamp`` column (onset,
    NaT when unknown) and one row per (patient, condition), the earliest onset kept;
    ``observations`` has patient_id, code (str), value (float64), unit (str, "" when absent) and
    timestamp (NaT when unknown), in file order. The other tables are None when absent.
    """

    outcomes: pd.DataFrame
    patients: pd.DataFrame | None = None
    patient_conditions: pd.DataFrame | None = None
    contraindications: pd.DataFrame | None = None
    interactions: pd.DataFrame | None = None
    treatments: pd.DataFrame | None = None
    conditions: pd.DataFrame | None = None
    observations: pd.DataFrame | None = None
    fingerprint: str = field(default="", compare=False)

    def items(self):
        """(table name, DataFrame) pairs of the tables present."""
        return [
            (f.name, getattr(self, f.name))
            for f in fields(self)
            if f.name != "fingerprint" and getattr(self, f.name) is not None
        ]

    def replace(self, **tables: pd.DataFrame | None) -> CohortTables:
        """A copy with some tables replaced (the fingerprint is recomputed from the content)."""
        values = {name: df for name, df in self.items()}
        values.update(tables)
        return CohortTables(**values, fingerprint=fingerprint_frames(values))


def find_table(folder: Path, table: str) -> Path | None:
    """The file holding ``table`` in ``folder``, or None. Two files for one table is an error."""
    found = [
        folder / f"{table}{ext}" for ext in TABLE_EXTENSIONS if (folder / f"{table}{ext}").is_file()
    ]
    if len(found) > 1:
        raise DataValidationError(
            f"two files hold the table '{table}': {[p.name for p in found]}; keep one",
            file=str(folder),
        )
    return found[0] if found else None


def read_tables(folder: str | Path) -> CohortTables:
    """Read and validate every canonical table in ``folder``.

    Raises
    ------
    DataValidationError
        If the folder or the ``outcomes`` table is missing, or any table breaks the schema.
    """
    folder = Path(folder)
    check_folder(folder)
    paths = table_files(folder)
    frames = {table: read_file(path, table) for table, path in paths.items()}
    tables = _validate(frames, {t: str(path) for t, path in paths.items()}, fingerprint=False)
    tables.fingerprint = fingerprint_files(paths)
    return tables


def check_folder(folder: Path) -> None:
    """Raise DataValidationError unless ``folder`` is a folder holding an outcomes table."""
    if not folder.is_dir():
        raise DataValidationError(
            "is not a folder of canonical tables (expected outcomes.csv, "
            "outcomes.csv.gz or outcomes.parquet inside)",
            file=str(folder),
        )
    if find_table(folder, Tables.outcomes) is None:
        raise DataValidationError(
            "no outcomes table: expected outcomes.csv, outcomes.csv.gz or outcomes.parquet",
            file=str(folder),
        )


def table_files(folder: Path) -> dict[str, Path]:
    """table name -> file, for the canonical tables present in ``folder`` (in Tables.all order)."""
    found = {table: find_table(folder, table) for table in Tables.all}
    return {table: path for table, path in found.items() if path is not None}


def fingerprint_files(paths: Mapping[str, Path]) -> str:
    """SHA-256 over table name + file bytes of each table file, in Tables.all order."""
    digest = hashlib.sha256()
    for table, path in paths.items():
        digest.update(table.encode())
        with open(path, "rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def validate_tables(
    frames: Mapping[str, pd.DataFrame], files: Mapping[str, str] | None = None
) -> CohortTables:
    """Validate and normalise raw tables (all columns as read) into :class:`CohortTables`."""
    return _validate(frames, files)


def _validate(
    frames: Mapping[str, pd.DataFrame],
    files: Mapping[str, str] | None = None,
    fingerprint: bool = True,
) -> CohortTables:
    """:func:`validate_tables`; the content fingerprint is skipped when the caller sets its own."""
    files = dict(files or {})
    if Tables.outcomes not in frames:
        raise DataValidationError("the outcomes table is required")
    clean = {}
    for table, frame in frames.items():
        if table not in REQUIRED:
            raise DataValidationError(f"unknown table '{table}'; expected one of {list(REQUIRED)}")
        clean[table] = clean_table(frame, table, files.get(table, table))
    clean[Tables.outcomes] = _normalise_outcomes(
        clean[Tables.outcomes], files.get(Tables.outcomes, Tables.outcomes)
    )
    if Tables.patient_conditions in clean:
        clean[Tables.patient_conditions] = _normalise_patient_conditions(
            clean[Tables.patient_conditions],
            files.get(Tables.patient_conditions, Tables.patient_conditions),
        )
    if Tables.observations in clean:
        clean[Tables.observations] = normalise_observations(
            clean[Tables.observations], files.get(Tables.observations, Tables.observations)
        )
    if Tables.patients in clean:
        clean[Tables.patients] = _normalise_patients(
            clean[Tables.patients], files.get(Tables.patients, Tables.patients)
        )
    if Tables.interactions in clean:
        check_severity(
            clean[Tables.interactions], files.get(Tables.interactions, Tables.interactions)
        )
    if Tables.treatments in clean:
        check_ingredients(clean[Tables.treatments], files.get(Tables.treatments, Tables.treatments))
    _check_references(clean, files)
    return CohortTables(**clean, fingerprint=fingerprint_frames(clean) if fingerprint else "")


def write_tables(
    tables: CohortTables | Mapping[str, pd.DataFrame], folder: str | Path, file_format: str = "csv"
) -> Path:
    """Write tables to ``folder`` atomically (a temporary folder renamed into place).

    Parameters
    ----------
    tables : CohortTables or mapping of table name -> DataFrame
    folder : path
        Replaced whole if it exists.
    file_format : {"csv", "parquet"}
    """
    if file_format not in ("csv", "parquet"):
        raise ValueError(f"file_format must be 'csv' or 'parquet', got {file_format!r}")
    items = tables.items() if isinstance(tables, CohortTables) else tables.items()
    with atomic_dir(folder) as tmp:
        for table, frame in items:
            frame = frame.copy()
            if C.timestamp in frame and pd.api.types.is_datetime64_any_dtype(frame[C.timestamp]):
                frame[C.timestamp] = frame[C.timestamp].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
            if file_format == "csv":
                frame.to_csv(tmp / f"{table}.csv", index=False)
            else:
                frame.to_parquet(tmp / f"{table}.parquet", index=False)
    return Path(folder)


def fingerprint_frames(frames: Mapping[str, pd.DataFrame]) -> str:
    """SHA-256 over the content of in-memory tables (for data not read from files)."""
    digest = hashlib.sha256()
    for table in sorted(frames):
        frame = frames[table]
        if frame is not None:
            digest.update(table.encode())
            digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


# --- reading -----------------------------------------------------------------------------------


def read_file(path: Path, table: str) -> pd.DataFrame:
    """One table file as read before validation (id columns as strings), within the read
    limits (:mod:`recommender.utils.limits`)."""
    limits = ReadLimits.from_env()
    try:
        if path.suffix == ".parquet":
            check_parquet(path, limits)
            frame = pd.read_parquet(path)
            for column in ID_COLUMNS[table]:
                if column in frame:
                    frame[column] = frame[column].astype("string").fillna("").astype(object)
            return frame
        return read_text_csv(path, limits)
    except DataValidationError:
        raise
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataValidationError(f"cannot be read as a table: {exc}", file=str(path)) from None


def clean_table(frame: pd.DataFrame, table: str, name: str) -> pd.DataFrame:
    """``frame`` with its required columns checked and its id columns stripped (first step of
    :func:`validate_tables` for every table; ``name`` is the file named in errors)."""
    _check_columns(frame, table, name)
    frame = frame.reset_index(drop=True)
    for column in ID_COLUMNS[table]:
        frame[column] = _clean_ids(frame[column], name, column)
    return frame


def _check_columns(frame: pd.DataFrame, table: str, name: str) -> None:
    missing = [c for c in REQUIRED[table] if c not in frame.columns]
    if missing:
        raise DataValidationError(
            f"missing required column(s) {missing}; the {table} table needs "
            f"{list(REQUIRED[table])} (found {list(frame.columns)})",
            file=name,
            column=missing[0],
        )


def _first_bad(mask: np.ndarray) -> int:
    """1-based data row number of the first True in ``mask``."""
    return int(np.flatnonzero(mask)[0]) + 1


def text_values(values: pd.Series) -> pd.Series:
    """Values as stripped strings, "" where missing (how every id and text column is read)."""
    return values.astype("string").fillna("").str.strip()


def _clean_ids(values: pd.Series, name: str, column: str) -> pd.Series:
    text = text_values(values)
    empty = (text == "").to_numpy()
    if empty.any():
        raise DataValidationError(
            "empty id; every row needs a non-empty id",
            file=name,
            row=_first_bad(empty),
            column=column,
        )
    return text.astype(object)


def outcome_values(values: pd.Series) -> np.ndarray:
    """Outcome numbers (float64) of labels or numbers, NaN where a value is neither."""
    text = values.astype("string").fillna("").str.strip().str.lower()
    mapped = text.map(OUTCOME_LABELS)
    numeric = pd.to_numeric(text.where(mapped.isna()), errors="coerce")
    return mapped.fillna(numeric).astype(float).to_numpy()


def parse_outcomes(values: pd.Series, name: str = Tables.outcomes) -> np.ndarray:
    """Outcome numbers (float32) from numbers in [-1, 1] or the labels in ``OUTCOME_LABELS``."""
    result = outcome_values(values)
    bad = np.isnan(result)
    if bad.any():
        row = _first_bad(bad)
        raise DataValidationError(
            f"outcome {values.iloc[row - 1]!r} is neither a number in [-1, 1] nor one of the labels "
            f"{list(OUTCOME_LABELS)}",
            file=name,
            row=row,
            column=C.outcome,
        )
    out_of_range = (result < -1) | (result > 1)
    if out_of_range.any():
        row = _first_bad(out_of_range)
        raise DataValidationError(
            f"outcome {result[row - 1]:g} is outside [-1, 1]", file=name, row=row, column=C.outcome
        )
    return result.astype(np.float32)


def timestamp_values(values: pd.Series) -> tuple[pd.Series, pd.Series, np.ndarray]:
    """(stripped text, parsed UTC times with NaT where blank or unparseable, unparseable mask)."""
    text = text_values(values)
    blank = (text == "").to_numpy()
    parsed = pd.to_datetime(text.where(~blank), errors="coerce", utc=True, format="ISO8601")
    return text, parsed, parsed.isna().to_numpy() & ~blank


def _parse_timestamps(values: pd.Series, name: str) -> pd.Series:
    text, parsed, bad = timestamp_values(values)
    if bad.any():
        row = _first_bad(bad)
        raise DataValidationError(
            f"timestamp {text.iloc[row - 1]!r} is not an ISO-8601 date or "
            "date-time (e.g. 2021-03-04 or 2021-03-04T10:00:00Z)",
            file=name,
            row=row,
            column=C.timestamp,
        )
    return parsed.astype("datetime64[ns, UTC]")


def flag_values(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(lower-cased stripped text, 0/1 flags with NaN where a value is not a flag)."""
    text = values.astype("string").fillna("").str.strip().str.lower()
    mapping = {"": 0, "0": 0, "1": 1, "false": 0, "true": 1, "0.0": 0, "1.0": 1}
    return text, text.map(mapping)


def _parse_flag(values: pd.Series, name: str, column: str) -> np.ndarray:
    text, mapped = flag_values(values)
    bad = mapped.isna().to_numpy()
    if bad.any():
        row = _first_bad(bad)
        raise DataValidationError(
            f"value {text.iloc[row - 1]!r} is not 0 or 1", file=name, row=row, column=column
        )
    return mapped.to_numpy().astype(np.int8)


def _normalise_outcomes(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            C.patient: frame[C.patient],
            C.treatment: frame[C.treatment],
            C.outcome: parse_outcomes(frame[C.outcome], name),
        }
    )
    out[C.timestamp] = (
        _parse_timestamps(frame[C.timestamp], name)
        if C.timestamp in frame
        else pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
    )
    if C.condition in frame:
        condition = text_values(frame[C.condition]).astype(object)
        out[C.condition] = condition.where(condition != "", None)
    else:
        out[C.condition] = None
    out[C.adverse] = (
        _parse_flag(frame[C.adverse], name, C.adverse)
        if C.adverse in frame
        else np.zeros(len(frame), dtype=np.int8)
    )
    for column in frame.columns:
        if column not in out:
            out[column] = frame[column]
    before = len(out)
    out = out.drop_duplicates().reset_index(drop=True)
    if len(out) < before:
        log.info("%s: dropped %d exact duplicate row(s)", name, before - len(out))
    return out


def _normalise_patient_conditions(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """One row per (patient, condition) with its onset: the earliest known ``timestamp``
    (NaT when no row of the pair has one, or the column is absent)."""
    frame = frame.copy()
    frame[C.timestamp] = (
        _parse_timestamps(frame[C.timestamp], name)
        if C.timestamp in frame
        else pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
    )
    if frame[C.timestamp].notna().any():  # the first row of each pair, with its earliest onset
        earliest = frame.groupby([C.patient, C.condition], sort=False)[C.timestamp].transform("min")
        frame[C.timestamp] = earliest
    return frame.drop_duplicates([C.patient, C.condition]).reset_index(drop=True)


def normalise_observations(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """patient_id, code, value (finite float64), unit ("" when absent), timestamp, and any other
    column as read; exact duplicate rows dropped."""
    text = text_values(frame[C.value])
    values = pd.to_numeric(text.where(text != ""), errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        row = _first_bad(bad)
        raise DataValidationError(
            f"value {text.iloc[row - 1]!r} is not a finite number (an observation's value is "
            "numeric, e.g. 62.5; leave text results out of this table)",
            file=name,
            row=row,
            column=C.value,
        )
    out = pd.DataFrame({C.patient: frame[C.patient], C.code: frame[C.code], C.value: values})
    out[C.unit] = text_values(frame[C.unit]).astype(object) if C.unit in frame else ""
    out[C.timestamp] = (
        _parse_timestamps(frame[C.timestamp], name)
        if C.timestamp in frame
        else pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
    )
    for column in frame.columns:
        if column not in out:
            out[column] = frame[column]
    return out.drop_duplicates().reset_index(drop=True)


def birth_year_values(values: pd.Series) -> tuple[pd.Series, pd.Series, np.ndarray]:
    """(stripped text, numbers with NaN where blank or not a number, mask of bad values)."""
    text = text_values(values)
    years = pd.to_numeric(text.where(text != ""), errors="coerce")
    out_of_range = ((years < 1850) | (years > 2100)).fillna(False).to_numpy(dtype=bool)
    return text, years, (years.isna() & (text != "")).to_numpy(dtype=bool) | out_of_range


def _normalise_patients(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    dupes = frame[C.patient].duplicated().to_numpy()
    if dupes.any():
        row = _first_bad(dupes)
        raise DataValidationError(
            f"patient {frame[C.patient].iloc[row - 1]!r} is listed twice; "
            "each patient needs exactly one row",
            file=name,
            row=row,
            column=C.patient,
        )
    frame = frame.copy()
    if C.birth_year in frame:
        text, years, bad = birth_year_values(frame[C.birth_year])
        if bad.any():
            row = _first_bad(bad)
            raise DataValidationError(
                f"birth_year {text.iloc[row - 1]!r} is not a year between 1850 and 2100",
                file=name,
                row=row,
                column=C.birth_year,
            )
        frame[C.birth_year] = years.astype("Int64")
    for column in frame.columns:
        if column not in (C.patient, C.birth_year):
            frame[column] = text_values(frame[column]).astype(object)
    return frame


def check_severity(frame: pd.DataFrame, name: str) -> None:
    severity = frame[C.severity].astype("string").fillna("").str.strip().str.lower()
    bad = (~severity.isin(SEVERITIES)).to_numpy()
    if bad.any():
        row = _first_bad(bad)
        raise DataValidationError(
            f"severity {frame[C.severity].iloc[row - 1]!r} is not one of {list(SEVERITIES)}",
            file=name,
            row=row,
            column=C.severity,
        )
    frame[C.severity] = severity.astype(object)


def check_ingredients(frame: pd.DataFrame, name: str) -> None:
    """Validate and normalise, in place, the optional ``ingredients`` column of a treatments
    table: ";"-separated ingredient ids (blank: the treatment is its own ingredient)."""
    if INGREDIENTS not in frame:
        return
    text = text_values(frame[INGREDIENTS])
    values = []
    for row, value in enumerate(text.tolist(), start=1):
        try:
            values.append(join_ingredients(parse_ingredients(value)))
        except ValueError as exc:
            raise DataValidationError(
                f"{exc}; write ingredient ids such as drug|hydrochlorothiazide separated by "
                "';', or leave the cell blank for a treatment that is its own ingredient",
                file=name,
                row=row,
                column=INGREDIENTS,
            ) from None
    frame[INGREDIENTS] = pd.Series(values, index=frame.index, dtype=object)


def _check_references(clean: Mapping[str, pd.DataFrame], files: Mapping[str, str]) -> None:
    """Ids used by one table must be defined by the table that defines them, when it is present."""
    checks = [
        (Tables.patients, C.patient, Tables.outcomes, C.patient),
        (Tables.patients, C.patient, Tables.patient_conditions, C.patient),
        (Tables.patients, C.patient, Tables.observations, C.patient),
        (Tables.treatments, C.treatment, Tables.outcomes, C.treatment),
        (Tables.conditions, C.condition, Tables.outcomes, C.condition),
        (Tables.conditions, C.condition, Tables.patient_conditions, C.condition),
    ]
    for defining, key, using, column in checks:
        if defining not in clean or using not in clean:
            continue
        values = clean[using][column]
        known = values.isna().to_numpy() | values.isin(set(clean[defining][key])).to_numpy()
        if not known.all():
            row = _first_bad(~known)
            raise DataValidationError(
                f"{key.removesuffix('_id')} {values.iloc[row - 1]!r} is not defined in the "
                f"{defining} table ({files.get(defining, defining)})",
                file=files.get(using, using),
                row=row,
                column=column,
            )
