"""``recommender train``: canonical tables -> verified artifact."""

from __future__ import annotations

import json
import sys

from ..data.policies import DUPLICATE_MODES, SafetyPolicy
from ..exceptions import ParameterError
from ..models import MODELS
from ..models.registry import DEFAULT_MODEL
from .options import (
    add_data_options,
    add_engine_options,
    add_key_option,
    add_model_option,
    check_engine,
    policy_from,
    positive_int,
    pseudonymizer_from,
)

#: CLI option -> model parameter name; only models that have the parameter accept the option.
MODEL_OPTIONS = {
    "factors": "factors",
    "iterations": "iterations",
    "regularization": "regularization",
    "seed": "random_state",
    "K": "K",
}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fit a model and write an artifact",
        description="Fit a model on the canonical tables in --data and "
        "write a checksummed artifact folder to --out.",
    )
    parser.add_argument("--data", required=True, help="folder of canonical tables")
    parser.add_argument("--out", required=True, help="artifact folder (replaced atomically)")
    add_model_option(parser, default=None)
    parser.add_argument("--factors", type=positive_int)
    parser.add_argument("--iterations", type=positive_int)
    parser.add_argument("--regularization", type=float)
    parser.add_argument("--K", type=positive_int, help="neighbours (cosine, bm25)")
    parser.add_argument("--seed", type=int, help="random seed of the model")
    parser.add_argument(
        "--params",
        type=json.loads,
        default={},
        help="more model parameters as JSON, e.g. '{\"learning_rate\": 0.05}'",
    )
    parser.add_argument(
        "--min-support",
        type=int,
        default=SafetyPolicy.min_support,
        help="do not offer a treatment received by fewer patients (default %(default)s)",
    )
    parser.add_argument(
        "--active-window-days",
        type=int,
        default=SafetyPolicy.active_window_days,
        help="a treatment that worked this recently is active for the interaction "
        "and duplicate-therapy checks (default %(default)s)",
    )
    parser.add_argument(
        "--duplicates",
        choices=DUPLICATE_MODES,
        default=SafetyPolicy.duplicates,
        help="a treatment sharing an active ingredient with an active one is excluded, or "
        "kept and flagged as a dose change (default %(default)s)",
    )
    parser.add_argument(
        "--feedback",
        metavar="FILE",
        help="clinicians' accept/override decisions (JSON lines) to add as signal",
    )
    parser.add_argument(
        "--feedback-weight",
        type=float,
        default=0.25,
        help="strength of a decision in outcome units (default %(default)s)",
    )
    add_data_options(parser)
    add_key_option(parser)
    add_engine_options(parser)
    parser.add_argument(
        "--encode",
        choices=("local", "spark"),
        default="local",
        help="with --engine spark, where the tables become matrices: this machine "
        "(the local engine's code) or a Spark job, for tables beyond one "
        "machine's memory; --data may then be any path Spark reads "
        "(default %(default)s)",
    )
    parser.set_defaults(func=run)


def model_params(args) -> dict:
    """Model parameters from the explicit options and --params, checked against the model."""
    accepted = set(MODELS[args.model]().get_params())
    params = dict(args.params)
    for option, name in MODEL_OPTIONS.items():
        value = getattr(args, option, None)
        if value is None:
            continue
        if name not in accepted:
            raise ParameterError(
                f"--{option} does not apply to the {args.model} model; it takes "
                f"{sorted(accepted) or 'no parameters'}"
            )
        params[name] = value
    return params


def run(args) -> int:
    from ..data.feedback import read_feedback
    from ..training import train_artifact

    check_engine(args)
    if args.model is None:  # Spark trains ALS only
        args.model = "als" if args.engine == "spark" else DEFAULT_MODEL
    pseudonymizer = pseudonymizer_from(args)
    feedback = read_feedback(args.feedback) if args.feedback else None
    safety = SafetyPolicy(
        min_support=args.min_support,
        active_window_days=args.active_window_days,
        duplicates=args.duplicates,
    )
    if args.engine == "spark":
        return run_spark(
            args,
            pseudonymizer,
            safety=safety,
            feedback=feedback,
            feedback_weight=args.feedback_weight,
        )
    if args.encode != "local":
        raise ParameterError("--encode spark applies only with --engine spark")
    path = train_artifact(
        args.data,
        args.out,
        kind=args.model,
        params=model_params(args),
        policy=policy_from(args),
        side_info=args.side_info,
        pseudonymizer=pseudonymizer,
        show_progress=sys.stderr.isatty(),
        safety=safety,
        feedback=feedback,
        feedback_weight=args.feedback_weight,
    )
    keyed = "pseudonymised" if pseudonymizer else "raw (no pseudonymisation key given)"
    print(f"wrote {args.model} artifact to {path}; patient ids: {keyed}")
    return 0


def run_spark(args, pseudonymizer, **dataset_options) -> int:
    """``--engine spark``: Spark MLlib ALS, exported as the standard artifact."""
    from ..spark import require_pyspark

    if args.model != "als":
        raise ParameterError(f"--engine spark trains --model als only; got --model {args.model}")
    require_pyspark()
    from ..spark.train import train_spark_artifact

    path = train_spark_artifact(
        args.data,
        args.out,
        params=model_params(args),
        policy=policy_from(args),
        side_info=args.side_info,
        pseudonymizer=pseudonymizer,
        master=args.spark_master,
        encode=args.encode,
        **dataset_options,
    )
    keyed = "pseudonymised" if pseudonymizer else "raw (no pseudonymisation key given)"
    print(f"wrote als artifact (trained on Spark) to {path}; patient ids: {keyed}")
    return 0
