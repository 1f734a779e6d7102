"""The audit log: one JSON line per access to patient data, appended durably.

Each line is written with a single ``write(2)`` on a descriptor opened ``O_APPEND``, so lines
from several worker processes never interleave, then ``fsync(2)``-ed (unless ``AUDIT_FSYNC`` is
off) before the response leaves: a request whose line could not be written gets a 503 and no
patient data. Before every write the file's inode is compared with the open descriptor's, so
after ``logrotate`` moves the file away the next line goes to a new file at the configured path
(no ``copytruncate`` or signal needed). Field list: ``service/README.md``.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)


class AuditError(Exception):
    """An audit line could not be written (the request must not return patient data)."""


class AuditLog:
    """Append-only JSON-lines file, reopened when rotated.

    Parameters
    ----------
    path : path-like
        The audit log file (created 0600 if missing; its folder must exist).
    fsync : bool
        ``fsync`` after every line (durable across a power loss, not only a process crash).
    """

    def __init__(self, path: str | os.PathLike, fsync: bool = True):
        self.path = Path(path)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        with self._lock:
            self._open()

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        stat = os.fstat(fd)
        self._close()
        self._fd, self._identity = fd, (stat.st_dev, stat.st_ino)

    def _close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def _current(self) -> int:
        """The descriptor to write to, reopened if the file was rotated or removed."""
        try:
            stat = os.stat(self.path)
            moved = (stat.st_dev, stat.st_ino) != self._identity
        except FileNotFoundError:
            moved = True
        if moved or self._fd is None:
            self._open()
        return self._fd

    def write(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` (plus ``time``) as one line.

        Raises
        ------
        AuditError
            The line could not be written or synced; the caller must withhold the answer.
        """
        line = {"time": _now(), **record}
        data = (json.dumps(line, separators=(",", ":")) + "\n").encode("ascii")
        with self._lock:
            try:
                fd = self._current()
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(f"short write ({written} of {len(data)} bytes)")
                if self.fsync:
                    os.fsync(fd)
            except OSError as exc:
                self._close()  # the next write tries a fresh descriptor
                raise AuditError(f"cannot append to the audit log {self.path}: {exc}") from None

    def writable(self) -> bool:
        """Whether the next line can be appended (used by ``/ready``)."""
        with self._lock:
            try:
                self._current()
            except OSError:
                return False
        return True

    def close(self) -> None:
        with self._lock:
            self._close()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
