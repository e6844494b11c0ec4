"""Where a run trains: in this process, or in its own process group for several devices.

Optuna stays in the launcher (ask/tell); a run with `devices > 1` never trains in the launcher,
because Lightning's DDP launcher would re-execute the launching script on every rank. Instead it
is started as `python -m torch.distributed.run --standalone --nproc-per-node N -m bench.worker
CONTEXT.json` (or plain `python -m bench.worker` for ddp_spawn, where Lightning spawns the ranks),
in a new session so that an interrupt or a crash of one rank takes the whole group down and no
process is left behind. Inside a Slurm job a trial with `num_nodes > 1` is started with `srun`
instead (one task per device on each node; Lightning's Slurm environment gives the ranks), its
context passed in the environment because the other nodes cannot read this node's files.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.spec import RunConfig
from bench.train import Reporter, RunResult, fit


class LaunchError(RuntimeError):
    """A multi-process run exited non-zero; the message ends with its stderr tail."""


def needs_processes(config: RunConfig) -> bool:
    return config.devices * config.num_nodes > 1


def execute(config: RunConfig, reporter: Reporter | None = None, *, context: dict[str, Any] | None = None) -> RunResult:
    """Train `config`. In-process with `reporter`; otherwise in a process group whose rank 0
    builds its own reporter from `context` (tracking_uri, run_id, storage, study_name,
    trial_id, pruner) so that metrics and pruning reach the same MLflow run and Optuna trial."""
    if not needs_processes(config):
        return fit(config, reporter=reporter)
    return launch(config, context or {})


def command(config: RunConfig, ctx_path: Path) -> list[str]:
    """How the ranks of a multi-process run are started (see the module docstring)."""
    if config.num_nodes > 1 and os.environ.get("SLURM_JOB_ID"):
        # rank 0 (SLURM_PROCID 0) runs on the step's first node, this one: it writes the result here
        return ["srun", f"--nodes={config.num_nodes}", f"--ntasks-per-node={config.devices}", "--kill-on-bad-exit=1",
                sys.executable, "-m", "bench.worker", f"env:{CONTEXT_VAR}"]
    if config.strategy == "ddp_spawn":
        return [sys.executable, "-m", "bench.worker", str(ctx_path)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={config.devices}", "-m", "bench.worker", str(ctx_path)]


CONTEXT_VAR = "BENCH_RUN_CONTEXT"  # the context as JSON, for ranks on other nodes (srun)


def launch(config: RunConfig, context: dict[str, Any]) -> RunResult:
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        ctx_path, result_path = Path(tmp) / "context.json", Path(tmp) / "result.json"
        payload = json.dumps({**context, "config": config.model_dump(), "result_path": str(result_path)})
        ctx_path.write_text(payload)
        cmd = command(config, ctx_path)
        err_path = Path(tmp) / "stderr.txt"
        with open(err_path, "w") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1", CONTEXT_VAR: payload})
            try:
                code = proc.wait()
            except BaseException:
                _kill_group(proc)
                raise
            finally:
                _kill_group(proc)  # ranks that outlived a failed peer
        if code != 0 or not result_path.exists():
            stderr = err_path.read_text()
            raise LaunchError(f"{config.devices}-process run exited with code {code}: {_root_error(stderr)}")
        data = json.loads(result_path.read_text())
    return RunResult(**data)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


# The final line of a Python traceback: "pkg.module.SomeError: message" (or a bare exception name).
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b(:.*)?$")
LAUNCHER_ERRORS = ("ChildFailedError", "SignalException")  # torchrun's summary, not the cause


def _root_error(stderr: str) -> str:
    """The most telling line of a process group's stderr: the last exception raised in a rank
    (torchrun's own ChildFailedError summary only says that a rank failed), else the last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    causes = [line for line in lines if EXCEPTION_LINE.match(line) and not any(e in line for e in LAUNCHER_ERRORS)]
    if causes:
        return causes[-1][:500]
    tail = [line for line in lines if not line.startswith(("File ", "raise ", "[", "="))]
    return (tail or lines or ["no output"])[-1][:500]
