"""``recommender evaluate``: split the data, fit several models, write metrics, tables and plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..models import MODELS
from .options import add_data_options, policy_from, positive_int

SPLIT_CHOICES = ("leave-last", "leave-k-out", "temporal", "leave-last-episode")
DEFAULT_MODELS = "popular,condition-popular,als,bm25"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="compare models on a held-out split",
        description="Hold out outcomes (--split), fit each model on the rest, rank the held-out "
        "treatments with the safety exclusions applied, and write results.json, "
        "report.md, per-query tables and plots to --out. If the folder has a "
        "held_out table (recommender generate), hit@1 against the planted best "
        "therapy is reported as well.",
    )
    parser.add_argument("--data", required=True, help="folder of canonical tables")
    parser.add_argument(
        "--split",
        choices=SPLIT_CHOICES,
        default="leave-last",
        help="how outcomes are held out (default %(default)s)",
    )
    parser.add_argument(
        "--models",
        type=model_list,
        default=model_list(DEFAULT_MODELS),
        help=f"comma-separated model kinds from {','.join(sorted(MODELS))} "
        f"(default {DEFAULT_MODELS})",
    )
    parser.add_argument(
        "-k", type=positive_int, default=10, help="headline cut-off (default %(default)s)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the leave-k-out split and of the models (default %(default)s)",
    )
    parser.add_argument(
        "--leave-out",
        type=positive_int,
        default=1,
        help="treatments held out per patient with --split leave-k-out (default %(default)s)",
    )
    parser.add_argument("--cutoff", help="ISO date for --split temporal (default: from --fraction)")
    parser.add_argument(
        "--fraction",
        type=float,
        default=0.2,
        help="share of timestamped rows held out by --split temporal (default %(default)s)",
    )
    parser.add_argument(
        "--all-treatments",
        action="store_true",
        help="one query per patient over every treatment, instead of per "
        "(patient, condition) over the condition's treatments",
    )
    parser.add_argument("--no-planted", action="store_true", help="skip the planted-cohort check")
    parser.add_argument(
        "--ope",
        action="store_true",
        help="also value each model's first choices on the first-line decisions after a time "
        "split (--cutoff or --fraction) by off-policy evaluation (IPS, SNIPS, DR with "
        "patient-bootstrap intervals); writes ope.json, ope.md and ope_decisions_<model>.csv",
    )
    parser.add_argument(
        "--bootstrap",
        type=positive_int,
        default=1000,
        help="bootstrap replicates of the off-policy intervals (default %(default)s)",
    )
    parser.add_argument(
        "--out",
        default="evaluation",
        help="report folder, replaced atomically (default %(default)s)",
    )
    add_data_options(parser)
    parser.set_defaults(func=run)


def model_list(text: str) -> list[str]:
    kinds = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [k for k in kinds if k not in MODELS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(
            f"unknown model(s) {unknown or [text]}; choose from {','.join(sorted(MODELS))}"
        )
    return kinds


def make_split(tables, args):
    from ..data import splits as split

    if args.split == "leave-k-out":
        return split.leave_k_out(tables, k=args.leave_out, seed=args.seed)
    if args.split == "temporal":
        return split.temporal(tables, cutoff=args.cutoff, fraction=args.fraction)
    return split.SPLITS[args.split](tables)


def seeded_models(kinds: list[str], seed: int) -> dict:
    """Models by kind, with ``random_state=seed`` where the model has one."""
    from ..models import make_model

    models = {}
    for kind in kinds:
        model = make_model(kind)
        if "random_state" in model.get_params():
            model.set_params(random_state=seed)
        models[kind] = model
    return models


def run(args) -> int:
    from ..data.dataset import Dataset
    from ..data.tables import find_table, read_tables
    from ..evaluation.evaluate import evaluate_split
    from ..evaluation.planted import evaluate_planted
    from ..evaluation.report import write_report
    from ..evaluation.truth import TRUTH, evaluate_against_truth

    tables = read_tables(args.data)
    split = make_split(tables, args)
    models = seeded_models(args.models, args.seed)
    options = {"policy": policy_from(args), "side_info": args.side_info}
    result = evaluate_split(
        models, split, k=args.k, by_condition=not args.all_treatments, **options
    )
    folder = Path(args.data)
    if not args.no_planted and find_table(folder, TRUTH) is not None:
        dataset = Dataset.from_tables(tables, **options)
        result.truth = evaluate_against_truth(
            seeded_models(args.models, args.seed), dataset, folder
        )
    elif not args.no_planted and find_table(folder, "held_out") is not None:
        result.planted = evaluate_planted(models, args.data, **options)
    ope = None
    if args.ope:
        from ..evaluation.off_policy import off_policy_evaluation

        cutoff = args.cutoff if args.split != "temporal" or args.cutoff else None
        ope = off_policy_evaluation(
            seeded_models(args.models, args.seed),
            tables,
            cutoff=cutoff,
            fraction=args.fraction,
            n_bootstrap=args.bootstrap,
            seed=args.seed,
            **options,
        )
    path = write_report(
        result,
        args.out,
        title=f"Evaluation of {Path(args.data).name}",
        extra=ope.write if ope is not None else None,
    )
    print(
        f"{split.method}: {len(split.test)} held-out rows, "
        f"{result.models[next(iter(result.models))].summary['n_queries']} queries"
    )
    print(result.summary_frame().to_string(float_format=lambda v: f"{v:.4f}"))
    if result.planted is not None:
        hits = ", ".join(f"{name} {value:.3f}" for name, value in result.planted.hit_at_1.items())
        print(f"planted hit@1: {hits}; Bayes {result.planted.bayes_rate:.3f}")
    if result.truth is not None:
        print("policy value against the truth (gap closed: all / warm / cold):")
        for name, gap in result.truth.gaps.items():
            print(f"  {name}: " + " / ".join(f"{gap[g]:.3f}" for g in ("all", "warm", "cold")))
    if ope is not None:
        print(ope.markdown().strip())
    print(f"wrote {path}")
    return 0
