"""A worker that must stop soon: Slurm's SIGTERM (scancel, preemption, time limit) or the signal
configured with `--slurm signal=SIG@SECONDS`.

On the first signal the worker takes no new trial or evaluation seed. The run in flight gets
`grace` seconds to finish; after that `Preempted` is raised in the main thread (by re-sending the
signal to it, which also wakes a main thread blocked in a wait), and the study protocol marks that
trial FAIL with reason `preempted` and queues its parameters again (bench.tuning.study).
Later signals change nothing: the grace period is counted from the first one. A short store
update under the study lock (bench.interrupt.deferred) is never cut in half: the stop waits for it.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

from bench import interrupt


class Preempted(BaseException):
    """The worker stops (not an Exception: no `except Exception` may swallow it)."""


class StopOnSignal:
    """`install()` once in the main thread; the study calls `check()` wherever it could take new
    work, so a stop request takes effect there at once."""

    def __init__(self, signums: tuple[int, ...], grace_s: float, label: str = "") -> None:
        self.signums, self.grace_s, self.label = signums, grace_s, label
        self.received: str | None = None  # the first signal's name
        self._due = False  # the grace period is over: the next delivery raises
        self._raised = False  # Preempted is on its way: signals are ignored from here on
        self._timer: threading.Timer | None = None

    def install(self) -> StopOnSignal:
        for signum in self.signums:
            signal.signal(signum, self._on_signal)
        return self

    def check(self) -> None:
        """Raise Preempted if a stop was requested (call it where no run is in flight)."""
        if self.received and not self._raised:
            self._raise(f"{self.received}: stopped before taking new work")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._raised:
            return
        if self.received is None:
            self.received = signal.Signals(signum).name
            print(f"{self.label}{self.received} received: no new trials; the run in flight has {self.grace_s:g} s "
                  "to finish", file=sys.stderr, flush=True)
            self._arm(self.grace_s, signum)
        elif self._due and interrupt.deferring():
            self._arm(0.1, signum)  # a store update under the study lock ends first
        elif self._due:
            self._raise(f"{self.received}: the run in flight did not finish within the {self.grace_s:g} s grace period")

    def _arm(self, delay: float, signum: int) -> None:
        self._timer = threading.Timer(delay, self._expire, args=(signum,))
        self._timer.daemon = True
        self._timer.start()

    def _expire(self, signum: int) -> None:
        self._due = True
        signal.pthread_kill(threading.main_thread().ident, signum)

    def _raise(self, message: str) -> None:
        self._raised = True
        if self._timer is not None:
            self._timer.cancel()
        raise Preempted(message)
