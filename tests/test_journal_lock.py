"""The journal file's lock under Ctrl-C: real signals, placed at the instants that matter.

With Optuna's own lock, an interrupt that lands at an attempt to lock removes the lock file (the
holder's, another process's), and one that lands as the lock is released becomes a
FileNotFoundError, which makes a worker of `bench run --workers 2` fail its trial as broken and
go on with the study after Ctrl-C. bench's lock (InterruptSafeJournalLock) raises
the interrupt at once while waiting and right after release while holding.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import optuna
import pytest

from bench import interrupt
from bench.tuning.storage import InterruptSafeJournalLock, open_storage
from tests.conftest import REPO

WAITER = textwrap.dedent("""
    import sys
    import optuna
    from bench import interrupt
    from bench.tuning.storage import open_storage

    with interrupt.handling():
        study = optuna.load_study(study_name="s", storage=open_storage(sys.argv[1]))
        print("ready", flush=True)
        try:
            study.set_user_attr("written", 1)  # waits for the lock another process holds
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(130)
        print("written", flush=True)
    """)


def test_ctrl_c_while_waiting_for_another_process_lock_stops_at_once_and_leaves_it(tmp_path):
    journal = tmp_path / "optuna.journal"
    optuna.create_study(study_name="s", storage=open_storage(str(journal)))
    lock = f"{journal}.lock"
    os.symlink(journal, lock)  # another process holds the lock (Optuna's own lock is this symlink)
    waiter = subprocess.Popen([sys.executable, "-c", WAITER, str(journal)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert waiter.stdout.readline().strip() == "ready"
        time.sleep(0.5)  # inside acquire(), sleeping between attempts
        waiter.send_signal(signal.SIGINT)
        out, _ = waiter.communicate(timeout=30)
    finally:
        waiter.kill()
    assert (waiter.returncode, out.split()) == (130, ["interrupted"])  # raised while waiting, not after
    assert os.path.islink(lock) and os.readlink(lock) == str(journal)  # the holder's lock is untouched
    study = optuna.load_study(study_name="s", storage=open_storage(str(journal)))
    assert "written" not in study.user_attrs


def signal_at(monkeypatch, name: str, when, *, before: bool) -> None:
    """SIGINT to this process at a chosen call of os.<name> (before or after the real call): the
    instant a signal lands, placed exactly. The handler runs on the next bytecode."""
    real, calls = getattr(os, name), []

    def placed(*args, **kwargs):
        calls.append(args)
        hit = when(args, len(calls))
        if hit and before:
            os.kill(os.getpid(), signal.SIGINT)
        result = real(*args, **kwargs)
        if hit and not before:
            os.kill(os.getpid(), signal.SIGINT)
        return result

    monkeypatch.setattr(os, name, placed)


def journal_lines(journal) -> list[bytes]:
    return journal.read_bytes().splitlines(keepends=True)


def test_ctrl_c_at_an_attempt_to_lock_never_deletes_the_holder_lock(tmp_path, monkeypatch):
    """Optuna's acquire() catches it there and removes the lock file: the other process's."""
    journal = tmp_path / "optuna.journal"
    backend = open_storage(str(journal))._backend
    os.symlink(journal, f"{journal}.lock")  # held by another process
    signal_at(monkeypatch, "symlink", lambda args, n: n == 3, before=True)
    with interrupt.handling(), pytest.raises(KeyboardInterrupt):
        backend.append_logs([{"op_code": 0}])
    assert os.path.islink(f"{journal}.lock")
    assert journal_lines(journal) == []


def test_ctrl_c_as_the_lock_is_released_is_an_interrupt_not_an_error(tmp_path, monkeypatch):
    """Optuna's release() turns it into FileNotFoundError (its clean-up unlinks a file already
    gone): a worker then failed its trial as broken and went on with the study after Ctrl-C."""
    journal = tmp_path / "optuna.journal"
    backend = open_storage(str(journal))._backend
    signal_at(monkeypatch, "unlink", lambda args, n: str(args[0]).endswith(".rename"), before=False)
    with interrupt.handling(), pytest.raises(KeyboardInterrupt):
        backend.append_logs([{"op_code": 0}])
    assert not os.path.lexists(f"{journal}.lock")
    assert journal_lines(journal) == [b'{"op_code":0}\n']  # written whole, once


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_lock_is_held_is_raised_right_after_release(tmp_path, sig):
    journal = tmp_path / "optuna.journal"
    journal.touch()
    lock = InterruptSafeJournalLock(str(journal))
    with interrupt.handling():
        assert lock.acquire()
        os.kill(os.getpid(), sig)  # delivered at once: the handler runs before the next line
        time.sleep(0.05)  # (a KeyboardInterrupt here, before the fix, left the lock file behind)
        assert os.path.islink(f"{journal}.lock") and interrupt.received() == sig
        with pytest.raises(KeyboardInterrupt):
            lock.release()
    assert not os.path.lexists(f"{journal}.lock")
    assert not interrupt.deferring()


def test_a_lock_left_by_a_dead_holder_is_taken_after_the_grace_period(tmp_path):
    journal = tmp_path / "optuna.journal"
    journal.touch()
    os.symlink(journal, f"{journal}.lock")
    with pytest.warns(UserWarning, match="too small"):  # Optuna's advice for real use; 1 s keeps the test short
        lock = InterruptSafeJournalLock(str(journal), grace_period=1)
    started = time.monotonic()
    assert lock.acquire()
    assert 1.0 <= time.monotonic() - started < 10
    lock.release()
    assert not os.path.lexists(f"{journal}.lock")


def interrupted_appends(lock, journal, n: int, seed: int = 1) -> dict[str, int]:
    """n appends, each with a SIGINT at a random instant of its first 0.6 ms: what each ended as."""
    import random
    import threading

    backend = optuna.storages.journal.JournalFileBackend(str(journal), lock_obj=lock)
    rng, counts = random.Random(seed), {"interrupted": 0, "written": 0, "error": 0, "lock left": 0}
    main = threading.main_thread().ident
    with interrupt.handling():
        for i in range(n):
            interrupt._reset()
            timer = threading.Timer(rng.uniform(0, 0.0006), signal.pthread_kill, (main, signal.SIGINT))
            outcome = "written"
            try:  # one signal an iteration: once it has come, nothing else can interrupt
                try:
                    timer.start()
                    backend.append_logs([{"op_code": 0, "i": i}])
                except KeyboardInterrupt:
                    outcome = "interrupted"
                except Exception:
                    outcome = "error"  # an interrupt replaced by an error
                timer.join()
            except KeyboardInterrupt:
                pass  # it came after the append
            counts[outcome] += 1
            if os.path.lexists(f"{journal}.lock"):
                counts["lock left"] += 1
                os.unlink(f"{journal}.lock")
    return counts


def test_a_thousand_appends_interrupted_at_random_instants_leave_no_lock_and_no_error(tmp_path):
    journal = tmp_path / "optuna.journal"
    counts = interrupted_appends(InterruptSafeJournalLock(str(journal)), journal, 1000)
    assert counts["error"] == 0 and counts["lock left"] == 0, counts
    assert counts["interrupted"] + counts["written"] == 1000
    lines = journal_lines(journal)
    assert all(line.endswith(b"\n") for line in lines)  # no line torn
    assert len(lines) >= counts["written"]  # an interrupt right after release: its line is written
