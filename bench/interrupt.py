"""Interrupts: Ctrl-C (SIGINT) and SIGTERM stop `bench run` the same way, at any point.

The first signal raises KeyboardInterrupt in the main thread. The code in flight marks its MLflow
runs KILLED and its Optuna trials FAIL (their parameters queued again for the rerun); the command
prints one line and exits with 128 + the signal number (130 for SIGINT, 143 for SIGTERM). Later
signals are ignored so that this clean-up, a few store writes, is never cut short.

- `deferred()` holds an interrupt back during a short store update that must not be cut in half
  (a trial asked for but not yet marked as ours) and raises it when the update is done.
- `check()` raises KeyboardInterrupt again once a signal came: training calls it at every optimizer
  step and the study wherever it takes work. A KeyboardInterrupt can be lost on its way: raised
  inside a `__del__` that garbage collection ran (Python prints "Exception ignored" and goes on),
  or replaced by an error that a library's clean-up raised while it passed (a `finally` that
  fails). Then `stopping()` is true and the error is an interrupt all the same (bench.tuning.study).
- `forwarding(procs)` is the launcher's side of `bench run --workers`: the workers run in their
  own process group, so a signal reaches each of them exactly once, passed on by the launcher,
  whether it was sent to the launcher's pid or to the terminal's process group.

Cost: nothing until a signal arrives (`check()` reads two attributes); installing the handlers
imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _State:
    signum: int | None = None  # the first signal received (None: not interrupted)
    at: float = 0.0  # time.monotonic() of that signal
    depth: int = 0  # nesting of deferred() blocks in the main thread
    pending: bool = False  # a signal arrived inside a deferred() block
    active: bool = False  # inside handling(): check() and stopping() apply


_state = _State()


def _record(signum: int) -> bool:
    """True for the first signal; later ones only repeat the request."""
    if _state.signum is not None:
        return False
    _state.signum, _state.at = signum, time.monotonic()
    return True


def _handle(signum: int, _frame: object) -> None:
    if not _record(signum):
        return  # already stopping: let the clean-up finish
    if _state.depth:
        _state.pending = True
        return
    raise KeyboardInterrupt


def _reset() -> None:
    _state.signum, _state.at, _state.depth, _state.pending = None, 0.0, 0, False


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt (once) inside the block; the previous handlers
    come back afterwards (callers such as the test suite keep their own)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return
    _reset()
    previous = {s: signal.signal(s, _handle) for s in SIGNALS}
    previous_hook = sys.unraisablehook

    def unraisable(report: Any) -> None:
        if isinstance(report.exc_value, KeyboardInterrupt) and _state.signum is not None:
            return  # ours, lost in a __del__: check() raises it again (the "one line" stays one line)
        previous_hook(report)

    sys.unraisablehook = unraisable
    _state.active = True
    try:
        yield
    finally:
        _state.active = False
        sys.unraisablehook = previous_hook
        for s, handler in previous.items():
            signal.signal(s, handler)


def stopping() -> bool:
    """A signal came inside handling(): whatever is raised now is (or hides) the interrupt."""
    return _state.active and _state.signum is not None


def check() -> None:
    """Raise KeyboardInterrupt if a signal came (its first KeyboardInterrupt may have been lost)."""
    if _state.active and _state.signum is not None:
        raise KeyboardInterrupt


def received() -> int | None:
    """The signal that interrupted this process, if any."""
    return _state.signum


def exit_code() -> int:
    """128 + signal number, as a shell reports a process ended by that signal (130 for Ctrl-C)."""
    return 128 + (_state.signum or signal.SIGINT)


def message(in_flight: int) -> str:
    return f"interrupted: {in_flight} trials in flight marked KILLED; rerun to continue"


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """An interrupt that arrives inside the block is raised when the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if not _state.depth and _state.pending:
            _state.pending = False
            raise KeyboardInterrupt


def deferring() -> bool:
    """True inside a deferred() block: a short store update is in progress in the main thread."""
    return _state.depth > 0


@contextlib.contextmanager
def forwarding(procs: Sequence[subprocess.Popen]) -> Iterator[None]:
    """Every SIGINT/SIGTERM the launcher receives inside the block goes on to its live workers
    (each then stops as above); the launcher itself keeps waiting for them."""

    def forward(signum: int, _frame: object) -> None:
        _record(signum)
        for proc in procs:
            if proc.returncode is None:  # not reaped yet, so the pid is still this worker's
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signum)

    _reset()
    previous = {s: signal.signal(s, forward) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def seconds_since() -> float:
    """Seconds since the interrupting signal (0 when there was none)."""
    return time.monotonic() - _state.at if _state.signum is not None else 0.0
