"""``recommender import synthea|mimic|fhir|omop``: EHR exports -> canonical tables (see importers/)."""

from __future__ import annotations


def register(subparsers) -> None:
    from ..importers import add_import_parser

    add_import_parser(subparsers)
