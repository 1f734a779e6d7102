"""``recommender recommend``: top-k for one patient, a file of requests, or every patient."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pandas as pd

from ..columns import Columns as C
from ..data.policies import DUPLICATE_MODES
from ..exceptions import DataValidationError, ParameterError
from ..utils.escaping import csv_safe
from ..utils.fileutil import atomic_path
from .options import (
    add_engine_options,
    add_key_option,
    check_engine,
    positive_int,
    pseudonymizer_from,
)
from .output import table


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "recommend",
        help="rank treatments from an artifact",
        description="Rank treatments for one patient (--patient), for each row of a requests file "
        "(--requests, with patient_id and optional condition_id), or for every patient "
        "in the model (--all). Safety exclusions always apply.",
    )
    parser.add_argument("--artifact", required=True, help="artifact folder")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--patient", help="patient id")
    target.add_argument("--requests", help="CSV or Parquet file of requests")
    target.add_argument("--all", action="store_true", help="every patient in the model")
    parser.add_argument("--condition", help="restrict to treatments used for this condition id")
    parser.add_argument(
        "-k", type=positive_int, default=10, help="list length (default %(default)s)"
    )
    parser.add_argument(
        "--include-tried",
        action="store_true",
        help="rank treatments the patient already tried (harmful ones stay excluded)",
    )
    parser.add_argument(
        "--active",
        action="append",
        metavar="ID",
        help="with --patient: a treatment (or ingredient, e.g. drug|hydrochlorothiazide) the "
        "patient is on now, checked for interactions and duplicate therapy; repeatable",
    )
    parser.add_argument(
        "--duplicates",
        choices=DUPLICATE_MODES,
        help="override the artifact's duplicate-therapy policy: exclude a treatment sharing an "
        "active ingredient with an active one, or keep it flagged as a dose change",
    )
    parser.add_argument(
        "--format",
        choices=("json", "table"),
        default="json",
        help="output of --patient (default %(default)s)",
    )
    parser.add_argument(
        "--out",
        help="output file for --requests/--all (.csv, .csv.gz or .parquet); "
        "with --all on a pseudonymised model the ids are pseudonyms",
    )
    add_key_option(parser)
    add_engine_options(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..models.persistence import load_artifact

    check_engine(args)
    if args.engine == "spark":
        return run_spark(args)
    model = load_artifact(args.artifact, pseudonymizer=pseudonymizer_from(args)).model
    if args.duplicates:
        dataset = model.dataset_
        dataset.safety = dataclasses.replace(dataset.safety, duplicates=args.duplicates)
    if args.active and args.patient is None:
        raise ParameterError("--active describes one patient: use it with --patient")
    if args.patient is not None:
        answer = model.recommend(
            args.patient,
            k=args.k,
            condition_id=args.condition,
            include_tried=args.include_tried,
            active_treatments=args.active,
        )
        print(json.dumps(answer.to_dict(), indent=2) if args.format == "json" else table(answer))
        return 0
    if not args.out:
        raise DataValidationError("--out is required with --requests and --all", column="--out")
    if args.all:
        from ..ranking import recommend_all

        frame = recommend_all(
            model,
            k=args.k,
            condition_id=args.condition,
            include_tried=args.include_tried,
            show_progress=sys.stderr.isatty(),
        )
        patients = model.dataset_.patients.external_ids
    else:
        requests = read_requests(Path(args.requests))
        patients, conditions = requests[C.patient].tolist(), requests[C.condition].tolist()
        frame = model.recommend_batch(
            patients,
            k=args.k,
            condition_ids=conditions,
            include_tried=args.include_tried,
            show_progress=sys.stderr.isatty(),
        )
    write_frame(frame, Path(args.out))
    print(f"wrote {len(frame)} rows for {len(patients)} requests to {args.out}")
    return 0


def run_spark(args) -> int:
    """``--engine spark --all``: rank every patient on Spark, writing a Parquet dataset."""
    from ..spark import require_pyspark

    if not args.all:
        raise ParameterError("--engine spark ranks every patient: use it with --all")
    if args.duplicates:
        raise ParameterError(
            "--duplicates cannot override the policy on Spark, whose executors load the "
            "artifact themselves: train with --duplicates instead"
        )
    if not args.out or Path(args.out).suffix in (".csv", ".gz"):
        raise DataValidationError(
            "--engine spark writes Parquet: give --out a folder or a name ending in .parquet",
            column="--out",
        )
    require_pyspark()
    from ..spark.rank import rank_all_spark

    summary = rank_all_spark(
        args.artifact,
        args.out,
        k=args.k,
        condition_id=args.condition,
        include_tried=args.include_tried,
        master=args.spark_master,
        pseudonymizer=pseudonymizer_from(args),
    )
    print(
        f"wrote {summary.n_rows} rows for {summary.n_patients} patients to {args.out} "
        "(a Parquet dataset folder written by Spark)"
    )
    return 0


def read_requests(path: Path) -> pd.DataFrame:
    """Requests table: patient_id (required) and condition_id (optional, empty = none)."""
    if not path.is_file():
        raise DataValidationError("no such file", file=str(path))
    frame = (
        pd.read_parquet(path)
        if path.suffix == ".parquet"
        else pd.read_csv(path, dtype=str, keep_default_na=False)
    )
    if C.patient not in frame:
        raise DataValidationError(
            f"missing required column '{C.patient}' (found {list(frame.columns)})",
            file=str(path),
            column=C.patient,
        )
    frame[C.patient] = frame[C.patient].astype(str).str.strip()
    empty = (frame[C.patient] == "").to_numpy()
    if empty.any():
        raise DataValidationError(
            "empty patient id", file=str(path), row=int(empty.argmax()) + 1, column=C.patient
        )
    if C.condition in frame:
        condition = frame[C.condition].astype(str).str.strip().astype(object)
        frame[C.condition] = condition.where(condition != "", None)
    else:
        frame[C.condition] = None
    return frame


def write_frame(frame: pd.DataFrame, path: Path) -> None:
    """Write atomically; the extension decides the format (CSV text cells neutralised:
    :func:`recommender.utils.escaping.csv_safe`)."""
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            csv_safe(frame).to_csv(
                tmp, index=False, compression="gzip" if path.suffix == ".gz" else None
            )
