"""The audit log: one JSON line per access to patient data, appended durably.

Each line is written with a single ``write(2)`` on a descriptor opened ``O_APPEND``, so lines
from several worker processes never interleave, then made durable with ``fsync(2)`` (unless
``AUDIT_FSYNC`` is off) before the response leaves: a request whose line could not be written
gets a 503 and no patient data. The write goes through :func:`recommender.utils.jsonlines.
append_line`, shared with the feedback store: a short write (a full disk) is cut back to the
last complete line, and a torn last line left by a crash is moved aside to ``<file>.torn`` when
the file is opened, so a line is never glued onto a fragment. Before every write the file's inode is compared with the open
descriptor's, so after ``logrotate`` moves the file away the next line goes to a new file at the
configured path (no ``copytruncate`` or signal needed). Field list: ``service/README.md``.

With ``AUDIT_FSYNC_INTERVAL_MS`` above zero the fsync leaves the request: the line is still
written (so in the kernel, safe from a crash of the service) before the response leaves, and a
background thread of each worker fsyncs the file at most that many milliseconds later, so a
power loss or kernel crash can lose at most that window. An fsync that fails closes the log: every
later write raises :class:`AuditError` (no more patient data is served) and ``/ready`` says so.

Workers share the file and each one fsyncs its own line, with no coordination between them: the
file system's journal already batches concurrent fsyncs (one journal commit covers every line
written before it started, and an fsync whose line is already committed returns at once). An
earlier version took turns on a lock file and shared a mark of how far the file was durable;
measured under load it gained nothing with 2 workers and made waiting workers queue behind each
other's fsyncs with 3 (``benchmarks/README.md``, HTTP service).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from recommender.utils.jsonlines import (
    AppendError,
    append_line,
    locked,
    open_for_append,
    repair_tail,
)

log = logging.getLogger(__name__)
#: Bytes :func:`can_append` writes for ``/ready``: a page, more than any audit line.
PROBE_BYTES = 4096
#: Seconds a readiness result is reused.
PROBE_INTERVAL = 1.0


class AuditError(Exception):
    """An audit line could not be written (the request must not return patient data)."""


class AuditLog:
    """Append-only JSON-lines file, reopened when rotated.

    Parameters
    ----------
    path : path-like
        The audit log file (created 0600 if missing; its folder must exist).
    fsync : bool
        Make every line durable across a power loss, not only a crash of the service.
    fsync_interval : float
        Seconds: 0 to ``fsync`` each line before :meth:`write` returns; above 0 to leave the
        ``fsync`` to a background thread that runs at most this long after a line is written.
    """

    def __init__(self, path: str | os.PathLike, fsync: bool = True, fsync_interval: float = 0.0):
        self.path = Path(path)
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid = os.getpid()  # the process that opened the descriptor
        self._identity: tuple[int, int] | None = None
        self._failure: str | None = None  # why a background fsync failed: the log is closed
        self._unsynced = threading.Event()
        self._flushing = False  # whether this process runs the background fsync thread
        self._probed: tuple[float, bool] | None = None  # (monotonic time, writable) of /ready
        if self._deferred():
            _after_fork_in_child(self)
        with self._lock:
            self._open()

    def _open(self) -> None:
        fd = open_for_append(self.path)
        try:
            with locked(fd):
                repair_tail(fd, self.path)
        except OSError:
            os.close(fd)
            raise
        stat = os.fstat(fd)
        if self._fd is not None and self._deferred():
            self._sync(self._fd)  # the rotated file's last lines, before its descriptor goes
        self._close()
        self._fd, self._identity, self._pid = fd, (stat.st_dev, stat.st_ino), os.getpid()

    def _deferred(self) -> bool:
        return self.fsync and self.fsync_interval > 0

    def _close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def _current(self) -> int:
        """The descriptor to write to, reopened if the file was rotated or removed, and once in
        a forked process: an ``flock`` belongs to the open file, so workers that shared the
        master's descriptor would not exclude each other (:mod:`recommender.utils.jsonlines`)."""
        try:
            stat = os.stat(self.path)
            moved = (stat.st_dev, stat.st_ino) != self._identity
        except FileNotFoundError:
            moved = True
        if moved or self._fd is None or self._pid != os.getpid():
            self._open()
        return self._fd

    def write(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` (plus ``time``) as one line.

        Raises
        ------
        AuditError
            The line could not be written or synced; the caller must withhold the answer.
        """
        data = encode_line({"time": _now(), **record})
        with self._lock:
            if self._failure is not None:
                raise AuditError(self._failure)
            try:
                fd = self._current()
                with locked(fd):
                    append_line(fd, data, self.path)
                if self._deferred():
                    self._defer_sync()
                elif self.fsync:
                    os.fsync(fd)
            except AppendError as exc:  # the message names the file
                self._probed = None
                self._close()  # the next write tries a fresh descriptor
                raise AuditError(f"audit log: {exc}") from None
            except OSError as exc:
                self._probed = None
                self._close()
                raise AuditError(f"cannot append to the audit log {self.path}: {exc}") from None

    def _defer_sync(self) -> None:
        """Have this process's background thread fsync within ``fsync_interval``."""
        if not self._flushing:  # the first deferred line of this process (reset by a fork)
            self._flushing = True
            threading.Thread(target=self._flush_forever, name="audit-fsync", daemon=True).start()
        self._unsynced.set()

    def _flush_forever(self) -> None:
        while True:
            self._unsynced.wait()
            time.sleep(self.fsync_interval)
            self._unsynced.clear()  # a line written from here on sets it again: next round
            with self._lock:
                if self._fd is None:
                    continue  # closed, or reopened by the next write (which syncs the old file)
                try:
                    # A descriptor of its own, so the fsync (milliseconds) runs without the
                    # lock: the worker's other threads keep appending meanwhile.
                    fd = os.dup(self._fd)
                except OSError as exc:
                    self._fail(exc)
                    continue
            try:
                os.fsync(fd)
            except OSError as exc:
                with self._lock:
                    self._fail(exc)
            finally:
                os.close(fd)

    def _sync(self, fd: int) -> None:
        """``fsync`` with the lock held; a failure closes the log for good."""
        try:
            os.fsync(fd)
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        """Close the log for good (lock held): a line could not be made durable."""
        self._failure = (
            f"the audit log {self.path} could not be made durable ({exc}); no "
            "further access is served until the service is restarted"
        )
        log.error(self._failure)

    def writable(self) -> bool:
        """Whether the next line can be appended (used by ``/ready``).

        A real check: the log is not closed by a failed fsync, the file opens for appending,
        and :func:`can_append` writes a page beside it. The result is kept for
        :data:`PROBE_INTERVAL` seconds (a failed :meth:`write` drops it), so a flood of probes
        costs at most one small write a second.
        """
        with self._lock:
            if self._failure is not None:
                return False
            now = time.monotonic()
            if self._probed is not None and now - self._probed[0] < PROBE_INTERVAL:
                return self._probed[1]
            try:
                self._current()
                problem = can_append(self.path.parent)
            except OSError as exc:
                problem = str(exc)
            if problem is not None:
                log.error("audit log %s is not writable: %s", self.path, problem)
            self._probed = (now, problem is None)
            return problem is None

    def close(self) -> None:
        with self._lock:
            if self._fd is not None and self._deferred():
                self._sync(self._fd)
            self._close()


def can_append(folder: Path, size: int = PROBE_BYTES) -> str | None:
    """Why ``size`` bytes cannot be written to a new file in ``folder``, or None if they can.

    The file is unnamed (``O_TMPFILE``) where the file system allows it, so it never shows up
    and vanishes with its descriptor; elsewhere a named temporary file, removed at once. It
    sits on the audit log's file system, so a full disk or an exhausted quota fails here.
    """
    try:
        fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    except (AttributeError, OSError):  # no O_TMPFILE here, or not on this file system
        try:
            fd, name = tempfile.mkstemp(prefix=".audit-probe-", dir=folder)
        except OSError as exc:
            return f"cannot create a file in {folder}: {exc.strerror}"
        os.unlink(name)
    try:
        written = os.write(fd, b"\0" * size)
    except OSError as exc:
        return f"cannot write to {folder}: {exc.strerror}"
    finally:
        os.close(fd)
    return None if written == size else f"short write in {folder} ({written} of {size} bytes)"


def _after_fork_in_child(audit_log: AuditLog) -> None:
    """Give a forked child fresh locks: a lock the parent's background thread held at the fork
    would stay held in the child, whose copy of that thread does not exist."""
    reference = weakref.ref(audit_log)

    def reset() -> None:
        instance = reference()
        if instance is not None:
            instance._lock = threading.Lock()
            instance._unsynced = threading.Event()
            instance._flushing = False  # the parent's thread is not in the child

    os.register_at_fork(after_in_child=reset)


#: orjson leaves to ``json.dumps`` (which refuses them, as it always did) what it would accept.
_STRICT = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def encode_line(line: Mapping[str, Any]) -> bytes:
    """``line`` as one compact ASCII JSON line, exactly as ``json.dumps`` writes it.

    orjson writes it in a tenth of the time. Its output is the same for the fields' types
    (strings, integers, booleans, None, lists and dicts of them) as long as it is plain ASCII:
    orjson writes non-ASCII text and DEL unescaped, where ``json.dumps`` escapes them as
    ``\\uXXXX``, so such a line - and anything orjson refuses (an integer beyond 64 bits) - goes
    through ``json.dumps``, as do datetimes and dataclasses (which it refuses). No field is a
    float (orjson would write 1e-05 as 0.00001).
    """
    try:
        data = orjson.dumps(line, option=_STRICT)
    except orjson.JSONEncodeError:
        data = None
    if data is None or not data.isascii() or b"\x7f" in data:
        data = json.dumps(line, separators=(",", ":")).encode("ascii")
    return data + b"\n"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
