"""A cohort encoded for Spark ALS: the ratings DataFrame next to the driver's Dataset.

Both encoders produce an :class:`Encoded`: the local one (:func:`encode_dataset`, from a
Dataset built in this process) and the Spark one (:mod:`recommender.spark.encode`); training
(:mod:`recommender.spark.train`) takes either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..data.dataset import Dataset
from .params import spark_ratings
from .session import quiet_pandas_warning

if TYPE_CHECKING:  # pyspark is an optional dependency, imported where a session exists
    from pyspark.sql import DataFrame, SparkSession

#: Column names of the ratings DataFrame ALS reads.
PATIENT, COLUMN, RATING = "patient", "column", "rating"


@dataclass
class Encoded:
    """A cohort ready for Spark ALS.

    Attributes
    ----------
    dataset : Dataset
        What the artifact stores (id maps, matrices), on the driver.
    ratings : pyspark DataFrame
        (patient int, column int, rating float) for every non-zero of ``dataset.matrix``.
    patient_positives, column_positives : ndarray of int, shapes (n_p,) and (n_t + n_f,)
        Positive ratings per patient and per column (what Spark's penalty counts).
    inexact : int
        Entries Spark cannot represent exactly (see :func:`.params.spark_ratings`).
    n_outcome_rows : int
        Outcome rows read.
    """

    dataset: Dataset
    ratings: DataFrame
    patient_positives: np.ndarray
    column_positives: np.ndarray
    inexact: int
    n_outcome_rows: int


def encode_dataset(spark: SparkSession, dataset: Dataset, n_outcome_rows: int = 0) -> Encoded:
    """Ship ``dataset.matrix`` to Spark as ratings (see :func:`.params.spark_ratings`)."""
    coo = dataset.matrix.tocoo()
    ratings, inexact = spark_ratings(coo.data)
    positive = ratings > 0
    n_rows, n_cols = dataset.matrix.shape
    return Encoded(
        dataset=dataset,
        ratings=ratings_frame(spark, coo.row, coo.col, ratings),
        patient_positives=np.bincount(coo.row[positive], minlength=n_rows),
        column_positives=np.bincount(coo.col[positive], minlength=n_cols),
        inexact=inexact,
        n_outcome_rows=n_outcome_rows,
    )


def ratings_frame(
    spark: SparkSession, rows: np.ndarray, cols: np.ndarray, ratings: np.ndarray
) -> DataFrame:
    """A Spark DataFrame (patient int, column int, rating float) from coordinate arrays."""
    import pyarrow as pa

    table = pa.table(
        {
            PATIENT: pa.array(np.asarray(rows, np.int32)),
            COLUMN: pa.array(np.asarray(cols, np.int32)),
            RATING: pa.array(np.asarray(ratings, np.float32)),
        }
    )
    with quiet_pandas_warning():
        return spark.createDataFrame(table)
