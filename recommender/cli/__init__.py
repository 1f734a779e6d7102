"""The ``recommender`` command line: one module per sub-command, each with ``register(subparsers)``.

Errors the user can fix (:class:`~recommender.exceptions.RecommenderError`) print one line
``error: ...`` and exit with status 2; there is no traceback for a user mistake.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from ..exceptions import RecommenderError

#: Sub-command modules, in the order ``--help`` lists them.
COMMANDS = (
    "generate",
    "imports",
    "train",
    "recommend",
    "evaluate",
    "tune",
    "audit",
    "model_card",
    "serve",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recommender",
        description="Rank therapies for patients from historical treatment outcomes. "
        "Suggestions support a clinician's decision; they never replace it.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except RecommenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
