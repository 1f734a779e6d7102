"""Append-only JSON-lines files whose records never tear.

Every JSON-lines store (the service's audit log, the feedback store) appends through
:func:`append_line`, so one rule holds for all of them: after a call the file ends at a record
boundary. Either the whole line is in the file and the call returned, or the call raised and the
file is exactly as it was before:

- a line is written with one ``write(2)`` of the whole line on an ``O_APPEND`` descriptor, and
  the byte count is checked;
- a short write (a full disk, a quota) or a failed one is cut back with ``ftruncate(2)`` to the
  size the file had before, and reported as :class:`AppendError`;
- a torn last line that a crash (power loss) left behind is moved aside to ``<file>.torn``
  (logged) before the next line is written, so a new record is never glued onto a fragment.

Writers hold an exclusive ``flock(2)`` on the descriptor (:func:`locked`) around the tail check,
the write and the cut-back: a cut-back must never remove a line another process appended after
the fragment. The lock is not held for ``fsync``, so processes still sync in parallel.

Readers (:func:`read_records`) skip lines that are not a JSON object and count them, instead of
failing on the first one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: Bytes read per step when looking backwards for the last record boundary.
_CHUNK = 65_536


class AppendError(OSError):
    """A line could not be appended whole; the file was left at its last record boundary."""


def open_for_append(path: str | os.PathLike) -> int:
    """A descriptor for :func:`append_line` (``O_RDWR | O_APPEND``; created 0600 if missing)."""
    return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)


@contextlib.contextmanager
def locked(fd: int) -> Iterator[int]:
    """Hold an exclusive ``flock`` on ``fd`` (shared by every process appending to the file)."""
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield fd
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def append_line(fd: int, data: bytes, path: str | os.PathLike) -> None:
    """Append one record ``data`` (bytes ending in its only newline) to the file of ``fd``.

    The caller holds :func:`locked` on ``fd``, which was opened by :func:`open_for_append`.
    ``path`` names the file in messages and places the ``.torn`` file of a repaired tail.

    Raises
    ------
    AppendError
        The line was not written whole; the file is as it was before the call.
    """
    if not data.endswith(b"\n") or b"\n" in data[:-1]:
        raise ValueError("a JSON-lines record is one line ending in a newline")
    start = repair_tail(fd, path)
    try:
        written = os.write(fd, data)
    except OSError as exc:
        _cut_back(fd, start, path)
        raise AppendError(exc.errno, f"cannot append to {path}: {exc.strerror}") from None
    if written != len(data):
        _cut_back(fd, start, path)
        raise AppendError(
            f"cannot append to {path}: short write ({written} of {len(data)} bytes; "
            "is the disk full?); the partial line was removed"
        )


def _cut_back(fd: int, size: int, path: str | os.PathLike) -> None:
    """Shrink the file to ``size`` bytes (never grow it: that would write zeros)."""
    try:
        if os.fstat(fd).st_size > size:
            os.ftruncate(fd, size)
    except OSError as exc:  # the fragment stays; the next append moves it aside
        log.error("%s: could not remove a partial line: %s", path, exc)


def repair_tail(fd: int, path: str | os.PathLike) -> int:
    """Move a torn last line aside to ``<path>.torn``; the file's size afterwards.

    The caller holds :func:`locked` on ``fd`` (opened for reading and appending). Cost when the
    file is sound: one ``fstat`` and a one-byte ``pread``.

    Raises
    ------
    AppendError
        The fragment could not be saved (e.g. the disk is full); the file is left unchanged.
    """
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    boundary = _last_boundary(fd, size)
    torn = Path(f"{os.fspath(path)}.torn")
    try:
        _copy_range(fd, boundary, size, torn)
    except OSError as exc:
        raise AppendError(
            exc.errno, f"{path} ends in a torn line that cannot be moved to {torn}: {exc.strerror}"
        ) from None
    os.ftruncate(fd, boundary)
    log.warning(
        "%s ended in a torn line (%d bytes after the last complete record): moved it to %s",
        path,
        size - boundary,
        torn,
    )
    return boundary


def _last_boundary(fd: int, size: int) -> int:
    """The offset just after the last newline before ``size`` (0 when there is none)."""
    end = size
    while end > 0:
        begin = max(0, end - _CHUNK)
        newline = os.pread(fd, end - begin, begin).rfind(b"\n")
        if newline >= 0:
            return begin + newline + 1
        end = begin
    return 0


def _copy_range(fd: int, begin: int, end: int, target: Path) -> None:
    """Append bytes ``[begin, end)`` of ``fd`` and a newline to ``target``, durably."""
    out = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        while begin < end:
            chunk = os.pread(fd, min(_CHUNK, end - begin), begin)
            _write_all(out, chunk)
            begin += len(chunk)
        _write_all(out, b"\n")
        os.fsync(out)
    finally:
        os.close(out)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written == 0:
            raise OSError(28, "no space left on device")
        view = view[written:]


@dataclass
class Records:
    """What :func:`read_records` found.

    Attributes
    ----------
    records : list of (int, dict)
        The complete lines that are JSON objects, in file order, with their 1-based line
        numbers (counted from the offset read from).
    unparsable : list of int
        Numbers of the lines skipped: not UTF-8, not JSON, or JSON but not an object.
    end : int
        Byte offset after the last complete line (where a later read can continue).
    """

    records: list[tuple[int, dict]] = field(default_factory=list)
    unparsable: list[int] = field(default_factory=list)
    end: int = 0


def read_records(path: str | os.PathLike, offset: int = 0) -> Records:
    """The complete lines of ``path`` from byte ``offset`` on; a missing file has none.

    A last line without its newline is not read (it is being written, or torn) and ``end``
    stays before it. Blank lines are skipped without being counted.
    """
    result = Records(end=offset)
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return result
    with handle:
        handle.seek(offset)
        for number, line in enumerate(handle, start=1):
            if not line.endswith(b"\n"):
                break
            result.end += len(line)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
                record = None
            if isinstance(record, dict):
                result.records.append((number, record))
            else:
                result.unparsable.append(number)
    return result
