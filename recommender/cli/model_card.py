"""``recommender model-card``: the artifact's model card as Markdown."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "model-card",
        help="write the model card of an artifact",
        description="Write a Markdown model card: intended use and users, inputs, how the "
        "algorithm works, training data, validation results, subgroup results, "
        "safety rules, known limitations and version. Reads only the manifest.",
    )
    parser.add_argument("--artifact", required=True, help="artifact folder")
    parser.add_argument(
        "--audit",
        metavar="DIR_OR_JSON",
        help="report of `recommender audit` (folder or audit.json)",
    )
    parser.add_argument(
        "--evaluation",
        metavar="DIR_OR_JSON",
        help="report of `recommender evaluate` (folder or results.json)",
    )
    parser.add_argument("--out", metavar="FILE.md", help="output file (default: standard output)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..trust.model_card import model_card_markdown, write_model_card

    if args.out:
        path = write_model_card(
            args.artifact, args.out, audit=args.audit, evaluation=args.evaluation
        )
        print(f"wrote {path}")
    else:
        print(model_card_markdown(args.artifact, audit=args.audit, evaluation=args.evaluation))
    return 0
