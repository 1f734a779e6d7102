"""Import an OMOP CDM 5.3 / 5.4 folder (CSV, gzip CSV or Parquet) into canonical tables.

Rules, in plain language
------------------------
- **Tables** (:mod:`~recommender.importers.omop_source`): ``person``, ``observation_period``,
  a drug table and a condition table are required; ``death``, ``concept``, ``measurement``,
  ``concept_ancestor``, ``concept_relationship`` and ``cdm_source`` are optional (an absent one
  is a warning). Drugs come from ``drug_exposure``, or ``drug_era`` when the copy has no
  exposures (``drug_table`` chooses); conditions from ``condition_occurrence``, or
  ``condition_era`` (``condition_table``). Dates are days (UTC).
- **Ids** (:mod:`~recommender.importers.omop_concepts`): ``system|concept_code`` named from
  ``concept`` (``rxnorm|140587`` = celecoxib), ``omop|<concept_id>`` for a concept it does not
  describe. Drug exposures are mapped to their RxNorm ingredients where the copy allows it;
  drug eras are ingredients already. ``treatments.ingredients`` names each treatment's
  ingredient in the id space every importer shares, ``drug|`` + the normalised name
  (:func:`~recommender.data.ingredients.ingredient_ids`): the ingredient concept's name
  (``rxnorm|140587`` celecoxib -> ``drug|celecoxib``), or for a drug kept at its own level the
  ingredients its clinical-drug name gives ("celecoxib 200 MG Oral Capsule" -> the same), so
  an OMOP copy and a Synthea or FHIR copy of one cohort agree.
- **Observation periods bound everything.** An event whose start is outside every observation
  period of its person is dropped and counted; each course is read only up to the end of the
  period holding its start (its horizon, :mod:`~recommender.importers.rules`).
- **Indication.** OMOP has no drug -> indication link. A drug row's candidates are the
  person's condition records (occurrences or eras) that started on or before the drug start,
  in the same observation period, and were still recorded within ``indication_window_days``
  before it (record start to end overlaps the window). The candidate chosen is the condition
  most often recorded in that window before this drug across all persons (distinct persons),
  then the latest-starting, then the lowest id: a data-driven stand-in for a reason code. Rows
  without a candidate are dropped ("no condition ... (no indication)"). The chosen record is
  the course's episode.
- **Episode end.** A record's end is the condition's end only when it is more than one day
  after the record's start: OMOP ETLs fill a missing end with the start or the start plus one
  day (the CDM's era builder does), so a one-day record has no known end.
- **Outcomes**, per course (rows of one person, treatment and episode), the first that applies:
  ``adverse`` -1: death (from the start day), or the person's *first* record of an
  adverse-event concept (``adverse_concepts`` and, with ``concept_ancestor``, their
  descendants) on a day after the start, within ``adverse_window_days``; ``switched`` 0: another
  drug for the same episode started within ``switch_window_days``; ``resolved`` 1: the episode
  ended within ``resolution_window_days``, before the end of observation; ``chronic``
  (``chronic_outcome``): the course lasted ``chronic_min_days`` (continued without switch);
  ``tolerated`` (``chronic_outcome``): none of these while the person was observed for the whole
  ``adverse_window_days``; otherwise dropped for lack of evidence.
- **Observations** (``measurement``, when present and ``include_observations``): the measurement
  concept's id, ``value_as_number``, ``unit_source_value`` (else the unit concept's code), and
  ``measurement_datetime`` (else ``measurement_date``); a value whose ``operator_concept_id`` is
  not ``=`` (4172703) is censored and dropped, as are rows without a value or outside
  observation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..columns import Columns, Tables
from ..exceptions import DataValidationError, ParameterError
from . import common, omop_tables
from .omop_concepts import Concepts, descendants, ingredient_map
from .omop_source import OmopSource, SourceTable
from .report import ImportReport
from .rules import OutcomeRules, outcome_table

C = Columns

#: OMOP concept ids counted as harm by default: 192671 Gastrointestinal hemorrhage (SNOMED
#: 74474003), the outcome of Eunomia's celecoxib-vs-diclofenac study.
DEFAULT_ADVERSE_CONCEPTS = (192671,)
DRUG_TABLES = ("drug_exposure", "drug_era")
CONDITION_TABLES = ("condition_occurrence", "condition_era")


def import_omop(
    src: str | Path,
    out: str | Path,
    *,
    drug_table: str = "auto",
    condition_table: str = "auto",
    condition_types: tuple[int, ...] | None = None,
    include_observations: bool = True,
    indication_window_days: int = 30,
    adverse_concepts: tuple[int, ...] = DEFAULT_ADVERSE_CONCEPTS,
    resolution_window_days: int = 90,
    switch_window_days: int = 365,
    adverse_window_days: int = 90,
    chronic_min_days: int = 180,
    chronic_outcome: float | None = 0.5,
) -> ImportReport:
    """Convert an OMOP CDM folder into a folder of canonical tables.

    Parameters
    ----------
    src : path
        Folder of OMOP CDM 5.3 / 5.4 tables (``.csv``, ``.csv.gz`` or ``.parquet``, any case).
    out : path
        Output folder, replaced whole (atomically) by the tables and ``import_report.*``.
    drug_table, condition_table : str
        "auto" (exposures / occurrences when present, else the era table), or a table name.
    condition_types : tuple of int, optional
        Keep only the condition_occurrence rows whose ``condition_type_concept_id`` is one of
        these (the record's provenance); None keeps all. Eras have no type.
    include_observations : bool
        Read ``measurement`` (when present) into the observations table.
    indication_window_days : int
        A condition recorded up to this many days before a drug start may be its indication.
    adverse_concepts : tuple of int
        OMOP concept ids whose first record after a drug start is a harm.
    resolution_window_days, switch_window_days, adverse_window_days, chronic_min_days,
    chronic_outcome
        The outcome rules (:class:`~recommender.importers.rules.OutcomeRules`), in days.

    Returns
    -------
    ImportReport

    Raises
    ------
    DataValidationError
        If ``src`` is not a folder, a required table or column is missing, or a value is not
        of its CDM type (the message names file, row and column).
    ParameterError
        If a parameter is out of range.
    """
    rules = OutcomeRules(
        resolution_window_days,
        switch_window_days,
        adverse_window_days,
        chronic_min_days,
        chronic_outcome,
        "any",
    )
    adverse_ids = _check_options(
        drug_table, condition_table, indication_window_days, adverse_concepts
    )
    types = (
        _concept_ids("condition_types", condition_types) if condition_types is not None else None
    )
    folder = common.require_folder(
        src, "an OMOP CDM folder (person, observation_period, drug_era ... as .csv/.parquet)"
    )
    parameters = {k: v for k, v in rules.to_dict().items() if k != "allergy_match"}
    report = ImportReport(
        "omop",
        str(src),
        parameters={
            "drug_table": drug_table,
            "condition_table": condition_table,
            "condition_types": None if types is None else sorted(int(t) for t in types),
            "include_observations": include_observations,
            "indication_window_days": indication_window_days,
            "adverse_concepts": sorted(int(c) for c in adverse_ids),
            **parameters,
        },
    )
    source = OmopSource(folder, report)
    version = source.cdm_version()
    report.layout = f"omop-cdm-{version}" if version else "omop-cdm"
    people = omop_tables.persons(
        omop_tables.require(
            source, "person", omop_tables.PERSON_COLUMNS, omop_tables.PERSON_OPTIONAL
        ),
        report,
    )
    known = set(people["patient"])
    spans = omop_tables.periods(
        omop_tables.require(source, "observation_period", omop_tables.PERIOD_COLUMNS),
        known,
        report,
    )
    drug_name = _choose(source, drug_table, DRUG_TABLES, report)
    condition_name = _choose(source, condition_table, CONDITION_TABLES, report)
    drugs = omop_tables.events(_read_events(source, drug_name), known, spans, report)
    if types is not None and condition_name != "condition_occurrence":
        report.warn(f"condition_types: ignored ({condition_name} has no type column)")
        types = None
    conditions = omop_tables.events(
        _read_events(source, condition_name, types is not None), known, spans, report, types
    )
    died = omop_tables.deaths(source.read("death", ("person_id", "death_date")), known, report)
    measurement = None
    if include_observations:
        measurement = source.read(
            "measurement", omop_tables.MEASUREMENT_COLUMNS, omop_tables.MEASUREMENT_OPTIONAL
        )
        if measurement is None:
            report.warn("measurement: no measurement table; no observations table")
    pairs, how = (
        ingredient_map(source, set(drugs["concept"]))
        if drug_name == "drug_exposure"
        else (pd.DataFrame({"drug": [], "ingredient": []}, dtype=object), "")
    )
    adverse = descendants(source, adverse_ids)
    concepts = Concepts(source, _used(people, drugs, conditions, pairs, adverse, measurement))
    if not concepts.present:
        report.warn("concept: no concept table; every concept is written omop|<concept_id>")
    episodes = _episodes(conditions, concepts, condition_name, report)
    rows = _treatment_rows(drugs, concepts, pairs, how, drug_name, report)
    rows = _link_indications(rows, episodes, indication_window_days, drug_name, report)
    harms = _harm_events(episodes, adverse, report)
    outcomes = outcome_table(rows, known, died, harms, rules, report, harm_from_day=1)
    no_allergies = pd.DataFrame(
        {
            "patient": pd.Series([], dtype=object),
            "code": pd.Series([], dtype=object),
            "onset": pd.Series([], dtype="datetime64[ns, UTC]"),
            "primary": pd.Series([], dtype=bool),
        }
    )
    patient_conditions = common.patient_conditions(episodes, no_allergies, known, report)
    frames = {
        Tables.outcomes: outcomes,
        Tables.patients: omop_tables.patients(people, spans, died, concepts, report),
        Tables.patient_conditions: patient_conditions,
        Tables.treatments: common.with_ingredients(
            common.dictionary(
                rows["treatment"], rows["treatment_name"], C.treatment, set(outcomes[C.treatment])
            ),
            rows["treatment"],
            rows["treatment_name"],
            report,
        ),
        Tables.conditions: common.dictionary(
            episodes["condition"],
            episodes["name"],
            C.condition,
            set(outcomes[C.condition].dropna()) | set(patient_conditions[C.condition]),
        ),
    }
    if measurement is not None:
        frames[Tables.observations] = omop_tables.observations(
            measurement, concepts, known, spans, report
        )
    common.write_output(out, frames, report)
    return report


def _check_options(drug_table, condition_table, window, adverse_concepts) -> set[str]:
    for name, value, choices in (
        ("drug_table", drug_table, DRUG_TABLES),
        ("condition_table", condition_table, CONDITION_TABLES),
    ):
        if value not in ("auto", *choices):
            raise ParameterError(
                f"The '{name}' parameter of import_omop must be 'auto' or one of "
                f"{list(choices)}. Got {value!r} instead."
            )
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 0:
        raise ParameterError(
            "The 'indication_window_days' parameter of import_omop must be an int in the "
            f"range [0, inf). Got {window!r} instead."
        )
    return _concept_ids("adverse_concepts", adverse_concepts)


def _concept_ids(name: str, values) -> set[str]:
    """Positive int concept ids as the text ids the tables hold; ParameterError otherwise."""
    ids = set()
    for concept in values:
        if isinstance(concept, bool) or not isinstance(concept, (int, np.integer)) or concept <= 0:
            raise ParameterError(
                f"The '{name}' parameter of import_omop must hold positive int OMOP "
                f"concept ids. Got {concept!r} instead."
            )
        ids.add(str(int(concept)))
    return ids


def _choose(source: OmopSource, wanted: str, tables: tuple[str, str], report) -> str:
    """The table to read for drugs or conditions (``wanted`` "auto" or a table name)."""
    if wanted != "auto":
        if not source.has(wanted):
            raise DataValidationError(
                f"no {wanted} table, which {wanted!r} asks for", file=str(source.folder)
            )
        return wanted
    present = [t for t in tables if source.has(t)]
    if not present:
        raise DataValidationError(
            f"neither {tables[0]} nor {tables[1]}; an OMOP import needs one of them",
            file=str(source.folder),
        )
    if len(present) == 2:
        report.warn(f"{tables[1]}: not read ({tables[0]} is; choose it with its table option)")
    return present[0]


def _read_events(source: OmopSource, name: str, typed: bool = False) -> SourceTable:
    concept, start, end, source_concept, source_value = omop_tables.EVENT_TABLES[name]
    optional = tuple(c for c in (end, source_concept, source_value) if c)
    required = ("person_id", concept, start)
    if typed:
        required += (omop_tables.TYPE_COLUMNS[name],)
    return source.read(name, required, optional)


def _used(people, drugs, conditions, pairs, adverse, measurement) -> set[str]:
    """Every concept id the import may name (only these rows of concept are read)."""
    used = set(adverse)
    for frame, columns in (
        (people, ("gender", "race", "ethnicity")),
        (drugs, ("concept", "source_concept")),
        (conditions, ("concept", "source_concept")),
        (pairs, ("ingredient",)),
    ):
        for column in columns:
            used.update(frame[column])
    if measurement is not None:
        for column in ("measurement_concept_id", "unit_concept_id", "operator_concept_id"):
            used.update(measurement.ids(column))
    return used - {"", "0"}


def _episodes(conditions: pd.DataFrame, concepts: Concepts, table: str, report) -> pd.DataFrame:
    """Condition records: patient, condition, name, start, start_text, span_end, stop (the
    episode's known end, else NaT), episode (key) and period_start."""
    omop_tables.unmatched(conditions["concept"], concepts, f"{table}.condition_concept_id", report)
    known_end = conditions["end"] > conditions["start"] + pd.Timedelta(days=1)
    report.count(f"{table} records with a known end (more than one day)", int(known_end.sum()))
    return pd.DataFrame(
        {
            "patient": conditions["patient"],
            "condition": concepts.code_ids(conditions["concept"]),
            "concept": conditions["concept"],
            "name": concepts.name_rows(
                conditions["concept"], conditions["source_concept"], conditions["source_value"]
            ),
            "start": conditions["start"],
            "start_text": conditions["start"].dt.strftime("%Y-%m-%d"),
            "span_end": conditions["end"].fillna(conditions["start"]),
            "stop": conditions["end"].where(known_end),
            "episode": table + ":" + conditions["row"].astype(str),
            "period_start": conditions["period_start"],
        }
    )


def _treatment_rows(drugs, concepts: Concepts, pairs, how: str, table: str, report):
    """Drug rows with their treatment: the RxNorm ingredient(s) where mapped, else the drug."""
    omop_tables.unmatched(drugs["concept"], concepts, f"{table}.drug_concept_id", report)
    rows = drugs.assign(ingredient=drugs["concept"])
    if table == "drug_exposure":
        pairs = pairs[concepts.classes(pairs["ingredient"]).eq("ingredient").to_numpy()]
        own = drugs["concept"][concepts.classes(drugs["concept"]).eq("ingredient").to_numpy()]
        pairs = pd.concat([pairs, pd.DataFrame({"drug": own, "ingredient": own})])
        pairs = pairs.drop_duplicates()
        mapped = set(pairs["drug"])
        rows = drugs.merge(pairs, left_on="concept", right_on="drug", how="left")
        rows["ingredient"] = rows["ingredient"].fillna(rows["concept"])
        distinct = set(drugs["concept"])
        kept = len(distinct - mapped)
        report.count("drug_exposure concepts mapped to RxNorm ingredients", len(distinct & mapped))
        report.count("drug_exposure concepts kept at their own level (no ingredient)", kept)
        if kept:
            what = (
                f"not reached through {how}"
                if how
                else ("the copy has neither concept_ancestor nor concept_relationship")
            )
            report.warn(
                f"drug_exposure: {kept} of {len(distinct)} drug concepts kept at their own "
                f"level, not RxNorm ingredients ({what})"
            )
    own = rows["ingredient"] == rows["concept"]
    names = concepts.name_rows(
        rows["ingredient"],
        rows["source_concept"].where(own, ""),
        rows["source_value"].where(own, ""),
    )
    stop = rows["end"].fillna(rows["start"])
    report.count(
        f"{table} rows without an end date (taken as the start day)", int(rows["end"].isna().sum())
    )
    return pd.DataFrame(
        {
            "patient": rows["patient"],
            "treatment": concepts.code_ids(rows["ingredient"]),
            "treatment_name": names,
            "start": rows["start"],
            "stop": stop,
            "switchable": True,
            "source": table,
            "horizon": rows["period_end"],
            "period_start": rows["period_start"],
        }
    )


def _link_indications(rows, episodes, window: int, table: str, report) -> pd.DataFrame:
    """``rows`` with indication, episode and episode_stop (see the module docstring), sorted by
    start; rows without a condition in the window are dropped and counted."""
    keys = rows[["patient", "treatment", "start", "period_start"]].drop_duplicates()
    keys = keys.assign(key=np.arange(len(keys)))
    right = episodes[["patient", "condition", "start", "span_end", "episode", "stop"]].rename(
        columns={"start": "c_start", "stop": "episode_stop"}
    )
    pairs = keys.merge(right, on="patient")
    low = (pairs["start"] - pd.Timedelta(days=window)).where(
        lambda d: d > pairs["period_start"], pairs["period_start"]
    )
    pairs = pairs[
        (pairs["c_start"] <= pairs["start"])
        & (pairs["c_start"] >= pairs["period_start"])
        & (pairs["span_end"] >= low)
    ]
    support = (
        pairs.drop_duplicates(["treatment", "condition", "patient"])
        .groupby(["treatment", "condition"])
        .size()
        .rename("support")
    )
    pairs = pairs.join(support, on=["treatment", "condition"])
    best = pairs.sort_values(
        ["key", "support", "c_start", "condition", "episode"],
        ascending=[True, False, False, True, True],
        kind="stable",
    ).drop_duplicates("key")
    linked = rows.merge(keys, on=["patient", "treatment", "start", "period_start"]).merge(
        best[["key", "condition", "episode", "episode_stop"]], on="key", how="left"
    )
    missing = linked["condition"].isna()
    report.drop(
        f"{table}: no condition recorded in the {window} days before the start (no indication)",
        int(missing.sum()),
    )
    linked = linked[~missing].rename(columns={"condition": "indication"})
    report.count(f"{table} rows linked to an indication", len(linked))
    linked["episode_stop"] = pd.to_datetime(linked["episode_stop"], utc=True)
    return linked.sort_values(["start", "patient"], kind="stable").reset_index(drop=True)


def _harm_events(episodes: pd.DataFrame, adverse: set[str], report) -> pd.DataFrame:
    """Each person's first record of each adverse-event concept: patient, onset, code, name."""
    hits = episodes[episodes["concept"].isin(adverse)].sort_values("start", kind="stable")
    first = hits.drop_duplicates(["patient", "concept"])
    report.count("adverse-event records (first per person and concept)", len(first))
    return pd.DataFrame(
        {
            "patient": first["patient"],
            "onset": first["start"],
            "code": first["condition"],
            "name": first["name"],
        }
    ).reset_index(drop=True)
