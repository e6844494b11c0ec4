"""One process of a multi-process trial: `python -m bench.worker CONTEXT.json`.

The launcher (bench.tuning.executor) starts this module under `torch.distributed.run` (ddp,
fsdp, deepspeed) or alone (ddp_spawn: Lightning spawns the ranks). Every rank trains; only global
rank 0 talks to the stores: it logs per-epoch metrics to the MLflow run the launcher created,
reports to the Optuna trial (pruning), and writes the RunResult as JSON for the launcher. The
pruning decision is broadcast from rank 0 inside `fit`, so every rank stops at the same epoch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
from pathlib import Path


def main(context_path: str) -> int:
    if context_path.startswith("env:"):  # started by srun on several nodes (bench.tuning.executor)
        ctx = json.loads(os.environ[context_path.removeprefix("env:")])
        # Lightning takes the ranks from Slurm's variables; rank-0 duties and the GPU choice here
        # read the torchrun-style ones
        for name, slurm in (("RANK", "SLURM_PROCID"), ("LOCAL_RANK", "SLURM_LOCALID"), ("WORLD_SIZE", "SLURM_NTASKS")):
            os.environ.setdefault(name, os.environ[slurm])
    else:
        ctx = json.loads(Path(context_path).read_text())
    devices = ctx["config"]["devices"]
    if context_path.startswith("env:") and ctx["config"]["strategy"] == "ddp_spawn":
        return _train(ctx, strategy="ddp")  # srun has started every rank already
    if ctx["config"]["strategy"] == "ddp_spawn" and "LOCAL_RANK" not in os.environ:
        # Ranks started by torch.multiprocessing.spawn, each running Lightning's DDP. (Lightning's own
        # DDPSpawnStrategy would pickle the trainer with its callbacks and reporters into each rank.)
        import torch.multiprocessing as mp

        mp.spawn(_spawned_rank, args=(context_path, devices, _free_port()), nprocs=devices, join=True)
        return 0
    return _train(ctx)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawned_rank(local_rank: int, context_path: str, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NODE_RANK="0",
                      RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world))
    _train(json.loads(Path(context_path).read_text()), strategy="ddp")


def _train(ctx: dict, strategy: str | None = None) -> int:
    import optuna
    from mlflow import MlflowClient

    from bench.spec import RunConfig
    from bench.tracking import RunLogger
    from bench.train import fit
    from bench.tuning import samplers
    from bench.tuning.storage import open_storage
    from bench.tuning.study import trial_reporter

    config = RunConfig.model_validate(ctx["config"])
    if strategy is not None:
        config = config.model_copy(update={"strategy": strategy})
    rank_zero = int(os.environ.get("RANK", "0")) == 0
    reporter, logger = None, None
    if rank_zero:
        if ctx.get("run_id"):
            logger = RunLogger(MlflowClient(ctx["tracking_uri"]), ctx["run_id"])
        trial = None
        if ctx.get("trial_id") is not None:
            pruner, _ = samplers.build(samplers.PRUNERS, ctx["pruner"], **ctx["pruner_args"])  # the arm's
            study = optuna.load_study(study_name=ctx["study_name"], storage=open_storage(ctx["storage"]),
                                      pruner=pruner)
            trial = optuna.Trial(study, ctx["trial_id"])
        reporter = trial_reporter(logger, trial, config.objective, ctx.get("pruner", ""))
    result = fit(config, reporter=reporter, launched=True)
    result.extra["strategy"] = ctx["config"]["strategy"]  # as asked (ddp_spawn trains with DDP ranks)
    if rank_zero:
        if logger is not None:
            logger.flush()  # the launcher records the final tags and ends the run
        Path(ctx["result_path"]).write_text(json.dumps(dataclasses.asdict(result), default=str))
    _close_process_group()
    return 0


def _close_process_group() -> None:
    """Tear the process group down before the interpreter exits. Left to interpreter shutdown,
    gloo's threads can still be running when their C++ objects are destroyed, and the rank dies
    with SIGABRT ("terminate called without an active exception") after a successful run."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # no rank tears the group down while a peer still talks to it
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
