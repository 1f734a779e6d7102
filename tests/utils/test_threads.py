"""BLAS thread limits: one check per call, or none in a process pinned for good."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import nullcontext

from recommender.utils import threads


class _Library:
    user_api = "blas"

    def __init__(self, num_threads: int):
        self.num_threads = num_threads


class _Controller:
    def __init__(self):
        self.limits = []

    def limit(self, limits, user_api=None):
        self.limits.append((limits, user_api))
        return nullcontext()


def _never_asked():
    raise AssertionError("the BLAS libraries were asked for their thread count")


def test_a_process_pinned_to_one_thread_does_not_ask_again(monkeypatch):
    controller = _Controller()
    monkeypatch.setattr(threads, "blas_controller", lambda: controller)
    monkeypatch.setattr(threads, "_pinned_pid", None)
    threads.pin_blas_threads(1)
    assert controller.limits == [(1, None)]  # every library, as threadpool_limits(1)
    monkeypatch.setattr(threads, "_blas_libraries", _never_asked)
    assert isinstance(threads.single_threaded_blas(), nullcontext)
    assert controller.limits == [(1, None)]


def test_more_threads_or_another_process_keep_the_per_call_limit(monkeypatch):
    controller = _Controller()
    monkeypatch.setattr(threads, "blas_controller", lambda: controller)
    monkeypatch.setattr(threads, "_blas_libraries", lambda: (_Library(2),))
    threads.pin_blas_threads(2)
    threads.single_threaded_blas()
    assert controller.limits[-1] == (1, "blas")
    monkeypatch.setattr(threads, "_pinned_pid", os.getpid() + 1)  # pinned in the parent only
    threads.single_threaded_blas()
    assert controller.limits[-1] == (1, "blas")


def test_pinning_limits_the_real_libraries():
    code = (
        "from threadpoolctl import threadpool_info\n"
        "import numpy\n"
        "from recommender.utils.threads import pin_blas_threads, single_threaded_blas\n"
        "pin_blas_threads(1)\n"
        "with single_threaded_blas():\n"
        "    pass\n"
        "print(sorted({i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    assert out.strip() == "[1]"
