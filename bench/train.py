"""The one seam: `fit(RunConfig, reporter=None) -> RunResult`.

CLI, Optuna trials, evaluation seeds, perf and tests all train through this function. It builds
data, model and optimizer from the registries, trains with a Lightning Trainer stripped of
per-step work (no logger, progress bar, checkpoint, validation loop, callback or profiler),
evaluates whole splits once per epoch and hands each epoch's metrics to the reporter, which may
stop the run (pruning).
A non-finite loss ends the run as 'diverged' with the reason recorded; it never raises.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.profilers import PassThroughProfiler

from bench.data import load_dataset
from bench.data.batches import TensorBatches
from bench.models import MODELS
from bench.models.base import BenchModule
from bench.optim import OPTIMIZERS, SCHEDULES, regularization, schedules
from bench.optim.schedules import lambda_scheduler
from bench.spec import RunConfig, direction_of, hparams_for

# Precisions that convert the whole model (not autocast): the data must be in the same dtype.
TRUE_DTYPES = {"64-true": torch.float64, "16-true": torch.float16, "bf16-true": torch.bfloat16}

# Called after every epoch with (epoch, metrics); a returned string stops the run as 'pruned'.
Reporter = Callable[[int, dict[str, float]], "str | None"]
Status = Literal["completed", "pruned", "diverged"]

for _name in ("pytorch_lightning", "lightning_fabric"):
    logging.getLogger(_name).setLevel(logging.ERROR)  # "GPU available: False" etc. per trial
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
# Lightning's own use of a torch API that torch deprecated (pytorch_lightning/utilities/_pytree.py),
# printed on the first fits of every process: nothing a user of this suite can change.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
# On a machine with Slurm installed Lightning suggests `srun` for every trial; the suite places its
# processes itself (trials never train under a Lightning Slurm environment).
warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not used")


@dataclass
class RunResult:
    """Outcome of one run; `history` holds one metrics dict per finished epoch."""

    status: Status
    reason: str
    history: list[dict[str, float]]
    final: dict[str, float]  # last epoch's metrics, plus test/* when config.evaluate_test
    epochs: int
    steps: int  # optimizer steps
    samples: int  # training examples seen
    wall_time_s: float
    device: str
    objective: float | None = None  # final value of config.objective (None unless finite)
    extra: dict = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(accelerator: str) -> torch.device:
    """Where data lives: each rank of a torchrun-launched group uses its own local GPU."""
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator in ("gpu", "cuda"):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(accelerator)


def split_params(config: RunConfig) -> tuple[dict, dict, dict, dict]:
    """Route the flat resolved params to (model, optimizer, schedule, training) owners."""
    groups = (
        {hp.name for hp in MODELS.get(config.model).meta["hparams"]},
        {hp.name for hp in OPTIMIZERS.get(config.optimizer).meta["hparams"]},
        {hp.name for hp in SCHEDULES.get(config.schedule).meta["hparams"]},
    )
    # Regularizers' own knobs (l1_strength, ...) land in the training group; the ones they borrow
    # (weight_decay, dropout) stay with their owners.
    declared = hparams_for(config.model, config.optimizer, config.schedule, config.regularizers)
    params = {**{k: hp.default for k, hp in declared.items()}, **config.params}
    model_p, optim_p, sched_p = ({k: params[k] for k in g} for g in groups)
    train_p = {k: v for k, v in params.items() if not any(k in g for g in groups)}
    return model_p, optim_p, sched_p, train_p


class _NoProfiler(PassThroughProfiler):
    """Lightning wraps every hook call (~15 per step) in `profiler.profile(name)`; the default
    PassThroughProfiler still builds a generator context manager for each, this one builds none."""

    _NULL = contextlib.nullcontext()

    def profile(self, action_name: str) -> contextlib.AbstractContextManager:
        return self._NULL


@dataclass
class _Run:
    config: RunConfig
    reporter: Reporter | None
    val: object
    history: list[dict[str, float]] = field(default_factory=list)
    status: Status = "completed"
    reason: str = ""
    start: float = field(default_factory=time.perf_counter)
    # (multiplier, scheduler) per optimizer: run-dependent schedules (plateau) see each epoch's objective
    schedulers: list[tuple] = field(default_factory=list)
    stopper: regularization.EarlyStopping | None = None

    def epoch_end(self, trainer: pl.Trainer, module: BenchModule, epoch_time: float) -> None:
        epoch = len(self.history) + 1
        # Under DDP every rank evaluates the whole (identical) val split; training loss and samples
        # are per rank and are reduced here (mean of the ranks' means; sum of samples).
        strategy = trainer.strategy
        metrics = {"train/loss": module.pop_train_loss()}
        if trainer.world_size > 1:
            metrics["train/loss"] = float(strategy.reduce(torch.tensor(metrics["train/loss"]), reduce_op="mean"))
        metrics.update({f"val/{k}": v for k, v in module.evaluate(self.val).items()})
        metrics["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        metrics["epoch_time_s"] = epoch_time
        metrics["steps"] = float(trainer.global_step)
        metrics["samples"] = float(strategy.reduce(torch.tensor(float(module.samples_seen)), reduce_op="sum")
                                   if trainer.world_size > 1 else module.samples_seen)
        metrics["wall_time_s"] = time.perf_counter() - self.start
        self.history.append(metrics)
        bad = [k for k in ("train/loss", "val/loss") if not math.isfinite(metrics[k])]
        if bad:
            self.status, self.reason = "diverged", f"{bad[0]}={metrics[bad[0]]} at epoch {epoch}"
            trainer.should_stop = True
            return
        # Only rank 0 has a reporter (it talks to the stores); its decision reaches every rank.
        reason = self.reporter(epoch, metrics) if self.reporter is not None else None
        if trainer.world_size > 1:
            reason = strategy.broadcast(reason, src=0)
        if reason:
            self.status, self.reason = "pruned", reason
            trainer.should_stop = True
        else:
            direction = direction_of(self.config.objective)
            value = metrics.get(self.config.objective)
            for multiplier, scheduler in self.schedulers:
                schedules.epoch_end(multiplier, scheduler, value, direction)
            if self.stopper is not None and (reason := self.stopper.update(epoch, value, direction, module)):
                self.reason = reason  # still 'completed': a regular end chosen by the run itself
                trainer.should_stop = True


def _fit_interruptible(trainer: pl.Trainer, module: BenchModule, batches: TensorBatches) -> None:
    """trainer.fit, with an interrupt given back to the caller as KeyboardInterrupt: Lightning turns
    Ctrl-C into sys.exit(1) (the caller could not tell it from a crash and would leave its trial
    RUNNING) and ignores SIGINT from then on."""
    sigint = signal.getsignal(signal.SIGINT)
    try:
        trainer.fit(module, train_dataloaders=batches)
    except SystemExit as exit_:
        if isinstance(exit_.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise
    finally:
        if sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, sigint)


def fit(config: RunConfig, reporter: Reporter | None = None, *, launched: bool = False) -> RunResult:
    """Train one configuration; never raises for divergence (status 'diverged' instead).

    A config with several devices/nodes trains in its own process group: call it through
    `bench.tuning.executor.execute`, which starts `bench.worker` (launched=True) on every rank.
    """
    if config.world_size > 1 and not launched:
        raise ValueError(f"devices={config.devices} x num_nodes={config.num_nodes} trains in its own process "
                         "group: use bench.tuning.executor.execute (Lightning would re-run this script per rank)")
    if launched and config.world_size > 1:  # ranks share this machine's cores: no oversubscription
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // config.devices))
    seed_everything(config.seed)
    device = resolve_device(config.accelerator)
    data = load_dataset(config.dataset, config.data_seed, **config.data_args)
    data = data.to(device, TRUE_DTYPES.get(config.precision))
    model_p, optim_p, sched_p, train_p = split_params(config)
    full_batch = OPTIMIZERS.get(config.optimizer).meta["full_batch"]

    n_train = len(data.train)
    if full_batch:  # exact gradient of the whole set, in chunks under the memory cap
        chunk = min(n_train, train_p["bgd_max_chunk"])
        accumulate = math.ceil(n_train / chunk)
        batches = TensorBatches(data.train.x, data.train.y, chunk, shuffle=False,
                                seed=config.seed, accumulate=accumulate)
    else:
        accumulate = 1
        batches = TensorBatches(data.train.x, data.train.y, train_p["batch_size"], shuffle=True,
                                seed=config.seed)
    total_steps = config.epochs * math.ceil(len(batches) / accumulate)
    regs = regularization.build(config.regularizers, train_p)
    regularization.check_data(config.regularizers, data.input_shape, config.dataset)
    run = _Run(config, reporter, data.val)
    run.stopper = next((r for r in regs if isinstance(r, regularization.EarlyStopping)), None)

    def configure_optim(module: BenchModule, params=None, lr_scale: float = 1.0) -> dict:
        """The arm's optimizer + schedule over `params` (default: all of the module's).
        Models with several optimizers (the GAN) call this once per parameter group."""
        kwargs = {**optim_p, "lr": optim_p["lr"] * lr_scale}
        optimizer = OPTIMIZERS.get(config.optimizer).factory(
            module.parameters() if params is None else params, **kwargs)
        for reg in regs:
            reg.wrap_optimizer(optimizer)  # before the scheduler, which wraps optimizer.step too
        multiplier = SCHEDULES.get(config.schedule).factory(**sched_p)
        scheduler = lambda_scheduler(optimizer, multiplier, total_steps)
        run.schedulers.append((multiplier, scheduler))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    module = MODELS.get(config.model).factory(data, configure_optim, **model_p)
    for reg in regs:
        reg.attach(module)
        if regularization.overrides(reg, "penalty"):
            module.loss_penalties.append(reg.penalty)
        if regularization.overrides(reg, "transform"):
            module.batch_transforms.append(reg.transform)
    trainer_kwargs = {k: v for reg in regs for k, v in reg.trainer_kwargs().items()}
    module.after_epoch = run.epoch_end  # metrics, divergence, reporter (once per epoch)
    if type(module).training_step is BenchModule.training_step:
        module.optimize_in_training_step()  # the base step runs its optimizer itself (cheaper per step)
    if not module.automatic_optimization:
        # Lightning refuses its own clipping under manual optimization (the base step under fit, the
        # GAN): the grad_clip regularizer's norm is applied in the module's optimizer-step hook.
        trainer_kwargs.pop("gradient_clip_algorithm", None)
        module.clip_gradient_norm(trainer_kwargs.pop("gradient_clip_val", None))
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        precision=config.precision,
        max_epochs=config.epochs,
        # Lightning refuses accumulate_grad_batches under manual optimization (the base step under
        # fit, the GAN); such models accumulate full-batch chunks themselves (batches.accumulate).
        accumulate_grad_batches=accumulate if module.automatic_optimization else 1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=config.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        profiler=_NoProfiler(),
        **trainer_kwargs,
    )
    if callable(handler := signal.getsignal(signal.SIGTERM)):
        module.own_sigterm = handler
    _fit_interruptible(trainer, module, batches)
    wall = time.perf_counter() - run.start

    final = dict(run.history[-1]) if run.history else {}
    extra: dict = {"world_size": trainer.world_size, "strategy": config.strategy, "precision": config.precision}
    if not full_batch:
        # The global batch is fixed (each rank takes 1/world of it), so lr needs no scaling rule.
        extra.update(effective_batch_size=train_p["batch_size"], lr_scaling="none (global batch fixed)")
    if run.stopper is not None and run.status != "diverged" and (best := run.stopper.restore(module)):
        # The returned model is the best epoch's: report its metrics; the spent epochs, steps,
        # samples and time stay the whole run's (early stopping is not free).
        final.update({k: v for k, v in run.history[best - 1].items() if k.startswith(("val/", "train/"))})
        final["best_epoch"] = float(best)
        extra.update(best_epoch=best, early_stopped=run.stopper.stopped_epoch is not None)
    if config.evaluate_test and run.status != "diverged":
        final.update({f"test/{k}": v for k, v in module.evaluate(data.test).items()})
    value = final.get(config.objective) if run.status != "diverged" else None
    return RunResult(
        status=run.status,
        reason=run.reason,
        history=run.history,
        final=final,
        epochs=len(run.history),
        steps=trainer.global_step,
        samples=int(run.history[-1]["samples"]) if run.history else module.samples_seen,
        wall_time_s=wall,
        device=str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        objective=value if value is not None and math.isfinite(value) else None,
        extra=extra,
    )
