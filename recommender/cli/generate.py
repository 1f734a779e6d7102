"""``recommender generate``: write a synthetic cohort with planted truth."""

from __future__ import annotations

import sys

from .options import positive_int


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="write a synthetic cohort with planted truth",
        description="Write the canonical tables of a synthetic cohort in "
        "which a hidden trait decides the best therapy, plus "
        "held_out.csv with the true best therapies.",
    )
    parser.add_argument("--out", required=True, help="output folder (replaced atomically)")
    parser.add_argument("--patients", type=positive_int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--conditions", type=positive_int, default=10)
    parser.add_argument("--treatments-per-condition", type=positive_int, default=5)
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..data.synthetic.planted import generate_cohort, write_cohort

    cohort = generate_cohort(
        args.patients,
        seed=args.seed,
        n_conditions=args.conditions,
        treatments_per_condition=args.treatments_per_condition,
        show_progress=sys.stderr.isatty(),
    )
    write_cohort(cohort, args.out, file_format=args.format)
    print(
        f"wrote {len(cohort.tables['outcomes'])} outcomes for {args.patients} patients and "
        f"{len(cohort.held_out)} held-out episodes to {args.out}"
    )
    return 0
