"""The canonical tables -> Dataset, as a Spark job: for tables too large for the driver's memory.

Where the boundary is
---------------------
Spark does the row-level work, which grows with the number of outcome *rows*: reading any path
Spark can read (``hdfs://``, ``s3a://``, a local folder), validating, normalising outcomes and
timestamps, dropping exact duplicates, pseudonymising patient ids (HMAC on the executors), and
reducing the rows to what the Dataset holds: the latest outcome and its day per (patient,
treatment), the harm pairs, the per-(condition, treatment) outcome, success and label counts,
the support per treatment and the reference year. Only those compact index arrays (about 16
bytes per patient-treatment pair), the id lists and the small dictionary tables come back to
the driver, which assembles the :class:`~recommender.data.dataset.Dataset` with the Dataset's own
constructors. The artifact a service memory-maps must fit one machine anyway; what no longer
has to is the pandas frame of every outcome row with its string ids (about 250 bytes a row).

Differences from :meth:`Dataset.from_tables`, all deliberate:

- patient indices follow the sorted patient ids, not their first appearance in the files (file
  order is not defined across a distributed read); ties between rows of one (patient,
  treatment) with equal timestamps go to the later row in read order, as locally;
- validation errors name the file, the column and the offending value, but not a row number;
- the data fingerprint is a content hash computed by Spark (independent of row order), not
  the SHA-256 of the files' bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..columns import OUTCOME_LABELS, TABLE_EXTENSIONS
from ..columns import Columns as C
from ..columns import Tables as T
from ..data.dataset import Dataset
from ..data.ids import IdMap
from ..data.ingredients import incidence

# The Dataset's own builders, so that both encodings build identical matrices from the same facts.
from ..data.matrices import csr_of, demographics_of, display_names, interaction_matrix, pattern_of
from ..data.policies import ConfidencePolicy, SafetyPolicy
from ..data.pseudonym import Pseudonymizer
from ..data.side_info import SideInfo, feature_ids
from ..data.tables import ID_COLUMNS, INGREDIENTS, REQUIRED, SEVERITIES, check_ingredients
from ..exceptions import DataValidationError, RecommenderError
from .encoded import Encoded, encode_dataset
from .session import quiet_pandas_warning

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

#: The Dataset fields this encoder fills; a new field makes it refuse to run (use encode local).
#: The patient's current state and events (birth years, observations) are
#: left at their defaults: Spark trains ALS, which reads none of them.
FILLED_FIELDS = frozenset(
    {
        "birth_year",
        "latest_time",
        "observation_ids",
        "latest_observations",
        "events",
        "patients",
        "treatments",
        "features",
        "conditions",
        "matrix",
        "history",
        "harmful",
        "patient_conditions",
        "contraindications",
        "condition_outcomes",
        "condition_successes",
        "treatment_support",
        "history_days",
        "interactions",
        "label_counts",
        "demographics",
        "policy",
        "safety",
        "side_info",
        "harm_threshold",
        "reference_year",
        "fingerprint",
        "pseudonym_fingerprint",
        "treatment_names",
        "ingredients",
        "treatment_ingredients",
        "condition_names",
        "pseudonymizer",
    }
)
N_BUCKETS = 5  # recommender.data.dataset.OUTCOME_BUCKETS
ADVERSE_FLAGS = {"": 0, "0": 0, "1": 1, "false": 0, "true": 1, "0.0": 0, "1.0": 1}


def encode_tables(
    spark: SparkSession,
    data: str,
    policy: ConfidencePolicy | None = None,
    side_info: SideInfo | None = None,
    pseudonymizer: Pseudonymizer | None = None,
    harm_threshold: float = 0.0,
    safety: SafetyPolicy | None = None,
    feedback: pd.DataFrame | None = None,
    feedback_weight: float = 0.25,
) -> Encoded:
    """Read and encode the tables at ``data`` on Spark; the Dataset and its ALS ratings.

    ``data`` is a folder holding ``outcomes.parquet`` (a file or a Parquet dataset folder),
    ``outcomes.csv`` or ``outcomes.csv.gz`` and optionally the other canonical tables, or a
    Parquet path of outcomes alone. The options are those of :meth:`Dataset.from_tables`.

    Raises
    ------
    DataValidationError
        A table is missing or breaks the schema (file, column and the offending value).
    RecommenderError
        The Dataset has fields this encoder does not fill (use the local encoding).
    """
    missing = {f.name for f in dataclasses.fields(Dataset)} - FILLED_FIELDS
    if missing:
        raise RecommenderError(
            f"the Spark encoder does not fill the Dataset field(s) "
            f"{sorted(missing)}; train with --encode local"
        )
    policy, side_info = policy or ConfidencePolicy(), side_info or SideInfo()
    with _utc(spark):
        sources = locate_tables(spark, data)
        raw = {name: _read(spark, path) for name, path in sources.items()}
        n_rows = raw[T.outcomes].count()
        tables = _validated(raw, sources)
        fingerprint = content_fingerprint(tables)
        if pseudonymizer is not None:
            tables = _pseudonymise(tables, pseudonymizer)
        facts = _reduce(spark, tables, policy, harm_threshold)
        dataset = _assemble(
            facts, tables, policy, side_info, harm_threshold, safety, fingerprint, pseudonymizer
        )
    if feedback is not None and len(feedback):
        dataset.matrix = dataset._with_feedback(feedback, feedback_weight)
    log.info(
        "encoded %d outcome rows on Spark: %d patients, %d treatments",
        n_rows,
        dataset.n_patients,
        dataset.n_treatments,
    )
    return encode_dataset(spark, dataset, n_outcome_rows=n_rows)


# --- reading ------------------------------------------------------------------------------------


def locate_tables(spark: SparkSession, data: str) -> dict[str, str]:
    """Table name -> path of each canonical table found at ``data`` (see :func:`encode_tables`)."""
    base = data.rstrip("/")
    found = {}
    for table in T.all:
        paths = [
            f"{base}/{table}{ext}"
            for ext in TABLE_EXTENSIONS
            if _exists(spark, f"{base}/{table}{ext}")
        ]
        if len(paths) > 1:
            raise DataValidationError(
                f"two files hold the table '{table}': {paths}; keep one", file=data
            )
        if paths:
            found[table] = paths[0]
    if T.outcomes not in found:
        if base.endswith(".parquet") and _exists(spark, base):
            return {T.outcomes: base}
        raise DataValidationError(
            "no outcomes table: expected outcomes.parquet, outcomes.csv or "
            "outcomes.csv.gz inside, or a Parquet path of outcomes",
            file=data,
        )
    return found


def _exists(spark: SparkSession, path: str) -> bool:
    """Whether ``path`` exists on its (Hadoop-compatible) file system."""
    context = spark.sparkContext
    jvm_path = context._jvm.org.apache.hadoop.fs.Path(path)
    return bool(jvm_path.getFileSystem(context._jsc.hadoopConfiguration()).exists(jvm_path))


def _read(spark: SparkSession, path: str) -> DataFrame:
    from pyspark.sql import functions as F

    reader = (
        spark.read.parquet(path)
        if path.endswith(".parquet")
        else spark.read.csv(path, header=True, inferSchema=False, nullValue=None)
    )
    return reader.withColumn("_pos", F.monotonically_increasing_id())  # read order, for ties


# --- validation and normalisation ---------------------------------------------------------------


def _validated(raw: dict[str, DataFrame], files: dict[str, str]) -> dict[str, DataFrame]:
    """Each table checked and normalised as :func:`recommender.data.tables.validate_tables` does.

    The checks of one table run as one Spark job; an example of the first failure is fetched
    only when there is one. The normalised tables are cached for the reduction that follows.
    """
    for table, frame in raw.items():
        missing = [c for c in REQUIRED[table] if c not in frame.columns]
        if missing:
            raise DataValidationError(
                f"missing required column(s) {missing}; the {table} table needs "
                f"{list(REQUIRED[table])} (found {[c for c in frame.columns if c != '_pos']})",
                file=files[table],
                column=missing[0],
            )
    clean = {}
    for table, frame in raw.items():
        checks = []
        for column in ID_COLUMNS[table]:
            frame = frame.withColumn(column, _text(column))
            checks.append(
                Check(_col(column) == "", column, "empty id; every row needs a non-empty id")
            )
        if table == T.outcomes:
            frame, more = _outcomes(frame)
        elif table == T.patients:
            frame, more = _patients(frame)
        elif table == T.interactions:
            frame = frame.withColumn(C.severity, _lower_text(C.severity))
            more = [
                Check(
                    ~_col(C.severity).isin(*SEVERITIES),
                    C.severity,
                    f"severity is not one of {list(SEVERITIES)}",
                )
            ]
        elif table == T.treatments and INGREDIENTS in frame.columns:
            frame = frame.withColumn(INGREDIENTS, _text(INGREDIENTS))
            more = [
                Check(
                    (_col(INGREDIENTS) != "") & _col(INGREDIENTS).rlike(r"(^|;)\s*(;|$)"),
                    INGREDIENTS,
                    "empty ingredient id (ids are separated by ';'; leave the cell blank for a "
                    "treatment that is its own ingredient)",
                )
            ]
        else:
            more = []
        run_checks(frame, files[table], checks + more)
        clean[table] = frame
    clean[T.outcomes] = _deduplicated(clean[T.outcomes])
    if T.patient_conditions in clean:
        clean[T.patient_conditions] = (
            clean[T.patient_conditions].select(C.patient, C.condition).dropDuplicates()
        )
    if T.patients in clean:
        twice = clean[T.patients].groupBy(C.patient).count().where(_col("count") > 1)
        run_checks(
            twice,
            files[T.patients],
            [
                Check(
                    _col("count") > 1,
                    C.patient,
                    "patient is listed twice; each patient needs exactly one row",
                )
            ],
        )
        clean[T.patients] = clean[T.patients].select(C.patient, C.sex, C.birth_year)
    _check_references(clean, files)
    return {table: frame.cache() for table, frame in clean.items()}


@dataclasses.dataclass(frozen=True)
class Check:
    """A validation rule: rows meeting ``failing`` are wrong in ``column``; ``show`` is the
    column whose value the error quotes (default ``column``)."""

    failing: Column
    column: str
    message: str
    show: str | None = None


def run_checks(frame: DataFrame, file: str, checks: list[Check]) -> None:
    """Raise DataValidationError for the first failing check, quoting an example value."""
    from pyspark.sql import functions as F

    if not checks:
        return
    flags = frame.select(
        *[F.max(F.when(c.failing, 1).otherwise(0)).alias(f"_{i}") for i, c in enumerate(checks)]
    ).collect()[0]
    for i, check in enumerate(checks):
        if flags[i]:
            example = (
                frame.where(check.failing)
                .select(_col(check.show or check.column).cast("string"))
                .limit(1)
                .collect()
            )
            found = example[0][0] if example else None
            raise DataValidationError(
                f"{check.message}; found {found!r}", file=file, column=check.column
            )


def _outcomes(frame: DataFrame) -> tuple[DataFrame, list[Check]]:
    """Outcomes parsed (float32), timestamps (UTC), condition (None for blank), adverse (0/1)."""
    from pyspark.sql import functions as F

    labels = F.create_map(*[F.lit(x) for pair in OUTCOME_LABELS.items() for x in pair])
    frame = frame.withColumn("_outcome_text", _lower_text(C.outcome))
    value = F.coalesce(
        F.try_element_at(labels, _col("_outcome_text")), _col("_outcome_text").try_cast("double")
    )
    frame = frame.withColumn(C.outcome, value)
    checks = [
        Check(
            _col(C.outcome).isNull() | F.isnan(C.outcome),
            C.outcome,
            f"outcome is neither a number in [-1, 1] nor one of the labels {list(OUTCOME_LABELS)}",
            show="_outcome_text",
        ),
        Check(
            (_col(C.outcome) < -1) | (_col(C.outcome) > 1), C.outcome, "outcome is outside [-1, 1]"
        ),
    ]
    if C.timestamp in frame.columns:
        frame = frame.withColumn("_time_text", _text(C.timestamp)).withColumn(
            C.timestamp,
            F.when(_col("_time_text") == "", None).otherwise(
                F.try_to_timestamp(_col("_time_text"))
            ),
        )
        checks.append(
            Check(
                _col(C.timestamp).isNull() & (_col("_time_text") != ""),
                C.timestamp,
                "timestamp is not an ISO-8601 date or date-time (e.g. 2021-03-04 or "
                "2021-03-04T10:00:00Z)",
                show="_time_text",
            )
        )
    else:
        frame = frame.withColumn(C.timestamp, F.lit(None).cast("timestamp"))
    condition = _text(C.condition) if C.condition in frame.columns else F.lit("")
    frame = frame.withColumn(C.condition, F.when(condition == "", None).otherwise(condition))
    if C.adverse in frame.columns:
        flags = F.create_map(*[F.lit(x) for pair in ADVERSE_FLAGS.items() for x in pair])
        frame = frame.withColumn("_adverse_text", _lower_text(C.adverse)).withColumn(
            C.adverse, F.try_element_at(flags, _col("_adverse_text"))
        )
        checks.append(
            Check(_col(C.adverse).isNull(), C.adverse, "value is not 0 or 1", show="_adverse_text")
        )
    else:
        frame = frame.withColumn(C.adverse, F.lit(0))
    return frame, checks


def _deduplicated(frame: DataFrame) -> DataFrame:
    """Exact duplicate rows (extra columns included) dropped; the first in read order is kept."""
    from pyspark.sql import functions as F

    frame = frame.drop(*[c for c in frame.columns if c.endswith("_text")])
    frame = frame.withColumn(C.outcome, _col(C.outcome).cast("float"))
    core = (C.patient, C.treatment, C.outcome, C.timestamp, C.condition, C.adverse)
    extras = [c for c in frame.columns if c not in core and c != "_pos"]
    keyed = frame.select(*core, *[_col(c).cast("string").alias(c) for c in extras], "_pos")
    return keyed.groupBy(*core, *extras).agg(F.min("_pos").alias("_pos")).drop(*extras)


def _patients(frame: DataFrame) -> tuple[DataFrame, list[Check]]:
    """Sex as trimmed text ("" when unknown) and birth_year as a whole year or null."""
    from pyspark.sql import functions as F

    frame = frame.withColumn(C.sex, _text(C.sex) if C.sex in frame.columns else F.lit(""))
    if C.birth_year not in frame.columns:
        return frame.withColumn(C.birth_year, F.lit(None).cast("long")), []
    frame = frame.withColumn("_year_text", _text(C.birth_year)).withColumn(
        "_year", _col("_year_text").try_cast("double")
    )
    check = Check(
        (_col("_year_text") != "")
        & (_col("_year").isNull() | (_col("_year") < 1850) | (_col("_year") > 2100)),
        C.birth_year,
        "birth_year is not a year between 1850 and 2100",
        show="_year_text",
    )
    return frame.withColumn(C.birth_year, _col("_year").cast("long")), [check]


def _check_references(clean: dict[str, DataFrame], files: dict[str, str]) -> None:
    """Ids a table uses must be defined by the defining table, when it is present."""
    checks = [
        (T.patients, C.patient, T.outcomes, C.patient),
        (T.patients, C.patient, T.patient_conditions, C.patient),
        (T.treatments, C.treatment, T.outcomes, C.treatment),
        (T.conditions, C.condition, T.outcomes, C.condition),
        (T.conditions, C.condition, T.patient_conditions, C.condition),
    ]
    for defining, key, using, column in checks:
        if defining not in clean or using not in clean:
            continue
        used = clean[using].select(_col(column).alias("_id")).where(_col("_id").isNotNull())
        unknown = used.join(clean[defining].select(_col(key).alias("_id")), "_id", "left_anti")
        example = unknown.limit(1).collect()
        if example:
            raise DataValidationError(
                f"{key.removesuffix('_id')} {example[0][0]!r} is not defined in the {defining} "
                f"table ({files[defining]})",
                file=files[using],
                column=column,
            )


def content_fingerprint(tables: dict[str, DataFrame]) -> str:
    """SHA-256 over each table's row count and order-independent sum of row hashes (one job)."""
    from pyspark.sql import functions as F

    parts = None
    for table in sorted(tables):
        frame = tables[table].drop("_pos")
        part = frame.select(
            F.lit(table).alias("table"),
            F.xxhash64(*frame.columns).cast("decimal(38,0)").alias("hash"),
        )
        parts = part if parts is None else parts.union(part)
    rows = parts.groupBy("table").agg(F.count(F.lit(1)), F.sum("hash")).collect()
    digest = hashlib.sha256()
    for table, count, total in sorted(rows, key=lambda row: row[0]):
        digest.update(f"{table}:{count}:{total}".encode())
    return digest.hexdigest()


def _pseudonymise(tables: dict[str, DataFrame], pseudonymizer: Pseudonymizer) -> dict:
    """Every patient id replaced by its keyed hash, computed on the executors."""
    from pyspark.sql.types import StringType, StructField, StructType

    with_patients = [t for t in (T.outcomes, T.patients, T.patient_conditions) if t in tables]
    ids = None
    for table in with_patients:
        part = tables[table].select(_col(C.patient).alias("_raw")).distinct()
        ids = part if ids is None else ids.union(part)
    schema = StructType(
        [StructField("_raw", StringType()), StructField("_pseudonym", StringType())]
    )
    with quiet_pandas_warning():
        mapping = ids.distinct().mapInArrow(_Hasher(pseudonymizer), schema)
    out = dict(tables)
    for table in with_patients:
        out[table] = (
            tables[table]
            .join(mapping, _col(C.patient) == _col("_raw"))
            .drop(C.patient, "_raw")
            .withColumnRenamed("_pseudonym", C.patient)
        )
    return out


@dataclasses.dataclass(frozen=True)
class _Hasher:
    """Arrow batches of raw ids -> (raw, pseudonym); runs on the executors with the key."""

    pseudonymizer: Pseudonymizer

    def __call__(self, batches: Iterator):
        import pyarrow as pa

        for batch in batches:
            raw = batch.column(0).to_pylist()
            yield pa.RecordBatch.from_arrays(
                [
                    pa.array(raw, pa.string()),
                    pa.array(self.pseudonymizer.many(raw).tolist(), pa.string()),
                ],
                names=["_raw", "_pseudonym"],
            )


# --- reduction ----------------------------------------------------------------------------------


@dataclasses.dataclass
class _Facts:
    """What the driver needs, as numpy arrays and id lists."""

    patients: IdMap
    treatments: IdMap
    conditions: IdMap
    latest: dict  # p, t, outcome, day of the latest outcome per pair
    harm: dict  # p, t
    by_condition: dict  # c, t, n, worked
    labels: dict  # row (condition, or n_c for all), column (t * 5 + bucket), n
    support: dict  # t, n
    patient_conditions: dict  # p, c
    reference_year: int | None


def _reduce(
    spark: SparkSession, tables: dict, policy: ConfidencePolicy, harm_threshold: float
) -> _Facts:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    outcomes = tables[T.outcomes]
    pc = tables.get(T.patient_conditions)
    ci = tables.get(T.contraindications)
    patients_table = tables.get(T.patients)
    patient_sources = [outcomes] + [f for f in (pc, patients_table) if f is not None]
    condition_sources = [outcomes.where(_col(C.condition).isNotNull())] + [
        f for f in (pc, ci) if f is not None
    ]
    ids = _sorted_ids(
        {
            "patient": (patient_sources, C.patient),
            "treatment": ([outcomes], C.treatment),
            "condition": (condition_sources, C.condition),
        }
    )
    patients, treatments, conditions = (
        IdMap(ids[kind], kind) for kind in ("patient", "treatment", "condition")
    )
    n_c = len(conditions)

    rows = (
        outcomes.join(_index(spark, patients, "p"), _col(C.patient) == _col("p_id"))
        .join(F.broadcast(_index(spark, treatments, "t")), _col(C.treatment) == _col("t_id"))
        .join(
            F.broadcast(_index(spark, conditions, "c")), _col(C.condition) == _col("c_id"), "left"
        )
        .select("p", "t", "c", C.outcome, C.timestamp, C.adverse, "_pos")
    )
    rows.cache()
    try:
        float32 = lambda x: F.lit(float(x)).cast("float")  # noqa: E731  compare as numpy does
        order = Window.partitionBy("p", "t").orderBy(
            _col(C.timestamp).desc_nulls_last(), _col("_pos").desc()
        )
        day = F.coalesce(F.unix_micros(C.timestamp) / 86_400_000_000.0, F.lit(-1.0)).cast("float")
        latest = (
            rows.withColumn("_n", F.row_number().over(order))
            .where(_col("_n") == 1)
            .select("p", "t", C.outcome, day.alias("day"))
        )
        harm = (
            rows.where((_col(C.adverse) == 1) | (_col(C.outcome) < float32(harm_threshold)))
            .select("p", "t")
            .distinct()
        )
        worked = (_col(C.outcome) > float32(policy.positive_threshold)).cast("double")
        by_condition = (
            rows.where(_col("c").isNotNull())
            .groupBy("c", "t")
            .agg(F.count(F.lit(1)).alias("n"), F.sum(worked).alias("worked"))
        )
        bucket = (
            F.when(_col(C.adverse) == 1, 4)
            .when(_col(C.outcome) >= float32(0.75), 0)
            .when(_col(C.outcome) > float32(policy.positive_threshold), 1)
            .when(_col(C.outcome) >= float32(0.0), 2)
            .when(_col(C.outcome) > float32(-0.75), 3)
            .otherwise(4)
        )
        cells = rows.select("c", (_col("t") * N_BUCKETS + bucket).alias("column"))
        labels = (
            cells.where(_col("c").isNotNull())
            .groupBy(_col("c").alias("row"), "column")
            .count()
            .union(cells.groupBy(F.lit(n_c).alias("row"), "column").count())
        )
        support = rows.select("p", "t").distinct().groupBy("t").count()
        year = rows.select(F.year(F.max(C.timestamp))).collect()[0][0]
        facts = _Facts(
            patients=patients,
            treatments=treatments,
            conditions=conditions,
            latest=_arrays(latest),
            harm=_arrays(harm),
            by_condition=_arrays(by_condition),
            labels=_arrays(labels),
            support=_arrays(support),
            patient_conditions=_arrays(_indexed_pairs(spark, pc, patients, conditions)),
            reference_year=None if year is None else int(year),
        )
    finally:
        rows.unpersist()
    return facts


def _sorted_ids(sources: dict[str, tuple[list, str]]) -> dict[str, np.ndarray]:
    """Per kind, the sorted distinct values of a column over some frames (one job)."""
    from pyspark.sql import functions as F

    union = None
    for kind, (frames, column) in sources.items():
        for frame in frames:
            part = frame.select(F.lit(kind).alias("_kind"), _col(column).alias("_id"))
            union = part if union is None else union.union(part)
    with quiet_pandas_warning():
        table = union.distinct().orderBy("_kind", "_id").toArrow()
    kinds = np.asarray(table.column("_kind").to_pylist(), dtype=object)
    values = np.asarray(table.column("_id").to_pylist(), dtype=object)
    return {kind: values[kinds == kind] for kind in sources}


def _index(spark: SparkSession, ids: IdMap, name: str) -> DataFrame:
    """DataFrame (``<name>_id`` string, ``<name>`` int) of an id map."""
    import pyarrow as pa

    table = pa.table(
        {
            f"{name}_id": pa.array(ids.external_ids.astype(str).tolist(), pa.string()),
            name: pa.array(np.arange(len(ids), dtype=np.int32)),
        }
    )
    with quiet_pandas_warning():
        return spark.createDataFrame(table)


def _indexed_pairs(spark, pc, patients: IdMap, conditions: IdMap):
    """(p, c) index pairs of the patient_conditions table (an empty frame when absent)."""
    from pyspark.sql import functions as F

    if pc is None:
        return spark.createDataFrame([], "p int, c int")
    return (
        pc.join(_index(spark, patients, "p"), _col(C.patient) == _col("p_id"))
        .join(F.broadcast(_index(spark, conditions, "c")), _col(C.condition) == _col("c_id"))
        .select("p", "c")
    )


def _arrays(frame: DataFrame) -> dict[str, np.ndarray]:
    """Columns of ``frame`` as numpy arrays (through Arrow)."""
    with quiet_pandas_warning():
        table = frame.toArrow()
    return {name: table.column(name).to_numpy() for name in table.column_names}


# --- assembly on the driver ---------------------------------------------------------------------


def _assemble(
    facts: _Facts,
    tables: dict,
    policy: ConfidencePolicy,
    side_info: SideInfo,
    harm_threshold: float,
    safety: SafetyPolicy | None,
    fingerprint: str,
    pseudonymizer: Pseudonymizer | None,
) -> Dataset:
    n_p, n_t, n_c = len(facts.patients), len(facts.treatments), len(facts.conditions)
    latest, by_c, labels = facts.latest, facts.by_condition, facts.labels
    small = {
        name: _pandas(tables[name])
        for name in (T.contraindications, T.interactions, T.treatments, T.conditions)
        if name in tables
    }
    ci_frame = small.get(T.contraindications, pd.DataFrame({C.treatment: [], C.condition: []}))
    if T.treatments in small:
        check_ingredients(small[T.treatments], T.treatments)  # checked on Spark: normalises
    ingredients, treatment_ingredients = incidence(
        facts.treatments, small.get(T.treatments), C.treatment
    )
    known = ci_frame[C.treatment].isin(set(facts.treatments.external_ids)).to_numpy()
    support = np.zeros(n_t, np.int64)
    support[facts.support["t"]] = facts.support["count"]
    patients_frame = (
        _pandas(tables[T.patients])
        if T.patients in tables
        else pd.DataFrame({C.patient: pd.Series(dtype=object)})
    )
    if C.birth_year in patients_frame:
        patients_frame[C.birth_year] = patients_frame[C.birth_year].astype("Int64")
    demographics = demographics_of(facts.patients, patients_frame, facts.reference_year)
    pc = pattern_of(facts.patient_conditions["p"], facts.patient_conditions["c"], (n_p, n_c))
    history = csr_of(latest["p"], latest["t"], latest[C.outcome], (n_p, n_t))
    dataset = Dataset(
        patients=facts.patients,
        treatments=facts.treatments,
        conditions=facts.conditions,
        features=feature_ids(side_info, facts.conditions, demographics),
        matrix=None,
        history=history,
        history_days=csr_of(latest["p"], latest["t"], latest["day"], (n_p, n_t)),
        harmful=pattern_of(facts.harm["p"], facts.harm["t"], (n_p, n_t)),
        patient_conditions=pc,
        contraindications=pattern_of(
            facts.conditions.to_internal(ci_frame[C.condition][known]),
            facts.treatments.to_internal(ci_frame[C.treatment][known]),
            (n_c, n_t),
        ),
        condition_outcomes=csr_of(by_c["c"], by_c["t"], by_c["n"], (n_c, n_t)),
        condition_successes=csr_of(by_c["c"], by_c["t"], by_c["worked"], (n_c, n_t)),
        label_counts=csr_of(
            labels["row"], labels["column"], labels["count"], (n_c + 1, n_t * N_BUCKETS)
        ),
        treatment_support=support,
        interactions=interaction_matrix(small.get(T.interactions), facts.treatments),
        demographics=demographics,
        policy=policy,
        side_info=side_info,
        safety=safety or SafetyPolicy(),
        harm_threshold=harm_threshold,
        reference_year=facts.reference_year,
        fingerprint=fingerprint,
        pseudonym_fingerprint=pseudonymizer.fingerprint if pseudonymizer else "",
        pseudonymizer=pseudonymizer,
        treatment_names=display_names(small.get(T.treatments), C.treatment, facts.treatments),
        condition_names=display_names(small.get(T.conditions), C.condition, facts.conditions),
        ingredients=ingredients,
        treatment_ingredients=treatment_ingredients,
    )
    dataset.matrix = dataset._build_matrix(history, pc)
    return dataset


def _pandas(frame: DataFrame) -> pd.DataFrame:
    """A small table on the driver, string columns as Python objects (as the local reader has)."""
    with quiet_pandas_warning():
        table = frame.drop("_pos").toArrow()
    out = table.to_pandas()
    for name in out.columns:
        if out[name].dtype != object and not pd.api.types.is_numeric_dtype(out[name]):
            out[name] = out[name].astype(object)
    return out


# --- column helpers -----------------------------------------------------------------------------


def _col(name: str) -> Column:
    from pyspark.sql import functions as F

    return F.col(name)


def _text(name: str) -> Column:
    """The column as trimmed text, null as ""."""
    from pyspark.sql import functions as F

    return F.trim(F.coalesce(F.col(name).cast("string"), F.lit("")))


def _lower_text(name: str) -> Column:
    from pyspark.sql import functions as F

    return F.lower(_text(name))


@contextlib.contextmanager
def _utc(spark: SparkSession) -> Iterator[None]:
    """Naive timestamps mean UTC, as in the local reader, whatever the session's time zone."""
    key = "spark.sql.session.timeZone"
    before = spark.conf.get(key)
    spark.conf.set(key, "UTC")
    try:
        yield
    finally:
        spark.conf.set(key, before)
