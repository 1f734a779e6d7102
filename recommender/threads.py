"""One BLAS thread inside the library, without re-scanning the process on every call.

implicit parallelises itself and warns (and slows down) when BLAS runs multithreaded beneath
it, so model fitting and scoring run with BLAS limited to one thread. Building a
``ThreadpoolController`` reads ``/proc/self/maps`` (milliseconds), so one is built per process
and reused.
"""
from __future__ import annotations

from functools import lru_cache

from threadpoolctl import ThreadpoolController


@lru_cache(maxsize=None)
def blas_controller() -> ThreadpoolController:
    """The process's controller of its loaded BLAS libraries (built once)."""
    return ThreadpoolController()


def single_threaded_blas():
    """Context manager limiting BLAS to one thread for the duration of the block."""
    return blas_controller().limit(limits=1, user_api="blas")
