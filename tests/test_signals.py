"""Ctrl-C and SIGTERM on `bench run` (one process or --workers): real processes, real signals.

After the signal nothing is RUNNING in either store, the runs in flight are KILLED, their trials
FAIL with their parameters queued again, the parent runs KILLED (not FAILED), the command prints
one line and returns within seconds; the rerun finishes the study with exact counts.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from tests.conftest import REPO

pytestmark = pytest.mark.slow

RETURN_WITHIN_S = 10.0  # signal -> command returned (measured: 2-6 s on 2 busy cores)
LINE = re.compile(r"^interrupted: (\d+) trials in flight marked KILLED; rerun to continue$")


def study_file(root, epochs: int = 300, arm: str = 'optimizer = "sgd"') -> str:
    # one arm, trials of a few seconds (so that each worker is inside one when the signal comes)
    path = root / "sig.toml"
    path.write_text(textwrap.dedent("""
        name = "sig"
        model = "mlp"
        dataset = "digits"
        epochs = {epochs}
        [params]
        batch_size = 256
        [tuning]
        n_trials = 2
        pruner = "none"
        [eval]
        seeds = 2
        [[arms]]
        """).format(epochs=epochs) + arm + "\n")
    return str(path)


def journal(stores):
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(stores.storage))


def trials(stores) -> list:
    try:
        return optuna.load_study(study_name="sig/sgd", storage=journal(stores)).trials
    except KeyError:
        return []


def runs(stores) -> list:
    client = MlflowClient(stores.tracking_uri)
    exp = client.get_experiment_by_name("sig")
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


def start(stores, path, workers: int, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`bench run` in a session of its own, as a shell starts a job in its own process group."""
    err = open(stores.root / "stderr.txt", "w")  # a file, not a pipe: workers left behind must not block us
    cmd = [sys.executable, "-m", "bench.cli", "run", path, "--quiet", "--workers", str(workers), *stores.flags()]
    return subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{stores.root}", **(env or {})},
                            cwd=stores.root, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)


def wait_in_flight(proc, stores, n: int) -> None:
    """Until n trials are training (their MLflow run exists)."""
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if sum(t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs for t in trials(stores)) >= n:
            return
        time.sleep(0.1)
    pytest.fail(f"never {n} trials in flight; stderr: {(stores.root / 'stderr.txt').read_text()[-2000:]}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def worker_pids(stores) -> list[int]:
    """From the launcher's "2 workers started (pids 11 12, ...)" line."""
    text = (stores.root / "stderr.txt").read_text() if (stores.root / "stderr.txt").exists() else ""
    match = re.search(r"pids ([\d ]+),", text)
    return [int(p) for p in match.group(1).split()] if match else []


@contextlib.contextmanager
def reaping_workers(stores):
    """Kill workers a failing run left behind (before the fix they went on with the study)."""
    try:
        yield
    finally:
        for pid in worker_pids(stores):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def interrupt(stores, *, workers: int, sig: signal.Signals, to_group: bool) -> tuple[int, float, list[str]]:
    path = study_file(stores.root)
    proc = start(stores, path, workers)
    wait_in_flight(proc, stores, workers)
    sent = time.monotonic()
    (os.killpg if to_group else os.kill)(proc.pid, sig)
    code = proc.wait(timeout=120)
    took = time.monotonic() - sent
    lines = [line for line in (stores.root / "stderr.txt").read_text().splitlines() if line.strip()]
    return code, took, lines


def diagnosis(stores) -> list:
    """What each trial and run ended as (shown when an assertion fails)."""
    return ([(t.number, t.state.name, t.user_attrs.get("worker"), t.user_attrs.get("fail_reason"))
             for t in trials(stores)]
            + [(r.data.tags.get("phase"), r.data.tags.get("worker"), r.info.status, r.data.tags.get("error"))
               for r in runs(stores)])


def check_stopped(stores, lines: list[str], *, in_flight: int) -> None:
    """One line naming the runs stopped; the stores hold no RUNNING run or trial."""
    assert not [line for line in lines if "Traceback" in line or "Error" in line], lines
    assert LINE.match(lines[-1]), lines
    assert int(LINE.match(lines[-1]).group(1)) == in_flight
    assert not [line for line in lines if not line.startswith(("interrupted:", "2 workers started"))], lines
    all_runs = runs(stores)
    states = Counter((r.data.tags.get("phase"), r.info.status) for r in all_runs)
    assert not [r for r in all_runs if r.info.status == "RUNNING"], states
    assert states[("arm", "KILLED")] == 1 and states[("arm", "FAILED")] == 0, states
    killed = [r for r in all_runs if r.data.tags.get("error") == "interrupted"]
    assert len(killed) == in_flight and all(r.info.status == "KILLED" for r in killed)
    found = trials(stores)
    assert not [t for t in found if t.state == TrialState.RUNNING]
    failed = [t for t in found if t.state == TrialState.FAIL]
    assert len(failed) == in_flight and all(t.user_attrs["fail_reason"] == "interrupted" for t in failed)
    queued = {t.user_attrs["retry_of"]: t for t in found if t.state == TrialState.WAITING}
    assert sorted(queued) == sorted(t.number for t in failed)  # each one's parameters, queued again
    for t in failed:
        assert queued[t.number].system_attrs["fixed_params"] == t.params


def test_ctrl_c_to_the_process_group_of_two_workers_stops_everything_and_the_rerun_completes(stores):
    with reaping_workers(stores):
        code, took, lines = interrupt(stores, workers=2, sig=signal.SIGINT, to_group=True)
    assert code == 130 and took < RETURN_WITHIN_S, (code, took, lines, diagnosis(stores))
    check_stopped(stores, lines, in_flight=2)
    before = {t.number: t.params for t in trials(stores) if t.state == TrialState.FAIL}

    assert stores.run("run", study_file(stores.root), "--quiet") == 0  # the rerun continues
    found = trials(stores)
    states = Counter(t.state for t in found)
    assert states == {TrialState.COMPLETE: 2, TrialState.FAIL: 2}  # exactly n_trials finished
    retried = {t.user_attrs["retry_of"]: t.params for t in found if t.state == TrialState.COMPLETE}
    assert retried == before  # the interrupted configurations were the ones trained
    all_runs = runs(stores)
    assert not [r for r in all_runs if r.info.status == "RUNNING"]
    evals = [r for r in all_runs if r.data.tags.get("phase") == "eval" and r.info.status == "FINISHED"]
    assert sorted(int(r.data.tags["seed"]) for r in evals) == [1000, 1001]
    parents = [r for r in all_runs if r.data.tags.get("phase") == "arm"]
    assert [r.info.status for r in parents] == ["FINISHED"]


def test_sigterm_to_the_launcher_pid_alone_reaches_its_workers(stores):
    with reaping_workers(stores):
        code, took, lines = interrupt(stores, workers=2, sig=signal.SIGTERM, to_group=False)
        assert code == 143 and took < RETURN_WITHIN_S, (code, took, lines, diagnosis(stores))
        assert len(worker_pids(stores)) == 2
        assert not [pid for pid in worker_pids(stores) if alive(pid)]  # no worker goes on with the study
    check_stopped(stores, lines, in_flight=2)
    assert not [t for t in trials(stores) if t.state == TrialState.COMPLETE]


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_one_process_stops_on_ctrl_c_or_sigterm_with_one_line(stores, sig, code):
    got, took, lines = interrupt(stores, workers=1, sig=sig, to_group=False)
    assert got == code and took < RETURN_WITHIN_S, (got, took, lines, diagnosis(stores))
    check_stopped(stores, lines, in_flight=1)


# An optimizer (named by import path, as a user's own) whose 5th step gets a Ctrl-C in one of the
# two ways a KeyboardInterrupt is lost on its way in real runs: raised inside a __del__ that garbage
# collection runs (Lightning's Profiler.__del__ was one), or replaced by an error that a clean-up
# raises while it passes (a `finally` that fails, as Optuna's journal lock release can).
LOSING = textwrap.dedent("""
    import os, signal, time
    import torch

    class _Collected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs here, inside __del__: Python only prints what it raises
                pass

    class Losing(torch.optim.SGD):
        steps = 0

        def step(self, closure=None):
            Losing.steps += 1
            if Losing.steps == 5:
                if os.environ["LOSE_INTERRUPT"] == "swallowed":
                    _Collected()  # dropped at once: its __del__ runs now
                else:
                    try:
                        os.kill(os.getpid(), signal.SIGINT)
                        time.sleep(5)
                    finally:
                        raise RuntimeError("Error: did not possess lock")
            return super().step(closure)
    """)


@pytest.mark.parametrize("how", ["swallowed", "replaced"])
def test_an_interrupt_whose_keyboardinterrupt_is_lost_still_stops_the_run(stores, how):
    (stores.root / "losing.py").write_text(LOSING)
    path = study_file(stores.root, epochs=20, arm='name = "sgd"\noptimizer = "losing:Losing"\n'
                      'space = { lr = { low = 0.01, high = 0.1, log = true } }')
    proc = start(stores, path, 1, env={"LOSE_INTERRUPT": how})
    code = proc.wait(timeout=300)
    lines = [line for line in (stores.root / "stderr.txt").read_text().splitlines() if line.strip()]
    assert code == 130, (code, lines, diagnosis(stores))  # before: the run went on (0) as if never stopped
    check_stopped(stores, lines, in_flight=1)
    assert not [t for t in trials(stores) if t.state == TrialState.COMPLETE]
