"""Gunicorn settings and hooks of the clinician service.

``recommender serve`` reads this file; it also works on its own::

    gunicorn -c service/gunicorn.conf.py 'service:create_app()'

- ``preload_app``: the master builds the app once - artifact verified, arrays memory-mapped,
  lookups warmed - and forks the workers, which share those pages (``gc.freeze`` before any
  fork keeps the garbage collector from touching, and so copying, the shared objects).
- ``when_ready`` installs the hot reload (``service/reload.py``): SIGHUP to the master loads
  and verifies the artifact, then forks fresh workers; a refused artifact changes nothing.
- Metrics of all workers are collected through ``PROMETHEUS_MULTIPROC_DIR`` (a private
  temporary folder unless the operator sets one); ``child_exit`` retires a dead worker's files.
- No gunicorn access log: its lines hold the URL, which can hold a raw patient id. The app
  writes its own access log naming the endpoint instead (``RECOMMENDER_ACCESS_LOG``).
- The worker class is ``service.worker.ServiceWorker``: gunicorn's gthread worker with a
  deadline on reading each request (slow or half-open clients hold one thread for at most
  ``RECOMMENDER_REQUEST_READ_TIMEOUT`` seconds) and gunicorn's own 4xx answers as JSON.
- Header limits fit the app's: one header line may carry the 16 KiB JWT of a CDS Hooks call.

Settings read from the environment here: ``RECOMMENDER_BIND`` (default 127.0.0.1:8000),
``RECOMMENDER_WORKERS`` (default: usable cores + 1), ``RECOMMENDER_WORKER_TIMEOUT`` (default 60 seconds),
``RECOMMENDER_WORKER_THREADS`` (BLAS/OpenMP threads per worker, default 1),
``RECOMMENDER_REQUEST_THREADS`` (request threads per worker, default 4),
``RECOMMENDER_REQUEST_READ_TIMEOUT`` (seconds to read one request, default 10).
"""

import os
import shutil
import tempfile

# OpenMP reads its thread count once, when the library loads (implicit's fold-in of a new
# patient runs an OpenMP loop): set it before the app is imported, or every worker spins one
# thread per core against the others (a 3x slower patient-view with prefetch, measured by
# benchmarks/bench_cds.py). pin_blas_threads in post_fork covers BLAS.
os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("RECOMMENDER_WORKER_THREADS", "1"))

if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="recommender-metrics-")
    os.environ["RECOMMENDER_OWNS_METRICS_DIR"] = "1"

# Imported now, not in the hooks: the master runs ``child_exit`` from its SIGCHLD handling,
# and a first import there, interrupted by the next signal of a shutdown, left a partly
# initialised module behind (an AttributeError that crashed the master about once in 15
# SIGTERMs, leaving its temporary folders). After the variable above: prometheus_client reads
# it when it is imported.
from prometheus_client import multiprocess as _prometheus_multiprocess  # noqa: E402

from service.worker import read_timeout as _read_timeout  # noqa: E402

_read_timeout()  # a wrong RECOMMENDER_REQUEST_READ_TIMEOUT stops the start, naming it

bind = os.environ.get("RECOMMENDER_BIND", "127.0.0.1:8000")
# one more worker than cores: while a worker waits for its audit line's fsync, another uses the core
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
workers = int(os.environ.get("RECOMMENDER_WORKERS", _CORES + 1))
worker_class = "service.worker.ServiceWorker"
threads = int(os.environ.get("RECOMMENDER_REQUEST_THREADS", "4"))
preload_app = True
timeout = int(os.environ.get("RECOMMENDER_WORKER_TIMEOUT", "60"))
graceful_timeout = 30
# One request per connection, as with sync workers: a reload's graceful restart then never
# closes an idle kept-alive connection a client is about to reuse (a reverse proxy keeps its
# own keep-alive with the clients).
keepalive = 0
backlog = 2048
limit_request_line = 4094
limit_request_fields = 50
# "Authorization: Bearer " + a JWT of up to 16,384 characters (service/cds_hooks/security.py)
limit_request_field_size = 16_384 + 64
accesslog = None
errorlog = "-"
loglevel = "info"


def _configure_logging():
    """The service's own loggers to stderr (gunicorn keeps its own error log setup)."""
    import logging.config

    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "plain": {
                    "format": "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"
                }
            },
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "formatter": "plain",
                    "stream": "ext://sys.stderr",
                }
            },
            "loggers": {
                "service": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
                "recommender": {"level": "WARNING", "handlers": ["stderr"], "propagate": False},
            },
        }
    )


_configure_logging()


def when_ready(server):
    from service import reload

    control = reload.install(server)
    server.log.info(
        "hot reload ready: SIGHUP to pid %s or POST /v1/admin/reload (control %s)",
        server.pid,
        control,
    )


def post_fork(server, worker):
    """One BLAS/OpenMP thread per worker: the workers already use every core, and extra
    threads per process only fight over them (and implicit warns about multithreaded BLAS)."""
    from recommender.utils.threads import pin_blas_threads

    pin_blas_threads(int(os.environ.get("RECOMMENDER_WORKER_THREADS", "1")))


def child_exit(server, worker):
    _prometheus_multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if os.environ.get("RECOMMENDER_OWNS_METRICS_DIR") == "1":
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    app = server.app.wsgi() if server.cfg.preload_app else None
    control = app.config.get("RELOAD_CONTROL_DIR") if app is not None else None
    if control:
        shutil.rmtree(control, ignore_errors=True)
