"""``recommender generate``: write a synthetic cohort with known truth."""

from __future__ import annotations

import sys

from .options import positive_int

COHORTS = ("observational", "planted")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="write a synthetic cohort with known truth",
        description="Write the canonical tables of a synthetic cohort and its truth. "
        "'observational' (the default): response depends on covariates, labs and a hidden "
        "trait, clinicians choose by indication (confounding), step therapy, cold-start "
        "patients; truth_held_out.csv, truth_logged.csv and reference_policies.csv give every "
        "candidate's true success probability and the reference policies' values. 'planted': "
        "a hidden discrete trait decides the best therapy; held_out.csv names it.",
    )
    parser.add_argument("--out", required=True, help="output folder (replaced atomically)")
    parser.add_argument(
        "--cohort", choices=COHORTS, default="observational", help="the story (default %(default)s)"
    )
    parser.add_argument("--patients", type=positive_int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--conditions", type=positive_int, default=10)
    parser.add_argument("--treatments-per-condition", type=positive_int, default=5)
    parser.add_argument(
        "--cold-start-share",
        type=float,
        default=0.2,
        help="observational: share of patients whose only episode is held out (default %(default)s)",
    )
    parser.add_argument(
        "--unobserved-confounding",
        type=float,
        default=0.0,
        help="observational: how much clinicians' choice also follows the unrecorded part of "
        "severity (0: every confounder is recorded; default %(default)s)",
    )
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv")
    parser.set_defaults(func=run)


def run(args) -> int:
    progress = sys.stderr.isatty()
    if args.cohort == "planted":
        from ..data.synthetic.planted import generate_cohort, write_cohort

        cohort = generate_cohort(
            args.patients,
            seed=args.seed,
            n_conditions=args.conditions,
            treatments_per_condition=args.treatments_per_condition,
            show_progress=progress,
        )
        write_cohort(cohort, args.out, file_format=args.format)
    else:
        from ..data.synthetic.observational import generate_observational, write_observational

        cohort = generate_observational(
            args.patients,
            seed=args.seed,
            n_conditions=args.conditions,
            treatments_per_condition=args.treatments_per_condition,
            cold_start_share=args.cold_start_share,
            unobserved_confounding=args.unobserved_confounding,
            show_progress=progress,
        )
        write_observational(cohort, args.out, file_format=args.format)
    print(
        f"wrote {len(cohort.tables['outcomes'])} outcomes for {args.patients} patients and "
        f"{len(cohort.held_out)} held-out episodes ({args.cohort}) to {args.out}"
    )
    return 0
