"""Run a check of a freshly loaded model in a forked child, so the process that will serve (or
fork the serving workers) is not touched by it.

Two reasons, both about the gunicorn master, which loads every model:

- implicit's ALS fold-in (a new patient) and LightGBM run OpenMP parallel regions; a process
  that has started GNU OpenMP's thread pool and then forks leaves its children waiting forever
  on that pool. The master must never run them; a child may, and then exits.
- a broken model can crash native code (a segfault in a BLAS or LightGBM call on bad state);
  in a child that is a refused artifact, in the master it would be an outage.

The child reports through a pipe, so the answer arrives even when gunicorn's SIGCHLD handler
reaps the child before we do.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable

#: Signals whose (gunicorn master's) handlers a child must not run.
_RESET = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGCHLD", "SIGUSR1", "SIGUSR2", "SIGWINCH")
_LIMIT = 4096  # bytes of the child's message


def run_isolated(check: Callable[[], None], timeout: float) -> str | None:
    """Call ``check()`` in a forked child; None if it returned, else what went wrong.

    ``check`` signals a problem by raising; the message (``"<Type>: <message>"`` for other
    than a ``RecommenderError``) is handed back. A child that crashes or outlives ``timeout``
    seconds (then killed) is reported as such. Without ``os.fork`` the check runs here.
    """
    if not hasattr(os, "fork"):
        return _outcome(check)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.close(read)
            for name in _RESET:
                signal.signal(getattr(signal, name), signal.SIG_DFL)
            message = _outcome(check)
            os.write(write, b"1" if message is None else b"0" + message.encode()[:_LIMIT])
        finally:
            os._exit(0)
    os.close(write)
    try:
        data = _read_all(read, timeout)
    finally:
        os.close(read)
    status = _reap(pid, kill=data is None)
    if data is None:
        return f"the check did not finish within {timeout:g} s (stopped)"
    if data[:1] == b"1":
        return None
    if data[:1] == b"0":
        return data[1:].decode(errors="replace")
    how = f"signal {-status}" if status is not None and status < 0 else "no answer"
    return f"the checking process crashed ({how}): the model breaks native code"


def _outcome(check: Callable[[], None]) -> str | None:
    from recommender.exceptions import RecommenderError

    try:
        check()
    except RecommenderError as exc:
        return str(exc)
    except Exception as exc:  # reported as the refusal reason; the child exits either way
        return f"{type(exc).__name__}: {exc}"
    return None


def _read_all(fd: int, timeout: float) -> bytes | None:
    """Everything written to ``fd`` until the writer closes it; None after ``timeout``."""
    chunks, deadline = [], time.monotonic() + timeout
    poller = select.poll()  # not select.select: it fails on descriptors above 1023
    poller.register(fd, select.POLLIN | select.POLLHUP)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        if poller.poll(remaining * 1000):
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def _reap(pid: int, kill: bool) -> int | None:
    """Wait for the child (killing it first if asked); its exit code, -signal, or None when
    somebody else (gunicorn's SIGCHLD handler) reaped it already."""
    if kill:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status)
