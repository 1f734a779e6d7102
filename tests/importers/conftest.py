"""Fixtures of the importer tests: where the shared EHR datasets are, skipping when absent."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from recommender.importers import add_import_parser

REPO_ROOT = Path(__file__).resolve().parents[2]
#: ``../shared/datasets`` relative to the repository root (see its README.md).
SHARED_DATASETS = (REPO_ROOT / ".." / "shared" / "datasets").resolve()


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The shared datasets folder; the test is skipped when it is absent."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(
            f"shared EHR datasets not found at {SHARED_DATASETS} (expected "
            "../shared/datasets beside the repository root)"
        )
    return SHARED_DATASETS


def shared_dataset(name: str) -> Path:
    """One shared dataset folder by name, skipping the test when it is absent."""
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(
            f"shared dataset {name!r} not found at {path} (../shared/datasets/{name} "
            "relative to the repository root)"
        )
    return path


@pytest.fixture
def import_cli():
    """Parse ``recommender import ...`` arguments with the importers' own parser."""
    parser = argparse.ArgumentParser(prog="recommender")
    add_import_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args
