"""EHR importers: Synthea CSV, MIMIC-III/IV demo CSV, FHIR R4 and OMOP CDM into canonical tables.

Each importer reads a source, derives treatment outcomes by a documented rule set and writes one
output folder (atomically) holding the canonical tables (outcomes, patients,
patient_conditions with onsets, treatments, conditions, and observations when the source has
results) and a data-quality report ``import_report.json`` /
``import_report.md``. The rules are in each module's docstring and in ``README.md`` beside this
file.

Command line (wired into ``recommender`` by :func:`add_import_parser`)::

    recommender import synthea SRC --out DIR [--include-procedures] [--include-careplans] [rules]
    recommender import mimic SRC --out DIR [--readmission-days N] [--long-stay-days N] ...
    recommender import fhir BUNDLE_OR_NDJSON --out DIR [--strict] [--include-procedures] [rules]
    recommender import omop SRC --out DIR [--drug-table T] [--condition-table T] [rules]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .fhir import import_fhir
from .mimic import import_mimic
from .omop import DEFAULT_ADVERSE_CONCEPTS, import_omop
from .report import ImportReport
from .synthea import import_synthea

__all__ = [
    "IMPORTERS",
    "ImportReport",
    "add_import_parser",
    "import_fhir",
    "import_mimic",
    "import_omop",
    "import_synthea",
]

#: Importer name -> function(src, out, **options) -> ImportReport.
IMPORTERS: dict[str, Callable[..., ImportReport]] = {
    "synthea": import_synthea,
    "mimic": import_mimic,
    "fhir": import_fhir,
    "omop": import_omop,
}


def add_import_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``import`` sub-command (``synthea``, ``mimic``, ``fhir``, ``omop``) to ``subparsers``.

    Every leaf parser sets ``func``: a callable taking the parsed Namespace, running the import,
    printing a one-line summary and returning the exit code 0. Input problems raise
    :class:`~recommender.exceptions.RecommenderError` for the caller to report.
    """
    parser = subparsers.add_parser(
        "import",
        help="convert an EHR export (Synthea, MIMIC, FHIR, OMOP CDM) into canonical tables",
        description="Convert an EHR export into a folder of canonical tables plus "
        "import_report.json/.md (rules: recommender/importers/README.md).",
    )
    kinds = parser.add_subparsers(
        dest="importer", metavar="{synthea,mimic,fhir,omop}", required=True
    )

    synthea = kinds.add_parser("synthea", help="Synthea CSV export (v2 or v3, .csv or .csv.gz)")
    synthea.add_argument("src", metavar="SRC", help="folder of the Synthea CSV files")
    _add_out(synthea)
    synthea.add_argument(
        "--include-procedures",
        action="store_true",
        help="procedures with a REASONCODE are treatments too",
    )
    synthea.add_argument(
        "--include-careplans",
        action="store_true",
        help="care plans with a REASONCODE are treatments too",
    )
    _add_observations(synthea, "observations.csv")
    _add_rules(synthea)
    synthea.set_defaults(func=_run_synthea)

    mimic = kinds.add_parser("mimic", help="MIMIC-III or MIMIC-IV (demo) CSV folder")
    mimic.add_argument("src", metavar="SRC", help="MIMIC folder (MIMIC-IV: the one holding hosp/)")
    _add_out(mimic)
    mimic.add_argument(
        "--readmission-days",
        type=int,
        default=30,
        metavar="DAYS",
        help="a new admission within this many days of discharge is a readmission (default 30)",
    )
    mimic.add_argument(
        "--long-stay-days",
        type=float,
        default=7.0,
        metavar="DAYS",
        help="a stay longer than this many days counts against the outcome (default 7)",
    )
    mimic.add_argument(
        "--drug-types",
        default="MAIN,ADDITIVE",
        metavar="TYPES",
        help="comma-separated prescription drug_type values kept "
        "(default MAIN,ADDITIVE; BASE = IV base solutions)",
    )
    mimic.add_argument(
        "--no-labs", action="store_true", help="ignore labevents (MIMIC-IV) in the outcome"
    )
    _add_observations(mimic, "labevents and omr results")
    mimic.set_defaults(func=_run_mimic)

    fhir = kinds.add_parser("fhir", help="FHIR R4 Bundle JSON or NDJSON (file or folder)")
    fhir.add_argument("src", metavar="BUNDLE_OR_NDJSON", help="a .json/.ndjson file or a folder")
    _add_out(fhir)
    fhir.add_argument(
        "--strict",
        action="store_true",
        help="fail on the first invalid resource instead of skipping it",
    )
    fhir.add_argument(
        "--include-procedures",
        action="store_true",
        help="procedures with a reason are treatments too",
    )
    _add_observations(fhir, "Observation resources")
    _add_rules(fhir)
    fhir.set_defaults(func=_run_fhir)
    _add_omop(kinds)
    return parser


def _add_omop(kinds) -> None:
    omop = kinds.add_parser(
        "omop", help="OMOP CDM 5.3/5.4 folder (.csv, .csv.gz or .parquet tables, any case)"
    )
    omop.add_argument("src", metavar="SRC", help="folder of the OMOP CDM tables")
    _add_out(omop)
    omop.add_argument(
        "--drug-table",
        choices=("auto", "drug_exposure", "drug_era"),
        default="auto",
        help="where drugs come from (default auto: drug_exposure, else drug_era)",
    )
    omop.add_argument(
        "--condition-table",
        choices=("auto", "condition_occurrence", "condition_era"),
        default="auto",
        help="where conditions come from (default auto: condition_occurrence, else condition_era)",
    )
    omop.add_argument(
        "--condition-types",
        type=_concept_list,
        default=None,
        metavar="IDS",
        help="comma-separated condition_type_concept_id values kept (default all)",
    )
    omop.add_argument(
        "--indication-window-days",
        type=int,
        default=30,
        metavar="DAYS",
        help="a condition recorded up to N days before a drug start may be its indication "
        "(default 30)",
    )
    omop.add_argument(
        "--adverse-concepts",
        type=_concept_list,
        default=DEFAULT_ADVERSE_CONCEPTS,
        metavar="IDS",
        help="comma-separated OMOP concept ids whose first record after a start is a harm "
        "(default 192671, gastrointestinal hemorrhage)",
    )
    _add_observations(omop, "measurement rows")
    _add_rules(omop, adverse_days=90, allergy=False)
    omop.set_defaults(func=_run_omop)


def _add_out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (replaced whole)"
    )


def _add_observations(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--no-observations",
        action="store_true",
        help=f"do not write {what} as the observations table",
    )


def _chronic(text: str) -> float | None:
    if text.strip().lower() == "drop":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number in [-1, 1] or 'drop', got {text!r}"
        ) from None


def _concept_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated OMOP concept ids (integers), got {text!r}"
        ) from None


def _add_rules(
    parser: argparse.ArgumentParser, *, adverse_days: int = 30, allergy: bool = True
) -> None:
    group = parser.add_argument_group("outcome rules (days)")
    group.add_argument(
        "--resolution-window-days",
        type=int,
        metavar="DAYS",
        default=90,
        help="condition ends within N days of the start = resolved (default 90)",
    )
    group.add_argument(
        "--switch-window-days",
        type=int,
        metavar="DAYS",
        default=365,
        help="another drug for the same episode within N days = switched (default 365)",
    )
    group.add_argument(
        "--adverse-window-days",
        type=int,
        metavar="DAYS",
        default=adverse_days,
        help=f"death or a matching {'allergy' if allergy else 'adverse-event condition'} "
        f"within N days = adverse (default {adverse_days})",
    )
    group.add_argument(
        "--chronic-min-days",
        type=int,
        metavar="DAYS",
        default=180,
        help="a course lasting N days (or still open) without other evidence is "
        "chronic (default 180)",
    )
    group.add_argument(
        "--chronic-outcome",
        type=_chronic,
        default=0.5,
        metavar="VALUE",
        help="outcome of a chronic course, or 'drop' (default 0.5)",
    )
    if allergy:
        group.add_argument(
            "--allergy-match",
            choices=("substance", "any"),
            default="substance",
            help="which new allergies are adverse: one to the drug's substance (default) or any",
        )


def _rules(args: argparse.Namespace) -> dict:
    rules = {
        "resolution_window_days": args.resolution_window_days,
        "switch_window_days": args.switch_window_days,
        "adverse_window_days": args.adverse_window_days,
        "chronic_min_days": args.chronic_min_days,
        "chronic_outcome": args.chronic_outcome,
    }
    if hasattr(args, "allergy_match"):
        rules["allergy_match"] = args.allergy_match
    return rules


def _finish(report: ImportReport, out: str) -> int:
    print(f"{report.summary()} -> {out}")
    return 0


def _run_synthea(args: argparse.Namespace) -> int:
    report = import_synthea(
        args.src,
        args.out,
        include_procedures=args.include_procedures,
        include_careplans=args.include_careplans,
        include_observations=not args.no_observations,
        **_rules(args),
    )
    return _finish(report, args.out)


def _run_mimic(args: argparse.Namespace) -> int:
    drug_types = tuple(t.strip().upper() for t in args.drug_types.split(",") if t.strip())
    report = import_mimic(
        args.src,
        args.out,
        readmission_days=args.readmission_days,
        long_stay_days=args.long_stay_days,
        drug_types=drug_types,
        use_labs=not args.no_labs,
        include_observations=not args.no_observations,
    )
    return _finish(report, args.out)


def _run_fhir(args: argparse.Namespace) -> int:
    report = import_fhir(
        args.src,
        args.out,
        strict=args.strict,
        include_procedures=args.include_procedures,
        include_observations=not args.no_observations,
        **_rules(args),
    )
    return _finish(report, args.out)


def _run_omop(args: argparse.Namespace) -> int:
    report = import_omop(
        args.src,
        args.out,
        drug_table=args.drug_table,
        condition_table=args.condition_table,
        condition_types=args.condition_types,
        include_observations=not args.no_observations,
        indication_window_days=args.indication_window_days,
        adverse_concepts=args.adverse_concepts,
        **_rules(args),
    )
    return _finish(report, args.out)
