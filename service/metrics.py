"""Prometheus metrics: request counts and latency per endpoint, auth failures, reloads, model.

Labels never carry an identifier: ``endpoint`` is the Flask endpoint name (the route, not the
URL), so ``/v1/patients/P123/...`` is counted as ``api.patient_recommendations``.

Every label takes its value from a fixed set, so no client can add series: ``endpoint`` is a
route of the app or ``unmatched``, ``method`` one of :data:`METHODS` or ``other`` (a made-up
method such as ``FOO`` must not make a series of its own), ``status`` a status code of
100-599 or ``other``, and the auth-failure ``reason`` and reload ``result`` are fixed words.

Under gunicorn every worker is a process of its own; with ``PROMETHEUS_MULTIPROC_DIR`` set
(``service/gunicorn.conf.py`` sets it) the values live in memory-mapped files in that folder and
a scrape answered by any worker adds up all of them (prometheus_client's multiprocess mode).
Without it (tests, one process) the app's own registry is exported.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
#: Latency buckets (seconds): sub-millisecond to a few seconds.
#: The HTTP methods counted by name (RFC 9110 and PATCH); any other is counted as ``other``.
METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT")
)
#: Why credentials were refused (the ``reason`` label).
AUTH_REASONS = frozenset(("missing", "malformed", "invalid", "forbidden"))
BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.015, 0.03, 0.06, 0.125, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The service's metrics; one instance per app.

    Parameters
    ----------
    model_info : callable
        Returns ``(labels, loaded_at)`` of the model being served, read at scrape time.
    """

    def __init__(self, model_info: Callable[[], tuple[dict, float]]):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "recommender_http_requests",
            "HTTP requests answered",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "recommender_http_request_duration_seconds",
            "Time from the request reaching the app to the response",
            ["endpoint"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "recommender_auth_failures", "Refused credentials", ["reason"], registry=self.registry
        )
        self.audit_failures = Counter(
            "recommender_audit_write_failures",
            "Audit lines that could not be written (request refused)",
            registry=self.registry,
        )
        self.reloads = Counter(
            "recommender_model_reloads", "Model reload attempts", ["result"], registry=self.registry
        )
        self._model = _ModelCollector(model_info)
        self.registry.register(self._model)
        #: (endpoint, method, status) -> the request counter's and latency histogram's children.
        #: ``labels()`` validates its arguments and looks the child up on every call; the children
        #: it returns are the metric's own, kept for the metric's lifetime, and their values
        #: follow a fork themselves (multiprocess mode), so they can be kept here.
        self._request_children: dict[tuple[str, str, int], tuple] = {}

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Count one answer; ``endpoint`` must be a route name or ``unmatched``."""
        key = (endpoint, method if method in METHODS else "other", status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.requests.labels(key[0], key[1], _status_label(status)),
                self.latency.labels(endpoint),
            )
        count, latency = children
        count.inc()
        latency.observe(seconds)

    def auth_failure(self, reason: str) -> None:
        self.auth_failures.labels(reason if reason in AUTH_REASONS else "other").inc()

    def reload(self, ok: bool) -> None:
        self.reloads.labels("ok" if ok else "refused").inc()

    def render(self) -> bytes:
        """The Prometheus text exposition (all workers' values in multiprocess mode)."""
        if os.environ.get(MULTIPROCESS_VARIABLE):
            from prometheus_client.multiprocess import MultiProcessCollector

            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            registry.register(self._model)
            return generate_latest(registry)
        return generate_latest(self.registry)


def _status_label(status: int) -> str:
    return str(status) if 100 <= status <= 599 else "other"


class _ModelCollector:
    """``recommender_model_info`` and the load time, from the answering process's model."""

    def __init__(self, model_info: Callable[[], tuple[dict, float]]):
        self._model_info = model_info

    def collect(self):
        labels, loaded_at = self._model_info()
        info = GaugeMetricFamily(
            "recommender_model_info", "The model being served (value 1)", labels=sorted(labels)
        )
        info.add_metric([str(labels[name]) for name in sorted(labels)], 1)
        loaded = GaugeMetricFamily(
            "recommender_model_loaded_timestamp_seconds", "Unix time the served model was loaded"
        )
        loaded.add_metric([], loaded_at)
        return [info, loaded]
