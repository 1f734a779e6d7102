"""Helpers shared by the importers: reading source CSVs, code ids, dates and the output write.

Code ids keep their code system as a prefix, ``system|code``; the prefixes are the keys of
:data:`SYSTEM_URLS` (``rxnorm``, ``snomed``, ``icd9``, ``icd10``, ``ndc``, ``loinc`` ...), the same in
every importer, and of :data:`LOCAL_SYSTEMS` (systems the importers name themselves, with no URI:
``drug``, ``text``, ``mimic-lab``, ``mimic-omr``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ..columns import Columns, Tables
from ..data.ingredients import ingredient_ids, join_ingredients, known_names
from ..data.tables import INGREDIENTS, validate_tables
from ..exceptions import DataValidationError
from ..utils.fileutil import atomic_dir
from ..utils.limits import ReadLimits, open_bounded, read_text_csv
from .report import ImportReport

log = logging.getLogger(__name__)

C = Columns

#: Code-system prefix -> the URIs (FHIR ``system`` values and common variants) that mean it.
SYSTEM_URLS: dict[str, tuple[str, ...]] = {
    "rxnorm": ("http://www.nlm.nih.gov/research/umls/rxnorm",),
    "snomed": ("http://snomed.info/sct", "snomed-ct", "snomed ct", "sct"),
    "icd10": (
        "http://hl7.org/fhir/sid/icd-10",
        "http://hl7.org/fhir/sid/icd-10-cm",
        "http://www.cms.gov/medicare/coding/icd10",
        "icd-10",
        "icd-10-cm",
    ),
    "icd9": (
        "http://hl7.org/fhir/sid/icd-9-cm",
        "http://hl7.org/fhir/sid/icd-9",
        "icd-9",
        "icd-9-cm",
    ),
    "ndc": ("http://hl7.org/fhir/sid/ndc",),
    "loinc": ("http://loinc.org",),
    "cpt": ("http://www.ama-assn.org/go/cpt",),
    "atc": ("http://www.whocc.no/atc",),
    "cvx": ("http://hl7.org/fhir/sid/cvx",),
}
#: Code-system prefixes named by the importers themselves (no URI; not resolved by
#: :func:`system_prefix`, not written back as FHIR codings) -> what the code is.
LOCAL_SYSTEMS: dict[str, str] = {
    "drug": "MIMIC prescriptions: the normalised drug name (mimic.normalise_drug)",
    "text": "FHIR: a concept with text and no coding, the lower-cased text",
    "mimic-lab": "MIMIC labevents: the d_labitems itemid (when d_labitems gives no LOINC code)",
    "mimic-omr": "MIMIC-IV omr: the result_name slug (mimic.omr_code), e.g. weight-lbs",
}
_BY_URL = {url.lower(): prefix for prefix, urls in SYSTEM_URLS.items() for url in urls}
_BY_URL.update({prefix: prefix for prefix in SYSTEM_URLS})


def system_prefix(system: str | None) -> str | None:
    """The prefix for a code-system URI or name (``http://snomed.info/sct`` -> ``snomed``).

    None when the system is empty or unknown.
    """
    if not system:
        return None
    return _BY_URL.get(system.strip().rstrip("/").lower())


def strip_float_suffix(codes: pd.Series) -> pd.Series:
    """Codes as text without a float-written ``.0`` (``"10509002.0"`` -> ``"10509002"``)."""
    return codes.astype(str).str.strip().str.replace(r"\.0+$", "", regex=True)


def code_ids(system: str, codes: pd.Series) -> pd.Series:
    """``system|code`` for every non-empty code; None where the code is empty."""
    text = strip_float_suffix(codes.fillna(""))
    return (f"{system}|" + text).where(text != "", None).astype(object)


def find_file(folder: Path, stem: str) -> Path | None:
    """``stem.csv`` or ``stem.csv.gz`` in ``folder``, matching the name case-insensitively."""
    wanted = {f"{stem}.csv".lower(), f"{stem}.csv.gz".lower()}
    matches = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower() in wanted)
    return matches[0] if matches else None


def read_header(path: Path) -> list[str]:
    """The column names of a source CSV (plain or gzip), read within the byte limits."""
    try:
        with open_bounded(path) as handle:
            return list(pd.read_csv(handle, nrows=0, compression=None).columns)
    except DataValidationError:
        raise
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataValidationError(f"cannot be read as CSV: {exc}", file=str(path)) from None


def read_csv(
    path: Path, report: ImportReport, label: str, *, columns: tuple[str, ...] = (), usecols=None
) -> pd.DataFrame:
    """Read a source CSV (plain or gzip, decompressed as a stream) as text; empty cells become "".

    Reading stops at the read limits (:mod:`recommender.utils.limits`: decompressed bytes,
    compression ratio, rows), with an error naming the file. Column names are kept as written. ``columns`` lists the ones the importer needs; a missing
    one raises.

    Raises
    ------
    DataValidationError
        If the file cannot be parsed, is beyond a read limit or lacks a required column.
    """
    limits = ReadLimits.from_env()
    try:
        frame = read_text_csv(path, limits, usecols)
    except DataValidationError:
        raise
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataValidationError(f"cannot be read as CSV: {exc}", file=str(path)) from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataValidationError(
            f"missing column(s) {missing}; the {label} table needs "
            f"{list(columns)} (found {list(frame.columns)})",
            file=str(path),
            column=missing[0],
        )
    report.read(label, len(frame))
    return frame


def parse_times(values: pd.Series, report: ImportReport, where: str) -> pd.Series:
    """ISO-8601 dates or date-times as UTC timestamps; blank -> NaT.

    Naive values are taken as UTC. Values that do not parse become NaT and are counted as a
    warning naming ``where``.
    """
    text = values.astype(str).str.strip()
    blank = text.isin(["", "nan", "NaT", "None"])
    parsed = pd.to_datetime(text.where(~blank), errors="coerce", utc=True, format="ISO8601")
    bad = parsed.isna() & ~blank
    if bad.any():
        report.warn(
            f"{where}: {int(bad.sum())} value(s) are not ISO-8601 dates, e.g. "
            f"{text[bad].iloc[0]!r}; treated as unknown"
        )
    return parsed.astype("datetime64[ns, UTC]")


def iso(times: pd.Series) -> pd.Series:
    """UTC timestamps as ``YYYY-MM-DDTHH:MM:SSZ`` text ("" for NaT)."""
    return times.dt.strftime("%Y-%m-%dT%H:%M:%SZ").fillna("").astype(object)


_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PARTIAL_DATE = re.compile(r"^\d{4}(-\d{2})?$")


def time_texts(values: pd.Series, times: pd.Series | None = None) -> pd.Series:
    """Times written as precisely as the source gave them ("" where unknown or unparseable).

    A date stays a date (``2021-03-04``: the day, no time invented), a year or year-month (FHIR
    partial dates) stays as written, a date-time becomes ``YYYY-MM-DDTHH:MM:SSZ`` in UTC (naive
    values are UTC; an offset is converted, the instant kept). ``times`` are the values already
    parsed by :func:`parse_times` (parsed here when not given).
    """
    text = values.astype(str).str.strip()
    if times is None:
        times = pd.to_datetime(
            text.where(~text.isin(["", "nan", "NaT", "None"])),
            errors="coerce",
            utc=True,
            format="ISO8601",
        )
    out = iso(times)
    day_only = text.str.match(_DATE_ONLY) & times.notna()
    out[day_only] = times[day_only].dt.strftime("%Y-%m-%d")
    partial = text.str.match(_PARTIAL_DATE) & times.notna()
    out[partial] = text[partial]
    return out.astype(object)


# --- demographics ------------------------------------------------------------------------------

#: Words of a race text -> the race written (the first match wins).
RACE_WORDS = (
    ("white", "white"),
    ("portuguese", "white"),
    ("black", "black"),
    ("asian", "asian"),
    ("american indian", "native"),
    ("alaska", "native"),
    ("pacific", "pacific"),
    ("hawaiian", "pacific"),
)
#: Words of a race text that mean it is unknown.
UNKNOWN_RACE_WORDS = ("unknown", "unable", "declined", "not specified")


def race_and_ethnicity(text: str) -> tuple[str, str]:
    """(race, ethnicity) of a free-text race such as MIMIC's ``race`` / ``ethnicity`` column.

    race is one of white, black, asian, native, pacific, other, unknown; ethnicity hispanic,
    nonhispanic or unknown.

    >>> race_and_ethnicity("HISPANIC/LATINO - PUERTO RICAN"), race_and_ethnicity("WHITE")
    (('unknown', 'hispanic'), ('white', 'nonhispanic'))
    >>> race_and_ethnicity("UNABLE TO OBTAIN"), race_and_ethnicity("OTHER")
    (('unknown', 'unknown'), ('other', 'nonhispanic'))
    """
    lower = text.lower()
    if not lower or any(word in lower for word in UNKNOWN_RACE_WORDS):
        return "unknown", "unknown"
    hispanic = "hispanic" in lower or "latino" in lower
    race = next(
        (race for key, race in RACE_WORDS if key in lower), "unknown" if hispanic else "other"
    )
    return race, "hispanic" if hispanic else "nonhispanic"


# --- observations ------------------------------------------------------------------------------

#: Reasons a result value is not kept as a number (counted under ``dropped``).
NO_VALUE = "no value"
CENSORED = "censored value such as <5 or >300 (a bound, not a measurement)"
COMMA = "comma in the value (decimal comma or thousands separator: ambiguous)"
NOT_NUMERIC = "not numeric (text result)"
#: Columns of the observations table the importers write.
OBSERVATION_COLUMNS = (C.patient, C.code, C.value, C.unit, C.timestamp)

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_PLAIN = re.compile(rf"^{_NUMBER}$")
_BOUND = re.compile(rf"^(?:<=|>=|<|>|\u2264|\u2265)\s*{_NUMBER}$")
_WITH_COMMA = re.compile(r"^[+-]?[\d.]*\d,[\d,.]*$")


def numeric_values(values: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """(numbers, problem) of result texts, by the rule of the importers' README.

    A plain decimal number (``62``, ``-0.5``, ``.5``, ``1e3``, surrounding spaces ignored) is kept:
    its problem is "". Anything else gets NaN and the reason: blank -> :data:`NO_VALUE`; a
    comparator and a number (``<5``, ``> 300``, ``>=1.035``) -> :data:`CENSORED`; digits with a
    comma (``1,234``, ``3,5``) -> :data:`COMMA`, never guessed; any other text, or a number that
    is not finite -> :data:`NOT_NUMERIC`.
    """
    text = values.astype("string").fillna("").str.strip()
    plain = text.str.match(_PLAIN).to_numpy(dtype=bool)
    numbers = np.full(len(text), np.nan)
    if plain.any():
        numbers[plain] = text[plain].astype(float).to_numpy()
    ok = plain & np.isfinite(numbers)
    numbers[~ok] = np.nan
    problem = np.select(
        [
            ok,
            (text == "").to_numpy(dtype=bool),
            text.str.match(_BOUND).to_numpy(dtype=bool),
            text.str.match(_WITH_COMMA).to_numpy(dtype=bool),
        ],
        ["", NO_VALUE, CENSORED, COMMA],
        default=NOT_NUMERIC,
    )
    return numbers, pd.Series(problem, index=values.index, dtype=object)


def observation_table(
    rows: pd.DataFrame, known: set | None, report: ImportReport, source: str
) -> pd.DataFrame:
    """The observations of one source table, each row kept or dropped with its reason.

    ``rows`` has patient, code, value (float), unit, time (the time text as read) and problem
    ("" or the reason the caller already found: no or unknown code, a value that is not a
    number ...). A row is dropped, counted as ``observations (<source>): <reason>``, for the
    first of: no patient; the caller's problem; no time, a time that is not ISO-8601, or one
    coarser than a day (a year or year-month); a patient not among the imported ones (when
    ``known`` is given); an exact duplicate of a kept row. Returns the columns of
    :data:`OBSERVATION_COLUMNS` (timestamp as :func:`time_texts` writes it), sorted by patient
    and time, and records the rows kept and distinct codes under ``derived``.
    """
    patient = rows["patient"].astype("string").fillna("").str.strip()
    raw_time = rows["time"].astype("string").fillna("").str.strip()
    times = pd.to_datetime(
        raw_time.where(raw_time != ""), errors="coerce", utc=True, format="ISO8601"
    ).astype("datetime64[ns, UTC]")
    problem = rows["problem"].fillna("").astype(str).to_numpy(dtype=object)
    checks = [
        ((patient == "").to_numpy(dtype=bool), "no patient"),
        (problem != "", None),
        ((raw_time == "").to_numpy(dtype=bool), "no time"),
        (times.isna().to_numpy(dtype=bool), "time is not ISO-8601"),
        (raw_time.str.match(_PARTIAL_DATE).to_numpy(dtype=bool), "time coarser than a day"),
    ]
    if known is not None:
        checks.append(
            (~patient.isin(known).to_numpy(dtype=bool), "patient not among the imported patients")
        )
    dropped = np.zeros(len(rows), dtype=bool)
    for mask, reason in checks:
        new = mask & ~dropped
        if reason is None:
            for why, count in pd.Series(problem[new]).value_counts().items():
                report.drop(f"observations ({source}): {why}", int(count))
        else:
            report.drop(f"observations ({source}): {reason}", int(new.sum()))
        dropped |= mask
    keep = ~dropped
    out = pd.DataFrame(
        {
            C.patient: patient[keep].astype(object).to_numpy(),
            C.code: rows["code"][keep].to_numpy(),
            C.value: rows["value"][keep].astype(float).to_numpy(),
            C.unit: rows["unit"][keep].astype("string").fillna("").str.strip().to_numpy(),
            C.timestamp: time_texts(raw_time[keep], times[keep]).to_numpy(),
            "_time": times[keep].to_numpy(),
        }
    )
    dupes = out.duplicated(list(OBSERVATION_COLUMNS))
    report.drop(f"observations ({source}): exact duplicate row", int(dupes.sum()))
    out = out[~dupes].sort_values([C.patient, "_time"], kind="stable").drop(columns="_time")
    report.count(f"observations kept ({source})", len(out))
    report.count(f"observation codes ({source})", int(out[C.code].nunique()))
    return out.reset_index(drop=True)


def empty_observations() -> pd.DataFrame:
    """An observations table without rows (what an importer writes when its source has none)."""
    return pd.DataFrame({column: pd.Series([], dtype=object) for column in OBSERVATION_COLUMNS})


def dictionary(
    ids: pd.Series, names: pd.Series, id_column: str, used: set | None = None
) -> pd.DataFrame:
    """One row per id with its most frequent non-empty name (the id itself when it has none).

    With ``used``, only those ids are listed.
    """
    frame = pd.DataFrame({id_column: ids, "name": names.fillna("").astype(str).str.strip()})
    frame = frame[frame[id_column].notna()]
    if used is not None:
        frame = frame[frame[id_column].isin(used)]
    named = frame[frame["name"] != ""]
    best = (
        named.groupby([id_column, "name"])
        .size()
        .rename("n")
        .reset_index()
        .sort_values([id_column, "n", "name"], ascending=[True, False, True])
        .drop_duplicates(id_column)
        .set_index(id_column)["name"]
    )
    unique = pd.Series(sorted(frame[id_column].unique()), dtype=object)
    named = unique.map(best).astype(object)
    return pd.DataFrame({id_column: unique, "name": named.where(named.notna(), unique)})


def with_ingredients(
    table: pd.DataFrame,
    treatments: pd.Series,
    names: pd.Series,
    report: ImportReport,
    drugs: pd.Series | None = None,
) -> pd.DataFrame:
    """The treatments ``table`` with its ``ingredients`` column: for each treatment the
    ingredient ids (:func:`~recommender.data.ingredients.ingredient_ids`) of every name its
    source rows give it (``treatments`` and ``names`` row by row; only rows where ``drugs`` is
    true, when given). A name that is empty or the id itself names nothing; a treatment whose
    names name no ingredient gets a blank value (it is its own ingredient)."""
    frame = pd.DataFrame({"t": treatments, "name": names.fillna("").astype(str).str.strip()})
    if drugs is not None:
        frame = frame[drugs.to_numpy(dtype=bool)]
    drug_ids = set(frame["t"].dropna())
    frame = frame[(frame["name"] != "") & (frame["name"] != frame["t"])].drop_duplicates()
    known = known_names(frame["name"].unique())
    of_name = {name: ingredient_ids(name, known) for name in frame["name"].unique()}
    held: dict[str, list[str]] = {}
    for treatment, name in zip(frame["t"].tolist(), frame["name"].tolist()):
        held.setdefault(treatment, []).extend(of_name[name])
    column = table[C.treatment].map(lambda t: join_ingredients(held.get(t, ())))
    named = column != ""
    report.count("treatments with active ingredients read from their names", int(named.sum()))
    report.count(
        "drug treatments whose names name no ingredient (each its own)",
        int((table[C.treatment].isin(drug_ids) & ~named).sum()),
    )
    return table.assign(**{INGREDIENTS: column.astype(object)})


def write_output(out: str | Path, frames: Mapping[str, pd.DataFrame], report: ImportReport) -> Path:
    """Validate the canonical tables and write them with the report, in one atomic folder write.

    ``frames`` maps table name -> DataFrame whose ``timestamp`` column is already ISO text.
    ``out`` is replaced whole; on any error it is left as it was.

    Raises
    ------
    DataValidationError
        If the tables break the canonical schema (a bug in the importer, reported as such).
    """
    validate_tables(dict(frames))
    if frames[Tables.outcomes].empty:
        report.warn("no outcome row could be derived; see 'dropped' for the reasons")
    report.finish(dict(frames))
    out = Path(out)
    with atomic_dir(out) as tmp:
        for table in Tables.all:
            if table in frames:
                frames[table].to_csv(tmp / f"{table}.csv", index=False)
        (tmp / "import_report.json").write_text(report.to_json(), encoding="utf-8")
        (tmp / "import_report.md").write_text(report.to_markdown(), encoding="utf-8")
    log.info("%s", report.summary())
    return out


def require_folder(src: str | Path, what: str) -> Path:
    """``src`` as a Path, raising when it is not an existing folder."""
    path = Path(src)
    if not path.is_dir():
        raise DataValidationError(f"is not a folder; expected {what}", file=str(path))
    return path


def patient_conditions(
    episodes: pd.DataFrame, allergies: pd.DataFrame, known: set | None, report: ImportReport
) -> pd.DataFrame:
    """The patient_conditions table: diagnoses and allergies, one row per patient and condition.

    ``episodes`` has patient, condition, start (and optionally start_text, the start as the
    source wrote it); ``allergies`` has patient, code, onset (optionally onset_text) and primary
    (rows with primary False are extra substance codes, not listed). Rows of patients not in
    ``known`` (when given) are dropped. Columns: patient_id, condition_id, kind ("diagnosis" or
    "allergy"), timestamp (the earliest onset as the source gave it, see :func:`time_texts`;
    "" when unknown) and onset (its UTC day, ``YYYY-MM-DD``).
    """
    primary = allergies.loc[allergies["primary"].astype(bool)]
    both = pd.concat(
        [
            pd.DataFrame(
                {
                    C.patient: episodes["patient"],
                    C.condition: episodes["condition"],
                    "kind": "diagnosis",
                    C.timestamp: _given(episodes, "start"),
                    "onset": episodes["start"],
                }
            ),
            pd.DataFrame(
                {
                    C.patient: primary["patient"],
                    C.condition: primary["code"],
                    "kind": "allergy",
                    C.timestamp: _given(primary, "onset"),
                    "onset": primary["onset"],
                }
            ),
        ],
        ignore_index=True,
    )
    if known is not None:
        unknown = ~both[C.patient].isin(known)
        report.drop(
            "conditions/allergies: patient not among the imported patients", int(unknown.sum())
        )
        both = both[~unknown]
    both = both.sort_values([C.patient, C.condition, "onset"], na_position="last")
    both = both.drop_duplicates([C.patient, C.condition]).reset_index(drop=True)
    both["onset"] = both["onset"].dt.strftime("%Y-%m-%d").fillna("")
    return both


def _given(frame: pd.DataFrame, column: str) -> pd.Series:
    """``frame[column + "_text"]`` (the time as written), else the parsed times as ISO text."""
    if f"{column}_text" in frame:
        return frame[f"{column}_text"].astype(object)
    return iso(frame[column])


def condition_dictionary(
    episodes: pd.DataFrame, allergies: pd.DataFrame, rows: pd.DataFrame, used: set
) -> pd.DataFrame:
    """conditions(condition_id, name) for the ids in ``used``.

    Names come from the diagnoses, the allergies ("Allergy to <substance>" unless the text already
    says allergy) and the treatment rows' indication names, the most frequent first.
    """
    primary = allergies.loc[allergies["primary"].astype(bool)]
    allergy_names = primary["name"].where(
        primary["name"].str.lower().str.contains("allerg"), "Allergy to " + primary["name"]
    )
    return dictionary(
        pd.concat([episodes["condition"], primary["code"], rows["indication"]], ignore_index=True),
        pd.concat([episodes["name"], allergy_names, rows["indication_name"]], ignore_index=True),
        C.condition,
        used,
    )
