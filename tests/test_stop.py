"""run/stop.py: a signal only requests a stop, the first reason wins, a quick second Ctrl-C is the same one,
a late second Ctrl-C quits at once, and the handlers are put back as they were."""

import os
import signal
import threading
import time

import pytest

from gpt2lab.base.dist import DistInfo
from gpt2lab.run import stop
from gpt2lab.run.stop import DATA_ERROR, NONE, SIGINT, SIGTERM, StopRequest


def test_codes_and_exit_statuses_follow_the_shell_convention():
    # a shell reports a process killed by signal N as 128 + N: SIGINT is 2, SIGTERM is 15
    assert stop.EXIT_CODE[SIGINT] == 128 + signal.SIGINT == 130
    assert stop.EXIT_CODE[SIGTERM] == 128 + signal.SIGTERM == 143
    assert stop.EXIT_CODE[DATA_ERROR] == 2
    assert NONE < SIGINT and NONE < SIGTERM and NONE < DATA_ERROR  # "the largest code" means "someone wants to stop"
    assert set(stop.WHY) == set(stop.EXIT_CODE) == {SIGINT, SIGTERM, DATA_ERROR}


def test_sigterm_sets_the_flag_and_the_run_goes_on():
    with StopRequest() as s:
        assert s.agreed(DistInfo()) == NONE
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to the main thread before kill returns to Python code
        assert s.code == SIGTERM
        assert s.agreed(DistInfo()) == SIGTERM


def test_the_first_reason_wins():
    s = StopRequest()
    s.request(DATA_ERROR, "shard 3: sha256 mismatch")
    s.request(SIGTERM)
    assert (s.code, s.detail) == (DATA_ERROR, "shard 3: sha256 mismatch")


def test_two_ctrl_c_within_a_second_are_one_request():
    """Under torchrun a Ctrl-C reaches each worker twice (terminal and launcher): that must not quit at once."""
    with StopRequest() as s:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        assert s.code == SIGINT


def test_a_second_ctrl_c_after_a_second_quits_at_once(monkeypatch):
    with StopRequest() as s:
        os.kill(os.getpid(), signal.SIGINT)
        s._since = time.monotonic() - 1.5  # the first Ctrl-C was 1.5 s ago
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def test_handlers_are_restored_on_exit_even_after_an_error():
    def mine(signum, frame):
        pass

    before = {sig: signal.signal(sig, mine) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(ValueError):
            with StopRequest():
                assert signal.getsignal(signal.SIGTERM) is not mine
                raise ValueError("a step failed")
        assert signal.getsignal(signal.SIGINT) is mine and signal.getsignal(signal.SIGTERM) is mine
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_outside_the_main_thread_no_handler_is_installed():
    """Python allows signal handlers only in the main thread; a trainer in a worker thread still gets requests."""
    seen = {}

    def worker():
        before = signal.getsignal(signal.SIGTERM)
        with StopRequest() as s:
            seen["changed"] = signal.getsignal(signal.SIGTERM) is not before
            s.request(DATA_ERROR)
            seen["agreed"] = s.agreed(DistInfo())

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == {"changed": False, "agreed": DATA_ERROR}
