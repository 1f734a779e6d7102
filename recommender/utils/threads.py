"""One BLAS thread inside the library, without re-scanning the process on every call.

implicit parallelises itself and warns (and slows down) when BLAS runs multithreaded beneath
it, so model fitting and scoring run with BLAS limited to one thread. Building a
``ThreadpoolController`` reads ``/proc/self/maps`` (milliseconds), so one is built per process
and reused. A process that limits BLAS once for its whole life (the service's workers) says so
with :func:`pin_blas_threads`, and the per-call check is skipped.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from functools import cache

from threadpoolctl import ThreadpoolController

#: The pid of the process whose BLAS libraries were pinned to one thread for good, if any.
_pinned_pid: int | None = None


@cache
def blas_controller() -> ThreadpoolController:
    """The process's controller of its loaded BLAS libraries (built once)."""
    return ThreadpoolController()


@cache
def _blas_libraries() -> tuple:
    return tuple(lib for lib in blas_controller().lib_controllers if lib.user_api == "blas")


def pin_blas_threads(threads: int) -> None:
    """Limit BLAS and OpenMP to ``threads`` threads for the rest of this process.

    With one thread, :func:`single_threaded_blas` becomes a no-op in this process without
    asking the libraries again: asking goes through ``ctypes``, which releases the GIL, and
    under a threaded worker's contention winning it back cost about 4% of a worker's time
    (py-spy, ``bench_http.py --quick``). Whoever pins must not raise the limit afterwards; a
    forked child is not covered (its pid differs) until it pins again.
    """
    global _pinned_pid
    blas_controller().limit(limits=threads)
    _pinned_pid = os.getpid() if threads == 1 else None


def single_threaded_blas():
    """Context manager limiting BLAS to one thread for the duration of the block.

    A no-op in a process pinned by :func:`pin_blas_threads`, and when every BLAS library
    already runs one thread: asking costs a microsecond (more under GIL contention), limiting
    and restoring costs a tenth of a millisecond, which matters on every request.
    """
    if _pinned_pid == os.getpid():
        return nullcontext()
    if all(lib.num_threads == 1 for lib in _blas_libraries()):
        return nullcontext()
    return blas_controller().limit(limits=1, user_api="blas")
