"""Top-k for every patient of an artifact, ranked on Spark with the exclusion rules.

The artifact folder is shipped to every executor with ``SparkContext.addFile`` (its checksums
are verified again where it lands) and each Python worker loads it once, memory-mapped. Spark
splits the patient indices ``0..n_p-1`` into ranges; each range is ranked by
:func:`recommender.ranking.rank_patients`, the very function the local ``recommend --all``
uses, so every safety rule (harm, contraindication, interactions, evidence, already tried) and
the condition restriction are the same by construction, not re-implemented.

The output is a Parquet dataset (a folder of part files, as Spark writes) with the columns of
the local ``--all``: patient_id, condition_id, rank, treatment_id, score; rows are ordered by
patient index then rank when the parts are read in name order (``pandas.read_parquet`` does).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..columns import Columns as C
from ..data.pseudonym import Pseudonymizer
from ..models.persistence import load_artifact
from ..ranking import check_k
from .session import quiet_pandas_warning, spark_session

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

#: Patients per Arrow batch handed to one ranking call (bounds an executor's memory).
BATCH_PATIENTS = 4096


@dataclass
class RankSummary:
    """What a Spark batch ranking wrote: the output path, patients ranked and rows written."""

    path: str
    n_patients: int
    n_rows: int


def output_schema() -> pa.Schema:
    """Arrow schema of the output, matching the local ``recommend --all`` frame's dtypes."""
    import pyarrow as pa

    return pa.schema(
        [
            (C.patient, pa.string()),
            (C.condition, pa.string()),
            (C.rank, pa.int64()),
            (C.treatment, pa.string()),
            (C.score, pa.float32()),
        ]
    )


def rank_all_spark(
    artifact: str | Path,
    out: str,
    k: int = 10,
    condition_id: str | None = None,
    include_tried: bool = False,
    master: str | None = None,
    pseudonymizer: Pseudonymizer | None = None,
) -> RankSummary:
    """Rank every patient of ``artifact`` on Spark and write Parquet to ``out``.

    Parameters
    ----------
    artifact : path
        Artifact folder on the driver (any model type).
    out : str
        Output folder (``hdfs://``, ``s3a://`` ... on a cluster); replaced if it exists.
    k, condition_id, include_tried
        As for :func:`recommender.ranking.recommend_all`.
    master : str, optional
        Spark master URL (see :mod:`.session`).
    pseudonymizer : Pseudonymizer, optional
        The training key of a keyed artifact, checked on the driver as the local ``--all``
        does; the output is labelled with the ids the model holds (pseudonyms) either way.

    Raises
    ------
    ArtifactError
        The artifact is missing or does not verify, or the key does not match.
    UnknownIdError
        ``condition_id`` is unknown to the model (checked before Spark starts).
    ParameterError
        A bad ``k``.
    """
    k = check_k(k)
    loaded = load_artifact(artifact, pseudonymizer=pseudonymizer)  # verify early, on the driver
    dataset = loaded.dataset
    condition = dataset.condition_index(condition_id)
    n_patients = dataset.n_patients
    with spark_session(master) as spark, _staged(Path(artifact)) as staged:
        context = spark.sparkContext
        context.addFile(str(staged), recursive=True)
        ranker = Ranker(
            staged.name,
            k=k,
            condition=condition,
            condition_id=condition_id,
            include_tried=include_tried,
        )
        partitions = max(1, min(context.defaultParallelism * 2, -(-n_patients // BATCH_PATIENTS)))
        with (
            quiet_pandas_warning(),
            _setting(spark, "spark.sql.execution.arrow.maxRecordsPerBatch", str(BATCH_PATIENTS)),
        ):
            ranked = spark.range(0, n_patients, numPartitions=partitions).mapInArrow(
                ranker, _spark_schema()
            )
            ranked.write.mode("overwrite").parquet(out)
        n_rows = spark.read.parquet(out).count()
    log.info("ranked %d patients on Spark -> %s (%d rows)", n_patients, out, n_rows)
    return RankSummary(path=out, n_patients=n_patients, n_rows=n_rows)


@dataclass(frozen=True)
class Ranker:
    """The per-partition function: Arrow batches of patient indices -> ranked rows.

    Runs on the executors; holds only the shipped artifact's name and the request.
    """

    artifact_name: str
    k: int
    condition: int
    condition_id: str | None
    include_tried: bool

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import SparkFiles

        from ..ranking import rank_patients

        model = _load_shipped(SparkFiles.get(self.artifact_name))
        dataset = model.dataset_
        candidates = dataset.candidates(self.condition) if self.condition >= 0 else None
        for batch in batches:
            patients = batch.column(0).to_numpy().astype(np.int64)
            if not len(patients):
                continue
            idx, values = rank_patients(
                model, patients, self.condition, candidates, self.k, self.include_tried
            )
            yield self._rows(dataset, patients, idx, values)

    def _rows(
        self, dataset, patients: np.ndarray, idx: np.ndarray, values: np.ndarray
    ) -> pa.RecordBatch:
        import pyarrow as pa

        n, k = idx.shape
        keep = (idx >= 0).ravel()
        rows = np.repeat(patients, k)[keep]
        return pa.RecordBatch.from_arrays(
            [
                pa.array(dataset.patients.to_external(rows).astype(str), pa.string()),
                pa.array([self.condition_id] * len(rows), pa.string()),
                pa.array(np.tile(np.arange(1, k + 1, dtype=np.int64), n)[keep]),
                pa.array(
                    dataset.treatments.to_external(idx.ravel()[keep]).astype(str), pa.string()
                ),
                pa.array(values.ravel()[keep].astype(np.float32)),
            ],
            schema=output_schema(),
        )


@functools.lru_cache(maxsize=2)
def _load_shipped(path: str):
    """The model of an artifact shipped to this executor, loaded (and verified) once per worker."""
    return load_artifact(path, mmap=True).model


def _spark_schema():
    from pyspark.sql.types import FloatType, LongType, StringType, StructField, StructType

    return StructType(
        [
            StructField(C.patient, StringType(), False),
            StructField(C.condition, StringType(), True),
            StructField(C.rank, LongType(), False),
            StructField(C.treatment, StringType(), False),
            StructField(C.score, FloatType(), False),
        ]
    )


@contextlib.contextmanager
def _setting(spark, key: str, value: str) -> Iterator[None]:
    """A session setting for the duration of one job (restored after)."""
    before = spark.conf.get(key, None)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)


class _staged:
    """The artifact under a unique folder name for ``addFile`` (hard links where possible).

    Spark never replaces a file added under a name it has seen, so a retrained artifact at the
    same path must travel under a new name.
    """

    def __init__(self, artifact: Path):
        self.artifact = artifact.resolve()
        self.root: Path | None = None

    def __enter__(self) -> Path:
        self.root = Path(tempfile.mkdtemp(prefix="recommender-rank-"))
        target = self.root / f"artifact-{uuid.uuid4().hex[:12]}"
        shutil.copytree(self.artifact, target, copy_function=_link_or_copy)
        return target

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
