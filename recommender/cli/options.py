"""Argument types and option groups shared by several sub-commands."""

from __future__ import annotations

import argparse

from ..data.policies import ConfidencePolicy
from ..data.pseudonym import KEY_FILE_VARIABLE, Pseudonymizer
from ..data.side_info import SideInfo
from ..exceptions import ParameterError
from ..models import MODELS
from ..models.registry import DEFAULT_MODEL


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive whole number, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """Options that decide how tables become a Dataset (policy and side information)."""
    group = parser.add_argument_group("data encoding")
    group.add_argument(
        "--alpha",
        type=non_negative_float,
        default=ConfidencePolicy.alpha,
        help="confidence per unit outcome (default %(default)s)",
    )
    group.add_argument(
        "--side-weight",
        type=non_negative_float,
        default=ConfidencePolicy.side_weight,
        help="strength of side-information columns (default %(default)s)",
    )
    group.add_argument(
        "--side-info",
        default="conditions",
        type=side_info_from,
        help="comma-separated side columns from conditions,age_band,sex, or 'none' "
        "(default %(default)s)",
    )


def side_info_from(text: str) -> SideInfo:
    names = {part.strip() for part in text.split(",") if part.strip()} - {"none"}
    unknown = names - {"conditions", "age_band", "sex"}
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown side-information column(s) {sorted(unknown)}; "
            "choose from conditions, age_band, sex"
        )
    return SideInfo(
        conditions="conditions" in names, age_band="age_band" in names, sex="sex" in names
    )


def policy_from(args) -> ConfidencePolicy:
    return ConfidencePolicy(alpha=args.alpha, side_weight=args.side_weight)


def add_model_option(parser: argparse.ArgumentParser, default: str | None = DEFAULT_MODEL) -> None:
    parser.add_argument(
        "--model",
        choices=sorted(MODELS),
        default=default,
        help=f"model family (default {default or DEFAULT_MODEL}"
        + (", or als with --engine spark)" if default is None else ")"),
    )


def add_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pseudonym-key-file",
        metavar="FILE",
        help=f"secret key that pseudonymises patient ids (default ${KEY_FILE_VARIABLE}; "
        "without a key, ids stay as given)",
    )


def pseudonymizer_from(args) -> Pseudonymizer | None:
    """The key from --pseudonym-key-file, else from the environment, else None."""
    if getattr(args, "pseudonym_key_file", None):
        return Pseudonymizer.from_file(args.pseudonym_key_file)
    return Pseudonymizer.from_environment()


def add_engine_options(parser) -> None:
    """``--engine`` and ``--spark-master`` (train and recommend)."""
    group = parser.add_argument_group("engine")
    group.add_argument(
        "--engine",
        choices=("local", "spark"),
        default="local",
        help="run on this machine or on Apache Spark (needs the [spark] extra and "
        "Java 17+; see docs/spark.md) (default %(default)s)",
    )
    group.add_argument(
        "--spark-master",
        metavar="URL",
        help="Spark master for --engine spark (default $RECOMMENDER_SPARK_MASTER, "
        "then spark-defaults.conf, then local[2])",
    )


def check_engine(args) -> None:
    """Refuse Spark-only options without --engine spark."""
    if args.engine != "spark" and args.spark_master:
        raise ParameterError("--spark-master applies only with --engine spark")
