"""``recommender audit``: metrics and exposure per patient subgroup, gaps flagged."""

from __future__ import annotations

import argparse

from .options import add_key_option, non_negative_float, positive_int, pseudonymizer_from

SPLIT_CHOICES = ("leave-last", "leave-k-out", "temporal", "leave-last-episode")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="compare model quality and exposure across patient groups",
        description="Re-fit the artifact's model kind and parameters on a training split of "
        "--data and compute the held-out metrics per patient group (--by), the "
        "largest gap per metric (groups with at least --min-group-size queries) "
        "and the exposure of each treatment per group from the artifact's own "
        "top-k lists. Gaps above --max-gap are flagged. Writes audit.json, "
        "audit.md and PNG charts to --out. See docs/audit.md.",
    )
    parser.add_argument("--artifact", required=True, help="artifact folder")
    parser.add_argument("--data", required=True, help="folder of canonical tables (with patients)")
    parser.add_argument(
        "--by",
        type=attribute_list,
        help="comma-separated patient columns, e.g. sex,age_band,race (age_band "
        "comes from birth_year; default: those of sex,age_band,race,"
        "ethnicity,payer the data has)",
    )
    parser.add_argument(
        "--split",
        choices=SPLIT_CHOICES,
        default="leave-last",
        help="how outcomes are held out for the metrics (default %(default)s)",
    )
    parser.add_argument(
        "-k",
        type=positive_int,
        default=10,
        help="cut-off of the metrics and of the exposure lists (default %(default)s)",
    )
    parser.add_argument(
        "--max-gap",
        type=non_negative_float,
        default=0.10,
        help="flag a metric whose gap between groups exceeds this (default %(default)s)",
    )
    parser.add_argument(
        "--min-group-size",
        type=positive_int,
        default=30,
        help="fewest queries a group needs to count in a gap (default %(default)s)",
    )
    parser.add_argument(
        "--requests",
        choices=("condition", "patient"),
        default="condition",
        help="exposure lists: one per patient and diagnosed condition, or one per "
        "patient over every treatment (default %(default)s)",
    )
    parser.add_argument(
        "--out", default="audit", help="report folder, replaced atomically (default %(default)s)"
    )
    parser.add_argument(
        "--fail-on-flag",
        action="store_true",
        help="exit with status 1 when a gap is flagged (for CI)",
    )
    add_key_option(parser)
    parser.set_defaults(func=run)


def attribute_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated column names, got {text!r}")
    return names


def run(args) -> int:
    from ..trust.subgroup_audit import audit
    from ..trust.subgroup_report import write_audit

    result = audit(
        args.artifact,
        args.data,
        by=args.by,
        k=args.k,
        split=args.split,
        min_group_size=args.min_group_size,
        max_gap=args.max_gap,
        requests=args.requests,
        pseudonymizer=pseudonymizer_from(args),
    )
    path = write_audit(result, args.out)
    split = result.info["split"]
    print(
        f"{split['method']}: {split['n_queries']} held-out queries; "
        f"{result.info['exposure']['n_requests']} exposure lists; by {','.join(result.attributes)}"
    )
    for note in result.info["notes"]:
        print(f"note: {note}")
    flags = result.flags
    for row in flags.itertuples():
        print(
            f"FLAG {row.attribute} {row.metric}: gap {row.gap:.3f} ({row.high_group} "
            f"{row.high:.3f} vs {row.low_group} {row.low:.3f}) > {result.max_gap:g}"
        )
    if flags.empty:
        print(f"no gap above {result.max_gap:g}")
    print(f"wrote {path}")
    return 1 if args.fail_on_flag and not flags.empty else 0
