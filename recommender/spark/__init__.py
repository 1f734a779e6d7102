"""The Spark engine: train ALS on Spark MLlib and batch-rank every patient on Spark.

Optional: needs the ``[spark]`` extra (pyspark) and Java 17+. Nothing here imports pyspark at
import time of :mod:`recommender`; the CLI reaches these modules only with ``--engine spark``.

- :mod:`.session`: the SparkSession (``--spark-master``, environment, local[2] default);
- :mod:`.params`: the correspondence between the local engine's parameters and Spark's;
- :mod:`.encode`: the canonical tables -> Dataset and ALS ratings as a Spark job;
- :mod:`.train`: fit Spark ALS and export the standard artifact;
- :mod:`.rank`: top-k for every patient on Spark, with the exclusion rules.

See ``docs/spark.md`` for running on a cluster and for the parameter correspondence.
"""

from __future__ import annotations

from ..exceptions import RecommenderError

SPARK_EXTRA_HINT = (
    "--engine spark needs pyspark: pip install 'treatment-recommender[spark]' (and Java 17+)"
)


def require_pyspark() -> None:
    """Raise a one-line :class:`RecommenderError` naming the ``[spark]`` extra if pyspark is missing."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise RecommenderError(SPARK_EXTRA_HINT) from None
