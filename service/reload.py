"""Hot reload across gunicorn workers: SIGHUP and ``POST /v1/admin/reload``.

The app is preloaded in the gunicorn master, so workers are forks that share the master's
model (memory-mapped arrays and lookups, copy-on-write). A reload therefore happens in the
master:

1. SIGHUP reaches the master (from an operator, or from a worker serving the admin endpoint,
   which first drops a request file naming the artifact into the control folder).
2. The master builds the new snapshot beside the serving one - key re-read, checksums
   verified, key fingerprint checked, lookups warmed - while the workers keep answering.
3. Refused: the error is logged (and handed back to the admin request); nothing else changes.
   Accepted: the snapshot is swapped in and gunicorn's own graceful reload forks new workers
   from the master and stops the old ones after their in-flight request. The listening socket
   stays open throughout, so no connection is refused and no request fails.

Without this module (``create_app`` used directly, e.g. by tests or a single process), the
admin endpoint reloads the one process it runs in.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from .runtime import ReloadOutcome, Runtime

log = logging.getLogger(__name__)
CONTROL_KEY, MASTER_KEY = "RELOAD_CONTROL_DIR", "RELOAD_MASTER_PID"
POLL_SECONDS = 0.02
STALE_SECONDS = 600


# --- worker side ---------------------------------------------------------------------------------


def request_fleet_reload(
    control: str | os.PathLike, master_pid: int, artifact: str | None, timeout: float
) -> dict | None:
    """Ask the master to reload ``artifact`` (None: the current one) and wait for its answer.

    Returns the master's outcome (``ReloadOutcome.to_dict()``), or None if it did not answer
    within ``timeout`` seconds (the reload may still complete).
    """
    control = Path(control)
    job = f"{time.time_ns():020d}-{uuid.uuid4().hex}"
    tmp = control / "requests" / f".{job}.tmp"
    tmp.write_text(json.dumps({"artifact": artifact}))
    os.replace(tmp, control / "requests" / f"{job}.json")
    os.kill(master_pid, signal.SIGHUP)
    result = control / "results" / f"{job}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result.exists():
            outcome = json.loads(result.read_text())
            result.unlink(missing_ok=True)
            return outcome
        time.sleep(POLL_SECONDS)
    return None


# --- master side ---------------------------------------------------------------------------------


def install(arbiter) -> Path:
    """Give a gunicorn arbiter (preloaded app) the reload behaviour; returns the control folder.

    Called from the ``when_ready`` hook, before the first worker is forked, so every worker
    inherits the control folder and the master's pid in its app config.
    """
    if not arbiter.cfg.preload_app:
        raise RuntimeError("hot reload needs preload_app = True (see service/gunicorn.conf.py)")
    app = arbiter.app.wsgi()
    control = Path(tempfile.mkdtemp(prefix="recommender-reload-"))
    (control / "requests").mkdir()
    (control / "results").mkdir()
    app.config[CONTROL_KEY], app.config[MASTER_KEY] = str(control), arbiter.pid
    gunicorn_reload = arbiter.handle_hup  # forks new workers, stops the old ones gracefully
    freeze_shared_objects()

    def restart_workers() -> None:
        freeze_shared_objects()
        gunicorn_reload()

    def handle_hup() -> None:
        master_reload(app.extensions["recommender"], control, restart_workers)

    arbiter.handle_hup = handle_hup  # the arbiter looks its signal handlers up by name
    return control


def freeze_shared_objects() -> None:
    """Collect garbage (an old model's), then keep the collector off what workers will share.

    ``gc.freeze`` moves every object into a permanent generation the collector never scans,
    so the forked workers do not write to (and so copy) the pages of the master's objects.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def master_reload(runtime: Runtime, control: Path, restart_workers: Callable[[], None]) -> None:
    """Serve every pending reload request (or a plain SIGHUP), then restart workers if needed."""
    requests = sorted((control / "requests").glob("*.json"))
    jobs = [(path.stem, _read_request(path)) for path in requests] or [(None, None)]
    tokens_before = runtime.tokens
    outcomes = []
    for job, artifact in jobs:
        outcomes.append((job, _reload_once(runtime, artifact)))
    if any(outcome.ok for _, outcome in outcomes) or runtime.tokens != tokens_before:
        restart_workers()
    for job, outcome in outcomes:
        if job is not None:
            _write_result(control, job, outcome)
    for path in requests:
        path.unlink(missing_ok=True)
    _remove_stale(control)


def _reload_once(runtime: Runtime, artifact: str | None) -> ReloadOutcome:
    try:
        return runtime.reload(artifact)
    except Exception:  # the master must survive any failure and keep serving
        log.exception(
            "reload of %s failed unexpectedly; the current model keeps serving",
            artifact or "the current artifact",
        )
        current = runtime.store.current
        return ReloadOutcome(
            False,
            str(artifact or current.path),
            current.version,
            current.version,
            "unexpected error while loading; see the server log",
        )


def _read_request(path: Path) -> str | None:
    try:
        artifact = json.loads(path.read_text()).get("artifact")
    except (OSError, ValueError, AttributeError):
        return None
    return artifact if isinstance(artifact, str) else None


def _write_result(control: Path, job: str, outcome: ReloadOutcome) -> None:
    tmp = control / "results" / f".{job}.tmp"
    tmp.write_text(json.dumps(outcome.to_dict()))
    os.replace(tmp, control / "results" / f"{job}.json")


def _remove_stale(control: Path) -> None:
    """Drop results nobody collected (the asking worker timed out or died)."""
    cutoff = time.time() - STALE_SECONDS
    for path in (control / "results").iterdir():
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except FileNotFoundError:
            pass
