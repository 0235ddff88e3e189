"""Stopping a run at a step boundary, with a checkpoint, when something asks it to.

Clusters stop jobs with SIGTERM (preemption, time limits), a person with Ctrl-C (SIGINT), and a shard can
turn out to be corrupt mid-run. None of these should lose the work since the last periodic checkpoint. So
a signal only *requests* a stop (the handler sets a flag); the trainer looks at the flag between two steps,
saves a checkpoint of that step and exits with one line saying how to resume.

Under DDP every rank must stop at the same step, or the ones still training wait forever in their next
all-reduce. A signal may reach one rank only, or reach them at different moments, so at each step boundary
the ranks all-reduce "does any rank want to stop?" (a MAX over a one-element tensor) and act on the answer.

A second Ctrl-C more than a second after the first quits at once, without a checkpoint (the escape hatch
when a step hangs). Signals closer together than that count as one: under torchrun a Ctrl-C reaches every
worker twice, from the terminal and forwarded by the launcher.
"""

from __future__ import annotations

import signal
import threading
import time

from gpt2lab.base import dist

NONE, SIGINT, SIGTERM, DATA_ERROR = 0, 1, 2, 3
WHY = {SIGINT: "Ctrl-C (SIGINT)", SIGTERM: "SIGTERM", DATA_ERROR: "a data error"}
EXIT_CODE = {SIGINT: 130, SIGTERM: 143, DATA_ERROR: 2}  # 128 + signal number, as a shell reports a kill
_CODES = {signal.SIGINT: SIGINT, signal.SIGTERM: SIGTERM}


class StopRequest:
    """`with StopRequest() as stop:` installs the handlers (restored on exit); `stop.agreed(info)` at each
    step boundary says whether (and why) the run stops there, identically on every rank."""

    def __init__(self):
        self.code, self.detail = NONE, ""
        self._since = 0.0
        self._previous: dict = {}

    def request(self, code: int, detail: str = "") -> None:
        if self.code == NONE:
            self.code, self.detail, self._since = code, detail, time.monotonic()

    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.code == SIGINT and time.monotonic() - self._since > 1.0:
            raise KeyboardInterrupt  # asked twice: quit now
        self.request(_CODES[signum])

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # Python only allows handlers there
            for sig in _CODES:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def agreed(self, info) -> int:
        """The stop reason every rank acts on: the largest code any rank holds (NONE when none wants to stop)."""
        return dist.max_over_ranks(self.code, info)
