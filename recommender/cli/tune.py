"""``recommender tune``: search one model's hyperparameters and, optionally, train the best."""

from __future__ import annotations

import sys

from .options import add_model_option, positive_int, side_info_from


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "tune",
        help="search hyperparameters on a validation split",
        description="Search a model's factors, regularization, iterations (and learning rate or "
        "K where it has them) and the confidence policy's alpha and side weight, "
        "scoring each trial by NDCG@k on a leave-last validation split of --data. "
        "Writes the trials to --out (CSV) and the best configuration beside it (JSON).",
    )
    parser.add_argument("--data", required=True, help="folder of canonical tables (training data)")
    add_model_option(parser)
    parser.add_argument(
        "--trials", type=positive_int, default=20, help="trials (default %(default)s)"
    )
    parser.add_argument(
        "--search",
        choices=("random", "grid"),
        default="random",
        help="random draws, or the grid in a seeded order (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the search and the models")
    parser.add_argument(
        "-k", type=positive_int, default=10, help="NDCG cut-off (default %(default)s)"
    )
    parser.add_argument(
        "--out",
        help="trials table, CSV (default tune-MODEL.csv); the best "
        "configuration goes to the same name with .json",
    )
    parser.add_argument(
        "--train-best",
        metavar="ARTIFACT",
        help="fit the best configuration on all of --data and save an artifact here",
    )
    parser.add_argument(
        "--side-info",
        default="conditions",
        type=side_info_from,
        help="comma-separated side columns from conditions,age_band,sex, or 'none' "
        "(default %(default)s)",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..data.tables import read_tables
    from ..evaluation.tune import train_best, tune, write_results

    tables = read_tables(args.data)
    result = tune(
        tables,
        args.model,
        trials=args.trials,
        search=args.search,
        seed=args.seed,
        k=args.k,
        side_info=args.side_info,
    )
    csv_path, json_path = write_results(result, args.out or f"tune-{args.model}.csv")
    shown = result.trials.head(5)
    print(f"{len(result.trials)} trials of {args.model}, best first ({result.metric}):")
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {csv_path} and {json_path}")
    if args.train_best:
        path = train_best(
            result,
            tables,
            args.train_best,
            side_info=args.side_info,
            show_progress=sys.stderr.isatty(),
        )
        print(f"wrote {args.model} artifact with the best configuration to {path}")
    return 0
