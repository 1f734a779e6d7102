"""The OMOP CDM tables the importer reads, as frames bounded by the observation periods.

Each reader takes a :class:`~recommender.importers.omop_source.SourceTable`, checks its types
(a bad value raises naming file, row and column), drops the rows it cannot use, counting each
under its reason in the report, and returns a frame of canonical names: ``patient`` is the
``person_id`` text, concept ids are text, dates are UTC timestamps (midnight).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..columns import Columns
from ..exceptions import DataValidationError
from . import common
from .omop_concepts import Concepts
from .omop_source import OmopSource, SourceTable
from .report import ImportReport

C = Columns

#: Event tables -> (concept column, start date, end date, source concept, source value).
EVENT_TABLES = {
    "drug_exposure": (
        "drug_concept_id",
        "drug_exposure_start_date",
        "drug_exposure_end_date",
        "drug_source_concept_id",
        "drug_source_value",
    ),
    "drug_era": ("drug_concept_id", "drug_era_start_date", "drug_era_end_date", "", ""),
    "condition_occurrence": (
        "condition_concept_id",
        "condition_start_date",
        "condition_end_date",
        "condition_source_concept_id",
        "condition_source_value",
    ),
    "condition_era": (
        "condition_concept_id",
        "condition_era_start_date",
        "condition_era_end_date",
        "",
        "",
    ),
}
#: Occurrence tables -> their type column (provenance: EHR, billing, registry ...).
TYPE_COLUMNS = {
    "drug_exposure": "drug_type_concept_id",
    "condition_occurrence": "condition_type_concept_id",
}
PERSON_COLUMNS = ("person_id", "gender_concept_id", "year_of_birth")
PERSON_OPTIONAL = (
    "race_concept_id",
    "ethnicity_concept_id",
    "race_source_value",
    "ethnicity_source_value",
)
PERIOD_COLUMNS = ("person_id", "observation_period_start_date", "observation_period_end_date")
OUTSIDE = "start outside the person's observation periods"
#: ``operator_concept_id`` of "=": any other non-zero operator makes a value censored.
EQUALS_OPERATOR = "4172703"
MEASUREMENT_COLUMNS = ("person_id", "measurement_concept_id", "measurement_date")
MEASUREMENT_OPTIONAL = (
    "measurement_datetime",
    "value_as_number",
    "operator_concept_id",
    "unit_concept_id",
    "unit_source_value",
)
#: Standard OMOP concept ids of the Gender, Race and Ethnicity vocabularies.
GENDERS = {"8507": "M", "8532": "F"}
RACES = {"8527": "white", "8516": "black", "8515": "asian", "8657": "native", "8557": "pacific"}
ETHNICITIES = {"38003563": "hispanic", "38003564": "nonhispanic"}
#: The schema's birth_year range (recommender.data.tables).
BIRTH_YEARS = (1850, 2100)


def require(source: OmopSource, name: str, required: tuple, optional: tuple = ()) -> SourceTable:
    """Table ``name``, raising DataValidationError naming the folder when it is absent."""
    table = source.read(name, required, optional)
    if table is None:
        raise DataValidationError(
            f"no {name} table ({name}.csv, .csv.gz or .parquet, any case); an OMOP import "
            "needs person, observation_period, drug_exposure or drug_era, and "
            "condition_occurrence or condition_era",
            file=str(source.folder),
        )
    return table


def persons(table: SourceTable, report: ImportReport) -> pd.DataFrame:
    """person rows: patient, gender, year (Int64), race, ethnicity (concept ids), and the
    race / ethnicity source texts. Blank and repeated person_ids are dropped and counted."""
    frame = pd.DataFrame(
        {
            "patient": table.ids("person_id"),
            "gender": table.ids("gender_concept_id"),
            "year": pd.to_numeric(table.ids("year_of_birth").replace("", None)).astype("Int64"),
            "race": table.ids("race_concept_id"),
            "ethnicity": table.ids("ethnicity_concept_id"),
            "race_source": table.text("race_source_value"),
            "ethnicity_source": table.text("ethnicity_source_value"),
        }
    )
    blank = frame["patient"] == ""
    report.drop("person: no person_id", int(blank.sum()))
    dupes = frame["patient"].duplicated() & ~blank
    report.drop("person: person_id listed twice (first row kept)", int(dupes.sum()))
    return frame[~blank & ~dupes].reset_index(drop=True)


def periods(table: SourceTable, known: set, report: ImportReport) -> pd.DataFrame:
    """observation_period rows: patient, start, end (UTC days), sorted by patient and start."""
    frame = pd.DataFrame(
        {
            "patient": table.ids("person_id"),
            "start": table.dates("observation_period_start_date").dt.floor("D"),
            "end": table.dates("observation_period_end_date").dt.floor("D"),
        }
    )
    checks = [
        (frame["patient"] == "", "no person_id"),
        (frame["start"].isna() | frame["end"].isna(), "no start or end date"),
        (frame["end"] < frame["start"], "end date before its start date"),
        (~frame["patient"].isin(known), "person_id not in person"),
    ]
    frame = _drop(frame, checks, "observation_period", report)
    without = len(known - set(frame["patient"]))
    if without:
        report.warn(
            f"observation_period: {without} person(s) have no observation period; all their "
            "events are outside observation and dropped"
        )
    return frame.sort_values(["patient", "start"], kind="stable").reset_index(drop=True)


def events(
    table: SourceTable,
    known: set,
    spans: pd.DataFrame,
    report: ImportReport,
    types: set[str] | None = None,
) -> pd.DataFrame:
    """Rows of an event table (:data:`EVENT_TABLES`) inside an observation period.

    Returns patient, concept, start, end (UTC days; end NaT when blank), source_concept,
    source_value, row (0-based data row), period_start, period_end. Dropped and counted under
    ``<table>: <reason>``: a ``<domain>_type_concept_id`` not in ``types`` (when given); no
    person_id, concept or start; concept 0 (no standard concept); a person not in person; an
    end before the start; a start outside every observation period of the person.
    """
    concept, start, end, source_concept, source_value = EVENT_TABLES[table.name]
    type_column = TYPE_COLUMNS.get(table.name, "")
    frame = pd.DataFrame(
        {
            "patient": table.ids("person_id"),
            "concept": table.ids(concept),
            "start": table.dates(start).dt.floor("D"),
            "end": table.dates(end).dt.floor("D"),
            "source_concept": table.ids(source_concept) if source_concept else "",
            "source_value": table.text(source_value) if source_value else "",
            "row": table.frame.index.to_numpy(),
        }
    )
    checks = []
    if types is not None:
        kind = table.ids(type_column)
        checks.append((~kind.isin(types), f"{type_column} not among those chosen"))
    checks += [
        (frame["patient"] == "", "no person_id"),
        (frame["concept"] == "", f"no {concept}"),
        (frame["start"].isna(), f"no {start}"),
        (frame["concept"] == "0", f"no standard concept ({concept} 0)"),
        (~frame["patient"].isin(known), "person_id not in person"),
        (frame["end"] < frame["start"], "end date before its start date"),
    ]
    frame = _drop(frame, checks, table.name, report)
    frame = within_periods(frame, spans)
    outside = frame["period_end"].isna()
    report.drop(f"{table.name}: {OUTSIDE}", int(outside.sum()))
    return frame[~outside].reset_index(drop=True)


def within_periods(frame: pd.DataFrame, spans: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (patient, start) plus period_start and period_end of the observation period
    holding its start day (NaT when none does), in the order of ``frame``."""
    left = frame.assign(_order=range(len(frame)), _day=frame["start"].dt.floor("D"))
    right = spans.rename(columns={"start": "period_start", "end": "period_end"})
    right = right.assign(_day=right["period_start"])[
        ["patient", "_day", "period_start", "period_end"]
    ]
    for part in (left, right):
        part["patient"] = part["patient"].astype(object)
    known = left["_day"].notna()
    linked = pd.merge_asof(
        left[known].sort_values("_day", kind="stable"),
        right.sort_values("_day", kind="stable"),
        on="_day",
        by="patient",
        direction="backward",
    )
    unknown = left[~known].assign(period_start=pd.NaT, period_end=pd.NaT)
    linked = pd.concat([linked, unknown]).sort_values("_order")
    inside = linked["_day"] <= linked["period_end"]
    for column in ("period_start", "period_end"):
        linked[column] = pd.to_datetime(linked[column], utc=True).where(inside)
    return linked.drop(columns=["_order", "_day"]).reset_index(drop=True)


def deaths(table: SourceTable | None, known: set, report: ImportReport) -> pd.Series:
    """The earliest death date per person (UTC day), indexed by patient."""
    if table is None:
        report.warn("death: no death table; deaths are unknown (no death_date, no death harm)")
        return pd.Series([], index=pd.Index([], dtype=object), dtype="datetime64[ns, UTC]")
    frame = pd.DataFrame(
        {"patient": table.ids("person_id"), "day": table.dates("death_date").dt.floor("D")}
    )
    checks = [
        (frame["patient"] == "", "no person_id"),
        (frame["day"].isna(), "no death_date"),
        (~frame["patient"].isin(known), "person_id not in person"),
    ]
    frame = _drop(frame, checks, "death", report)
    first = frame.groupby("patient")["day"].min()
    return pd.Series(first.array, index=pd.Index(first.index, dtype=object), name="death")


def patients(
    people: pd.DataFrame, spans: pd.DataFrame, died: pd.Series, concepts: Concepts, report
) -> pd.DataFrame:
    """The patients table: patient_id, sex (M/F/O/U), birth_year (empty outside 1850-2100),
    age (years at the start of the first observation period), race, ethnicity (as the other
    importers write them), race_source, ethnicity_source, death_date (``YYYY-MM-DD``)."""
    year = people["year"]
    in_range = year.between(*BIRTH_YEARS).fillna(False).astype(bool)
    outside = int((year.notna() & ~in_range).sum())
    if outside:
        report.warn(
            f"person: {outside} year_of_birth value(s) outside {BIRTH_YEARS[0]}-"
            f"{BIRTH_YEARS[1]} (shifted dates?); birth_year left empty, age kept"
        )
    first = spans.groupby("patient")["start"].min()
    age = people["patient"].map(first).dt.year.astype("Int64") - year
    death = pd.Series(died.reindex(people["patient"].to_numpy()).array, index=people.index)
    return pd.DataFrame(
        {
            C.patient: people["patient"],
            C.sex: _sex(people["gender"], concepts),
            C.birth_year: year.where(in_range, pd.NA).astype("Int64"),
            "age": age.astype("Int64"),
            "race": _race(people["race"], concepts),
            "ethnicity": _ethnicity(people["ethnicity"], concepts),
            "race_source": people["race_source"],
            "ethnicity_source": people["ethnicity_source"],
            "death_date": pd.to_datetime(death, utc=True).dt.strftime("%Y-%m-%d").fillna(""),
        }
    )


def _sex(ids: pd.Series, concepts: Concepts) -> pd.Series:
    names = concepts.names(ids).str.strip().str.upper()
    named = names.map({"MALE": "M", "FEMALE": "F", "UNKNOWN": "U", "": "U"}).fillna("O")
    return ids.map(GENDERS).fillna(named).astype(object)


def _race(ids: pd.Series, concepts: Concepts) -> pd.Series:
    names = concepts.names(ids)
    named = names.map(lambda n: common.race_and_ethnicity(n)[0] if n else "unknown")
    return ids.map(RACES).fillna(named).astype(object)


def _ethnicity(ids: pd.Series, concepts: Concepts) -> pd.Series:
    lower = concepts.names(ids).str.lower()
    named = pd.Series("unknown", index=ids.index, dtype=object)
    named[lower.str.contains("hispanic|latino")] = "hispanic"
    named[lower.str.contains("not hispanic|non-hispanic|nonhispanic")] = "nonhispanic"
    return ids.map(ETHNICITIES).fillna(named).astype(object)


def _drop(frame: pd.DataFrame, checks: list, table: str, report: ImportReport) -> pd.DataFrame:
    """Rows passing every check; each dropped row counted once, under its first failed check."""
    dropped = pd.Series(False, index=frame.index)
    for mask, reason in checks:
        mask = mask.fillna(False).astype(bool)
        report.drop(f"{table}: {reason}", int((mask & ~dropped).sum()))
        dropped |= mask
    return frame[~dropped]


def unmatched(ids: pd.Series, concepts: Concepts, where: str, report: ImportReport) -> None:
    """Count the rows whose concept the concept table does not describe (``omop|<id>``)."""
    report.unmatch(
        f"{where}: concept not in the concept table (written omop|<concept_id>)",
        int((~concepts.known(ids)).sum()),
    )


def observations(table: SourceTable, concepts: Concepts, known, spans, report) -> pd.DataFrame:
    """measurement rows as the observations table (rules: the docstring of ``omop.py``).

    Returns the columns of :data:`~recommender.importers.common.OBSERVATION_COLUMNS`; rows are
    dropped and counted under ``observations (measurement): <reason>``.
    """
    concept = table.ids("measurement_concept_id")
    day = table.dates("measurement_date").dt.floor("D")
    table.dates("measurement_datetime")  # checked: raises at a value that is not a date
    values = table.numbers("value_as_number")
    operator = table.ids("operator_concept_id")
    unit = table.text("unit_source_value")
    unit_code = concepts.code_ids(table.ids("unit_concept_id")).fillna("|").str.split("|").str[1]
    unit = unit.where(unit != "", unit_code.where(concepts.known(table.ids("unit_concept_id")), ""))
    unmatched(concept[concept.ne("0") & concept.ne("")], concepts, "measurement", report)
    period = within_periods(pd.DataFrame({"patient": table.ids("person_id"), "start": day}), spans)
    outside = (day.notna() & period["period_end"].isna()).to_numpy()
    problem = np.select(
        [
            concept.isin(["", "0"]).to_numpy(),
            np.isnan(values.to_numpy()),
            ~operator.isin(["", "0", EQUALS_OPERATOR]).to_numpy(),
            outside,
        ],
        [
            "no standard concept (measurement_concept_id 0)",
            common.NO_VALUE,
            common.CENSORED,
            OUTSIDE.replace("start", "date"),
        ],
        default="",
    )
    time = table.text("measurement_datetime")
    rows = pd.DataFrame(
        {
            "patient": table.ids("person_id"),
            "code": concepts.code_ids(concept),
            "value": values,
            "unit": unit,
            "time": time.where(time != "", table.text("measurement_date")),
            "problem": problem,
        }
    )
    return common.observation_table(rows, known, report, "measurement")
