"""Checks run in a forked child: the answer, a crash, a hang."""

from __future__ import annotations

import faulthandler
import os
import signal
import time

from recommender.exceptions import ArtifactError
from service.isolated import run_isolated


def test_a_passing_check_returns_none_and_a_failing_one_its_message():
    assert run_isolated(lambda: None, 10) is None

    def refuse():
        raise ArtifactError("model/: smoke query check failed: empty")

    assert run_isolated(refuse, 10) == "model/: smoke query check failed: empty"
    assert run_isolated(lambda: 1 / 0, 10) == "ZeroDivisionError: division by zero"


def test_a_check_that_crashes_its_process_is_reported_and_leaves_this_one_running():
    def crash():
        faulthandler.disable()  # pytest's dump of the child's stack is noise here
        os.kill(os.getpid(), signal.SIGSEGV)

    message = run_isolated(crash, 10)
    assert message == "the checking process crashed (signal 11): the model breaks native code"


def test_a_check_that_hangs_is_stopped_after_the_timeout():
    started = time.monotonic()
    assert run_isolated(lambda: time.sleep(30), 0.5).startswith("the check did not finish")
    assert time.monotonic() - started < 5
