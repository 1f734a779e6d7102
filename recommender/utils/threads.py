"""One BLAS thread inside the library, without re-scanning the process on every call.

implicit parallelises itself and warns (and slows down) when BLAS runs multithreaded beneath
it, so model fitting and scoring run with BLAS limited to one thread. Building a
``ThreadpoolController`` reads ``/proc/self/maps`` (milliseconds), so one is built per process
and reused.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import cache

from threadpoolctl import ThreadpoolController


@cache
def blas_controller() -> ThreadpoolController:
    """The process's controller of its loaded BLAS libraries (built once)."""
    return ThreadpoolController()


@cache
def _blas_libraries() -> tuple:
    return tuple(lib for lib in blas_controller().lib_controllers if lib.user_api == "blas")


def single_threaded_blas():
    """Context manager limiting BLAS to one thread for the duration of the block.

    A no-op when every BLAS library already runs one thread (as in the service's workers,
    started with ``OPENBLAS_NUM_THREADS=1``): asking costs a microsecond, limiting and
    restoring costs a tenth of a millisecond, which matters on every request.
    """
    if all(lib.num_threads == 1 for lib in _blas_libraries()):
        return nullcontext()
    return blas_controller().limit(limits=1, user_api="blas")
