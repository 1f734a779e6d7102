"""Fixtures of the Spark engine's tests: one local[2] SparkSession for all of them, a synthetic
cohort of 3,000 patients and one Spark-trained, keyed artifact.

Every fixture that needs Spark skips (with the reason) when pyspark or Java is missing.
"""

from __future__ import annotations

import pytest

from recommender.data.pseudonym import create_key_file
from recommender.data.synthetic.planted import generate_cohort
from recommender.data.tables import validate_tables, write_tables
from recommender.spark.session import java_available

COHORT_PATIENTS, COHORT_SEED = 3000, 3
#: Small and quick; the parameters every Spark-trained test artifact uses.
TRAIN_OPTIONS = ["--factors", "8", "--iterations", "5", "--seed", "0"]


def spark_unavailable() -> str | None:
    """Why Spark cannot run here, or None."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install -e '.[spark]')"
    if not java_available():
        return "Java is not installed: Spark needs Java 17+"
    return None


@pytest.fixture(scope="session")
def spark():
    reason = spark_unavailable()
    if reason:
        pytest.skip(reason)
    from recommender.spark.session import build_session

    session = build_session("local[2]")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def cohort():
    return generate_cohort(COHORT_PATIENTS, seed=COHORT_SEED)


@pytest.fixture(scope="session")
def cohort_tables(cohort):
    return validate_tables(cohort.tables)


@pytest.fixture(scope="session")
def cohort_dir(cohort_tables, tmp_path_factory):
    return write_tables(cohort_tables, tmp_path_factory.mktemp("cohort") / "data")


@pytest.fixture(scope="session")
def key_file(tmp_path_factory):
    return create_key_file(tmp_path_factory.mktemp("key") / "key")


@pytest.fixture(scope="session")
def spark_artifact(spark, cohort_dir, key_file, tmp_path_factory):
    """``recommender train --engine spark`` on the cohort, pseudonymised with ``key_file``."""
    from recommender.cli import main

    out = tmp_path_factory.mktemp("artifacts") / "spark-als"
    status = main(
        [
            "train",
            "--engine",
            "spark",
            "--data",
            str(cohort_dir),
            "--out",
            str(out),
            "--pseudonym-key-file",
            str(key_file),
            *TRAIN_OPTIONS,
        ]
    )
    assert status == 0
    return out
