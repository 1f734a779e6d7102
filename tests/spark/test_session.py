"""Where the Spark engine runs and with which settings (no Spark needed)."""

from __future__ import annotations

from recommender.spark.session import (
    DEFAULT_MASTER,
    MASTER_VARIABLE,
    configured_elsewhere,
    parse_defaults,
    resolve_master,
    session_settings,
)


def test_master_precedence(monkeypatch):
    monkeypatch.delenv(MASTER_VARIABLE, raising=False)
    assert resolve_master() == DEFAULT_MASTER == "local[2]"
    assert resolve_master(configured={"spark.master": "yarn"}) == "yarn"
    monkeypatch.setenv(MASTER_VARIABLE, "spark://head:7077")
    assert resolve_master(configured={"spark.master": "yarn"}) == "spark://head:7077"
    assert resolve_master("k8s://https://api:6443") == "k8s://https://api:6443"


def test_defaults_never_override_the_cluster_configuration():
    local = session_settings("local[2]")
    assert local["spark.sql.shuffle.partitions"] == "4" and local["spark.driver.memory"] == "4g"
    cluster = session_settings("yarn", configured={"spark.serializer": "custom"})
    assert "spark.serializer" not in cluster
    assert "spark.driver.memory" not in cluster and "spark.sql.shuffle.partitions" not in cluster
    assert cluster["spark.sql.session.timeZone"] == "UTC"


def test_spark_defaults_conf_is_read(tmp_path):
    (tmp_path / "spark-defaults.conf").write_text(
        "# comment\nspark.master  yarn\nspark.executor.memory=8g\nspark.a: b\n\n"
    )
    assert configured_elsewhere({"SPARK_CONF_DIR": str(tmp_path)}) == {
        "spark.master": "yarn",
        "spark.executor.memory": "8g",
        "spark.a": "b",
    }
    assert configured_elsewhere({}) == {}
    assert parse_defaults("spark.x   1 2\n") == {"spark.x": "1 2"}
