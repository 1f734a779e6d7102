"""Shared fixtures: a tiny seeded cohort built in memory, and the same cohort written to a folder."""

from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest

from recommender.data.tables import CohortTables, validate_tables, write_tables

LABELS = np.array(["responded", "partial", "no_response", "worsened", "adverse"])


def make_cohort(
    seed: int = 0, n_patients: int = 80, n_conditions: int = 3, treatments_per_condition: int = 4
) -> CohortTables:
    """A small cohort with a hidden two-valued trait deciding which therapy works.

    For condition ``C{c}`` the therapy ``C{c}-T{(trait + c) % n}`` usually responds and the
    others usually fail. Each patient has two condition episodes, tries two or three therapies
    per episode in time order (the last try of an episode is the one that worked when it was
    tried), and about a fifth carry allergy ``ALG``, which contraindicates ``C0-T3``.
    """
    rng = np.random.default_rng(seed)
    n_t = treatments_per_condition
    rows, diagnoses = [], []
    for i in range(n_patients):
        pid, trait = f"P{i:03d}", int(rng.integers(0, 2))
        day = int(rng.integers(0, 30))
        for c in rng.choice(n_conditions, size=2, replace=False):
            diagnoses.append((pid, f"C{c}"))
            best = (trait + c) % n_t
            tries = rng.permutation([t for t in range(n_t) if t != best])[: int(rng.integers(1, 3))]
            for t in [*tries, best]:
                label = "responded" if t == best else LABELS[2 + int(rng.integers(0, 3))]
                rows.append((pid, f"C{c}-T{t}", label, _date(day), f"C{c}"))
                day += int(rng.integers(5, 40))
        if rng.random() < 0.2:
            diagnoses.append((pid, "ALG"))
    outcomes = pd.DataFrame(
        rows, columns=["patient_id", "treatment_id", "outcome", "timestamp", "condition_id"]
    )
    patients = pd.DataFrame(
        {
            "patient_id": [f"P{i:03d}" for i in range(n_patients)],
            "sex": rng.choice(["F", "M"], n_patients),
            "birth_year": rng.integers(1940, 2000, n_patients).astype(str),
        }
    )
    return validate_tables(
        {
            "outcomes": outcomes,
            "patients": patients,
            "patient_conditions": pd.DataFrame(diagnoses, columns=["patient_id", "condition_id"]),
            "contraindications": pd.DataFrame({"treatment_id": ["C0-T3"], "condition_id": ["ALG"]}),
        }
    )


def _date(day: int) -> str:
    return (pd.Timestamp("2020-01-01") + pd.Timedelta(days=day)).strftime("%Y-%m-%d")


@pytest.fixture
def tiny_tables() -> CohortTables:
    """80 patients, 3 conditions x 4 therapies, about 450 outcome rows (seed 0)."""
    return make_cohort(seed=0)


@pytest.fixture
def tiny_data_dir(tmp_path, tiny_tables):
    """``tiny_tables`` written as CSV files to ``tmp_path / "data"``."""
    return write_tables(tiny_tables, tmp_path / "data")


class TinyDisk:
    """A 64 KiB tmpfs: ``fill()`` takes all its free space, ``free()`` gives it back."""

    def __init__(self, path):
        self.path = path
        self._filler = path / "filler"

    def fill(self) -> None:
        """Take every free page (tmpfs allocates 4 KiB pages; a file's last page may have room)."""
        with open(self._filler, "ab", buffering=0) as handle:
            try:
                while True:
                    handle.write(b"x" * 4096)
            except OSError:
                pass

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)


@pytest.fixture
def tiny_disk(tmp_path):
    """A real full-disk (ENOSPC) file system; skipped where a tmpfs cannot be mounted (not root).

    Tests that must always run simulate short writes instead (``tests/utils/test_jsonlines.py``).
    """
    path = tmp_path / "disk"
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(path)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): the simulated tests cover this")
    try:
        yield TinyDisk(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
