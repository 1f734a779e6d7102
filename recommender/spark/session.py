"""The SparkSession of the Spark engine: where it runs and with which settings.

Where (first that is set wins): the ``master`` argument (``--spark-master``), the variable
``RECOMMENDER_SPARK_MASTER``, ``spark.master`` from ``spark-submit`` or ``spark-defaults.conf``,
then ``local[2]`` (this machine, two cores).

Settings: the defaults below are applied only where nothing else sets the key, so a cluster's
``spark-defaults.conf``, ``spark-submit --conf`` and ``PYSPARK_SUBMIT_ARGS`` always win. On a
``local[...]`` master a few more defaults size Spark for a small machine (fewer shuffle
partitions, a 4 GiB driver, the web UI off, bound to the loopback address).

An active session (a notebook's, a test's, or one ``spark-submit`` created) is reused as it is;
:func:`spark_session` stops only a session it started itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..exceptions import RecommenderError
from . import require_pyspark

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

MASTER_VARIABLE = "RECOMMENDER_SPARK_MASTER"
DEFAULT_MASTER = "local[2]"
APP_NAME = "treatment-recommender"

#: Defaults on every master (all overridable by the cluster's own configuration).
DEFAULTS = {
    # Kryo is faster and smaller than Java serialisation for ALS's factor blocks.
    "spark.serializer": "org.apache.spark.serializer.KryoSerializer",
    # numpy <-> Spark goes through Arrow (createDataFrame from Arrow tables, mapInArrow, toArrow).
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Naive timestamps in the tables mean UTC, as in the local reader.
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.showConsoleProgress": "false",
}
#: Extra defaults for ``local[...]`` masters (one small machine).
LOCAL_DEFAULTS = {
    # 200 shuffle partitions (Spark's default) is 100 tiny tasks per core on two cores.
    "spark.sql.shuffle.partitions": "4",
    # The local driver is also the only executor: give it room for ALS's blocks and the factors.
    "spark.driver.memory": "4g",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.ui.enabled": "false",
}


def java_available() -> bool:
    """True when a ``java`` executable is on ``JAVA_HOME`` or the PATH (Spark needs Java 17+)."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return True
    return shutil.which("java") is not None


def resolve_master(master: str | None = None, configured: Mapping[str, str] | None = None) -> str:
    """The master URL to use (see the module docstring for the order)."""
    return (
        master
        or os.environ.get(MASTER_VARIABLE)
        or (configured or {}).get("spark.master")
        or DEFAULT_MASTER
    )


def session_settings(master: str, configured: Mapping[str, str] | None = None) -> dict[str, str]:
    """The defaults to apply for ``master``, without the keys already ``configured`` elsewhere."""
    configured = configured or {}
    settings = dict(DEFAULTS)
    if master.startswith("local"):
        settings.update(LOCAL_DEFAULTS)
    return {key: value for key, value in settings.items() if key not in configured}


def configured_elsewhere(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Settings made outside this package: ``spark-defaults.conf`` (``$SPARK_CONF_DIR`` or
    ``$SPARK_HOME/conf``) and, under ``spark-submit``, the submitted configuration.

    ``PYSPARK_SUBMIT_ARGS`` needs no reading here: Spark applies it after (over) the builder.
    """
    environ = os.environ if environ is None else environ
    settings: dict[str, str] = {}
    folders = [
        environ.get("SPARK_CONF_DIR"),
        environ.get("SPARK_HOME") and str(Path(environ["SPARK_HOME"]) / "conf"),
    ]
    for folder in filter(None, folders):
        path = Path(folder) / "spark-defaults.conf"
        if path.is_file():
            settings = parse_defaults(path.read_text())
            break
    if environ.get("PYSPARK_GATEWAY_PORT"):
        # Started by spark-submit: its JVM already holds the --conf and defaults, and the
        # builder's settings would override them.
        from pyspark import SparkConf

        settings.update(dict(SparkConf().getAll()))
    return settings


def parse_defaults(text: str) -> dict[str, str]:
    """Key/value pairs of a ``spark-defaults.conf`` text (``key value``, ``key=value``, ``key: value``)."""
    settings = {}
    for line in text.splitlines():
        match = re.match(r"\s*([^\s=:#]+)\s*[=:\s]\s*(.*?)\s*$", line)
        if match:
            settings[match.group(1)] = match.group(2)
    return settings


def build_session(master: str | None = None, app_name: str = APP_NAME) -> SparkSession:
    """The active SparkSession, or a new one for ``master`` (see the module docstring).

    Raises
    ------
    RecommenderError
        pyspark is not installed, Java is missing, or Spark could not start.
    """
    require_pyspark()
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        if master and active.sparkContext.master != master:
            log.warning(
                "reusing the active Spark session on %s (asked for %s)",
                active.sparkContext.master,
                master,
            )
        return active
    if not java_available():
        raise RecommenderError(
            "Spark needs Java 17 or newer: install it and put it on the PATH or set JAVA_HOME"
        )
    configured = configured_elsewhere()
    master = resolve_master(master, configured)
    if master.startswith("local") and not os.environ.get("PYSPARK_PYTHON"):
        # pyspark starts its Python workers with $PYSPARK_PYTHON (default: python3 on the PATH);
        # locally they must run this interpreter, whose environment has this package.
        os.environ["PYSPARK_PYTHON"] = sys.executable
    builder = SparkSession.builder.appName(app_name).master(master)
    for key, value in session_settings(master, configured).items():
        builder = builder.config(key, value)
    try:
        with quiet_pandas_warning():
            spark = builder.getOrCreate()
    except (PySparkException, Py4JError, OSError) as exc:
        raise RecommenderError(
            f"Spark could not start on master {master!r}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    spark.sparkContext.setLogLevel("WARN" if log.isEnabledFor(logging.INFO) else "ERROR")
    log.info(
        "Spark %s on %s (default parallelism %d)",
        spark.version,
        spark.sparkContext.master,
        spark.sparkContext.defaultParallelism,
    )
    return spark


@contextlib.contextmanager
def spark_session(master: str | None = None) -> Iterator[SparkSession]:
    """A session for one command; stopped on exit only if this call started it."""
    require_pyspark()
    from pyspark.sql import SparkSession

    existed = SparkSession.getActiveSession() is not None
    spark = build_session(master)
    try:
        yield spark
    finally:
        if not existed:
            spark.stop()


@contextlib.contextmanager
def quiet_pandas_warning() -> Iterator[None]:
    """Silence pyspark's FutureWarning about pandas >= 3 around Arrow conversions.

    The engine moves data through Arrow tables (never pandas DataFrames) between numpy and
    Spark, so the compatibility caveat of pyspark's pandas conversions does not apply.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="PySpark does not yet fully support pandas", category=FutureWarning
        )
        yield
