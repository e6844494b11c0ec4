"""Multi-process trials: real 2-process DDP (gloo on CPU), pruning across ranks, rank crashes."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient

from bench.spec import RunConfig
from bench.train import fit
from bench.tuning.executor import LaunchError, _root_error, execute
from tests.conftest import STUDIES

pytestmark = pytest.mark.slow


def config(**kw) -> RunConfig:
    base = dict(model="mlp", dataset="digits", optimizer="sgd", params={"lr": 0.1, "hidden_sizes": "32"},
                epochs=2, accelerator="cpu", evaluate_test=True)
    return RunConfig.build(**{**base, **kw})


TORCHRUN_STDERR = """\
Traceback (most recent call last):
  File "bench/worker.py", line 60, in _train
    raise ValueError("rank 1 exploded")
ValueError: rank 1 exploded
E1123 api.py:1002] failed (exitcode: 1) local_rank: 1 (pid: 3091) of binary: python
Traceback (most recent call last):
  File "torch/distributed/launcher/api.py", line 383, in launch_agent
    raise ChildFailedError(
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
======================================================
bench.worker FAILED
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
======================================================
"""


def test_a_failed_group_is_reported_by_its_ranks_error_not_by_torchruns_summary():
    assert _root_error(TORCHRUN_STDERR) == "ValueError: rank 1 exploded"
    killed = "terminate called without an active exception\n  traceback : Signal 6 (SIGABRT) received by PID 7\n===="
    assert _root_error(killed) == "traceback : Signal 6 (SIGABRT) received by PID 7"
    assert _root_error("") == "no output"


def worker_pids() -> list[int]:
    """Processes of this user running bench.worker (or their torchrun parent)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "bench.worker" in cmd:
            pids.append(int(entry.name))
    return pids


def test_fit_refuses_to_start_several_processes_itself():
    with pytest.raises(ValueError, match="use bench.tuning.executor.execute"):
        fit(config(strategy="ddp", devices=2))


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_two_process_ddp_reproduces_the_single_process_run(strategy):
    """Same global batch split across 2 ranks, exact gradient weighting: same numbers."""
    single = execute(config())
    multi = execute(config(strategy=strategy, devices=2))
    assert multi.status == "completed" and multi.extra["world_size"] == 2
    assert multi.extra["strategy"] == strategy and multi.extra["effective_batch_size"] == 64
    assert multi.steps == single.steps and multi.samples == single.samples == 2 * 1078
    for key in ("train/loss", "val/loss", "val/acc", "test/acc"):
        assert multi.final[key] == pytest.approx(single.final[key], rel=1e-4, abs=1e-5), key
    assert not worker_pids()


def test_a_killed_rank_fails_the_run_and_leaves_no_process_behind():
    outcome: dict = {}

    def run() -> None:
        try:
            execute(config(strategy="ddp", devices=2, epochs=400, params={"lr": 0.01, "hidden_sizes": "256-256"}))
        except LaunchError as err:
            outcome["error"] = str(err)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.time() + 90
    victim = None
    while time.time() < deadline and victim is None:
        for pid in worker_pids():
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"RANK=1" in env and b"LOCAL_RANK=1" in env:
                victim = pid
        time.sleep(0.2)
    assert victim is not None, "rank 1 never started"
    time.sleep(3)  # let it train
    os.kill(victim, signal.SIGKILL)
    thread.join(120)
    assert not thread.is_alive()
    assert outcome["error"].startswith("2-process run exited with code")
    time.sleep(0.5)
    assert not worker_pids()


def test_strategy_study_ddp_arm_agrees_with_single_process_and_prunes_on_every_rank(stores):
    assert stores.run("run", str(STUDIES / "strategies.toml"), "--quick", "--quiet") == 0
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(stores.storage))
    auto = optuna.load_study(study_name="strategies-quick/sgd-auto", storage=storage).trials
    ddp = optuna.load_study(study_name="strategies-quick/sgd-ddp2", storage=storage).trials
    assert [t.state for t in ddp] == [t.state for t in auto]
    for a, d in zip(auto, ddp):
        assert list(d.intermediate_values) == list(a.intermediate_values)
        assert list(d.intermediate_values.values()) == pytest.approx(list(a.intermediate_values.values()))
    client = MlflowClient(stores.tracking_uri)
    exp = client.get_experiment_by_name("strategies-quick")
    runs = client.search_runs([exp.experiment_id], "tags.arm = 'sgd-ddp2' and tags.phase != 'arm'")
    assert len(runs) == 2 + 2 and all(r.data.tags["world_size"] == "2" for r in runs)
    assert all(r.info.status in ("FINISHED", "KILLED") for r in runs)
    for run in runs:  # rank 0 logged one point per epoch, no rank duplicated them
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")]
        assert steps == sorted(set(steps)) and len(steps) == int(run.data.tags["epochs_run"])
    table = pd.read_csv(stores.results / "strategies-quick" / "summary.csv").set_index("arm")
    assert table.loc["sgd-ddp2", "test_mean"] == pytest.approx(table.loc["sgd-auto", "test_mean"], abs=1e-6)
    report = (stores.results / "strategies-quick" / "report.md").read_text()
    assert "## Execution strategies" in report
    assert "| sgd-auto (auto x1) | sgd-ddp2 (ddp x2) | 0 | agree |" in report
