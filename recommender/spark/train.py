"""Train ALS on Spark MLlib and export the standard artifact.

``recommender train --engine spark`` goes: tables -> Dataset and signed-confidence ratings ->
Spark ALS (implicit preferences) -> factors collected to the driver -> an ``ALSRecommender``
saved with :func:`recommender.models.persistence.save_artifact` (same manifest, id maps, checksums) and
reloaded to verify it. The manifest also records ``engine: "spark"`` and a ``spark`` section
with the exact ALS arguments and the parameter correspondence (:mod:`.params`).

Two encodings (``encode``):

``local``  the local engine's own :meth:`Dataset.from_tables` on the driver: byte-identical
           matrix, row-level validation messages; the tables must fit the driver's memory.
``spark``  a Spark job (:mod:`.encode`) reads, validates and encodes the tables on the
           cluster; only compact index arrays come back to the driver (see docs/spark.md
           for where the boundary is).

Either way the ALS fit itself runs on Spark, and the artifact (what the service memory-maps)
is written by the driver.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..data.dataset import Dataset
from ..data.policies import ConfidencePolicy
from ..data.pseudonym import Pseudonymizer
from ..data.side_info import SideInfo
from ..data.tables import CohortTables, find_table, read_tables, validate_tables
from ..exceptions import DataValidationError, ParameterError
from ..models.als import ALSRecommender
from ..models.persistence import load_artifact, save_artifact
from .encode import encode_tables
from .encoded import COLUMN, PATIENT, RATING, Encoded, encode_dataset
from .params import (
    SparkALSParams,
    correspond,
    effective_penalties,
    median_positive_count,
    split_params,
)
from .session import quiet_pandas_warning, spark_session

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

ENCODINGS = ("local", "spark")
RATING_DESCRIPTION = (
    "rating r = sign(v) * (|v| - 1) of the signed confidence v, Spark alpha 1: "
    "Spark's confidence 1 + |r| equals implicit's |v| (recommender.spark.params)"
)


def train_spark_artifact(
    data: str | Path,
    out: str | Path,
    params: Mapping | None = None,
    policy: ConfidencePolicy | None = None,
    side_info: SideInfo | None = None,
    pseudonymizer: Pseudonymizer | None = None,
    master: str | None = None,
    encode: str = "local",
    metrics: Mapping | None = None,
    **dataset_options,
) -> Path:
    """Fit Spark ALS on the tables at ``data`` and write a verified artifact to ``out``.

    Parameters
    ----------
    data : path or URL
        A folder of canonical tables, or one Parquet file (or Parquet dataset folder) of
        outcomes. With ``encode="spark"`` any path Spark can read (``hdfs://``, ``s3a://`` ...).
    out : path
        Artifact folder on the driver (replaced atomically).
    params : mapping, optional
        ALSRecommender parameters (implicit's conventions: ``factors``, ``regularization``,
        ``iterations``, ``random_state``, ``use_cg``) plus the Spark-only ``spark_reg_param``
        and ``spark_blocks`` (see :mod:`.params`).
    policy, side_info, pseudonymizer
        As for the local engine (:func:`recommender.training.train_artifact`).
    master : str, optional
        Spark master URL (see :mod:`.session`).
    encode : {"local", "spark"}
        Where the tables become matrices (see the module docstring).
    metrics : mapping, optional
        Metrics to record in the manifest.
    **dataset_options
        More :meth:`Dataset.from_tables` options (``safety``, ``feedback`` ...), as the local
        engine takes them.

    Returns the artifact path.

    Raises
    ------
    ParameterError
        Unknown or out-of-range parameter, or an unknown ``encode``.
    DataValidationError
        The tables break the schema.
    """
    if encode not in ENCODINGS:
        raise ParameterError(f"encode must be one of {list(ENCODINGS)}; got {encode!r}")
    als_params, spark_only = split_params(params)
    model = SparkALSRecommender(**als_params)
    model.check_spark_params()  # fail on a bad parameter before starting Spark
    started = time.perf_counter()
    with spark_session(master) as spark:
        start_seconds = time.perf_counter() - started
        if encode == "local":
            tables = read_cohort(data)
            dataset = Dataset.from_tables(
                tables,
                policy=policy,
                side_info=side_info,
                pseudonymizer=pseudonymizer,
                **dataset_options,
            )
            encoded = encode_dataset(spark, dataset, n_outcome_rows=len(tables.outcomes))
        else:
            encoded = _encode_on_spark(
                spark, data, policy, side_info, pseudonymizer, **dataset_options
            )
        encode_seconds = time.perf_counter() - started
        model.fit_encoded(spark, encoded, spark_only)
        fit_seconds = time.perf_counter() - started - encode_seconds
        spark_info = {**model.spark_info_, "encode": encode}
    training = {
        "data_folder": Path(str(data).rstrip("/")).name,
        "spark_start_seconds": round(start_seconds, 3),
        "read_seconds": round(encode_seconds - start_seconds, 3),
        "fit_seconds": round(fit_seconds, 3),
        "n_outcome_rows": encoded.n_outcome_rows,
    }
    path = save_artifact(
        model,
        out,
        metrics=metrics,
        extra={"engine": "spark", "spark": spark_info, "training": training},
    )
    load_artifact(path, mmap=True, pseudonymizer=pseudonymizer)  # verify checksums, key, load
    log.info(
        "trained als on Spark in %.1fs (encoding %.1fs) -> %s", fit_seconds, encode_seconds, path
    )
    return path


# --- encoding on the driver ---------------------------------------------------------------------


def read_cohort(data: str | Path) -> CohortTables:
    """Validated tables from a folder of canonical tables or from one Parquet file of outcomes."""
    path = Path(data)
    if path.is_dir() and find_table(path, "outcomes") is not None:
        return read_tables(path)
    if (path / "outcomes.parquet").is_dir():
        raise DataValidationError(
            "outcomes.parquet is a Parquet dataset folder (as Spark writes "
            "them); encode it on Spark with --encode spark",
            file=str(path),
        )
    if path.suffix == ".parquet" and path.exists():
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise DataValidationError(f"cannot be read as Parquet: {exc}", file=str(path)) from None
        for column in ("patient_id", "treatment_id"):
            if column in frame:  # ids are strings, as the CSV reader gives them
                frame[column] = frame[column].astype("string").fillna("").astype(object)
        return validate_tables({"outcomes": frame}, files={"outcomes": str(path)})
    return read_tables(path)  # raises the usual "not a folder of canonical tables" error


def _encode_on_spark(spark, data, policy, side_info, pseudonymizer, **dataset_options) -> Encoded:
    return encode_tables(
        spark,
        str(data),
        policy=policy,
        side_info=side_info,
        pseudonymizer=pseudonymizer,
        **dataset_options,
    )


# --- fitting ------------------------------------------------------------------------------------


class SparkALSRecommender(ALSRecommender):
    """An :class:`ALSRecommender` whose ``fit`` runs Spark MLlib ALS on the same matrix.

    Same parameters (implicit's conventions, mapped by :mod:`.params`), same learned state and
    the same artifact kind (``"als"``): a saved model loads as a plain ``ALSRecommender``. So
    :func:`recommender.evaluation.evaluate.evaluate` and the tuner can compare the engines like any two
    models. ``fit`` uses the active SparkSession, or starts one (``local[2]`` unless
    ``RECOMMENDER_SPARK_MASTER`` or Spark's own configuration says otherwise) that stays
    active for later fits.

    After fitting, ``spark_params_`` holds the exact Spark ALS arguments and ``spark_info_``
    the manifest's ``spark`` section.
    """

    def _fit(self, dataset: Dataset, show_progress: bool) -> None:
        from .session import build_session

        spark = build_session()
        self.fit_encoded(spark, encode_dataset(spark, dataset), {})

    def check_spark_params(self) -> None:
        """Validate the parameters, refusing those without a Spark counterpart."""
        self._validate_params()
        unsupported = [
            name
            for name in ("early_stopping", "init_fraction")
            if getattr(self, name, None) is not None
        ]
        if unsupported:
            raise ParameterError(
                f"{', '.join(unsupported)} has no Spark counterpart: leave it "
                "unset with --engine spark (Spark's ALS runs all iterations "
                "from its own random start)"
            )

    def fit_encoded(
        self, spark: SparkSession, encoded: Encoded, spark_only: Mapping | None = None
    ) -> SparkALSRecommender:
        """Fit on an already encoded cohort, with ``spark_reg_param``/``spark_blocks`` overrides.

        Raises
        ------
        ParameterError
            A parameter without a Spark counterpart is set (``early_stopping`` needs a
            per-sweep callback and ``init_fraction`` initial factors, neither of which Spark's
            ALS accepts).
        """
        self.check_spark_params()
        if encoded.inexact:
            log.warning(
                "%d matrix entries have a confidence below 1, which Spark cannot express; "
                "they enter with confidence 1 (see recommender.spark.params)",
                encoded.inexact,
            )
        als = correspond(
            self.get_params(),
            encoded.patient_positives,
            spark.sparkContext.defaultParallelism,
            spark_only,
        )
        self.user_factors_, self.item_factors_ = fit_als(
            spark, encoded.ratings, encoded.dataset.matrix.shape, als
        )
        self.spark_params_ = als
        self.n_iterations_ = als.max_iter
        self.spark_info_ = _spark_section(spark, als, encoded, self.regularization)
        self.dataset_ = encoded.dataset
        self.__dict__.pop("_solver_cache", None)
        return self


def fit_als(
    spark: SparkSession, ratings: DataFrame, shape: tuple[int, int], params: SparkALSParams
) -> tuple[np.ndarray, np.ndarray]:
    """Fit Spark ALS on ``ratings``; factors as float32 arrays of shapes (n_p, d), (n_cols, d).

    Rows Spark returns no factors for (a patient or column without any rating) are zero, which
    is what implicit gives them too.
    """
    from pyspark.ml.recommendation import ALS

    als = ALS(
        userCol=PATIENT,
        itemCol=COLUMN,
        ratingCol=RATING,
        coldStartStrategy="nan",
        **params.to_spark(),
    )
    context = spark.sparkContext
    checkpoints = None
    if context.getCheckpointDir() is None and context.master.startswith("local"):
        # ALS cuts its lineage every checkpointInterval iterations only with a checkpoint dir.
        checkpoints = tempfile.TemporaryDirectory(prefix="recommender-spark-checkpoints-")
        context.setCheckpointDir(checkpoints.name)
    elif context.getCheckpointDir() is None and params.max_iter > 10:
        log.warning(
            "no Spark checkpoint directory: set spark.checkpoint.dir to a shared path so "
            "long ALS runs can cut their lineage"
        )
    try:
        fitted = als.fit(ratings)
        users = factor_matrix(fitted.userFactors, shape[0], params.rank)
        items = factor_matrix(fitted.itemFactors, shape[1], params.rank)
    finally:
        if checkpoints is not None:
            checkpoints.cleanup()
    return users, items


def factor_matrix(factors: DataFrame, n: int, rank: int) -> np.ndarray:
    """ALS's (id, features) DataFrame as a float32 (n, rank) array indexed by id (zeros if absent)."""
    with quiet_pandas_warning():
        table = factors.toArrow()
    out = np.zeros((n, rank), np.float32)
    if table.num_rows:
        ids = table.column("id").to_numpy()
        features = (
            table.column("features").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        )
        out[ids] = np.asarray(features, np.float32).reshape(-1, rank)
    return out


def _spark_section(spark, als: SparkALSParams, encoded: Encoded, regularization: float) -> dict:
    """The manifest's ``spark`` entry: what ran where and how the parameters correspond."""
    return {
        "version": spark.version,
        "master": spark.sparkContext.master,
        "default_parallelism": spark.sparkContext.defaultParallelism,
        "als": als.to_dict(),
        "rating": RATING_DESCRIPTION,
        "inexact_entries": encoded.inexact,
        "regularization": {
            "implicit_lambda": float(regularization),
            "median_patient_positives": median_positive_count(encoded.patient_positives),
            "patient_penalty": effective_penalties(als.reg_param, encoded.patient_positives),
            "column_penalty": effective_penalties(als.reg_param, encoded.column_positives),
        },
    }
