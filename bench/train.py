"""The one seam: `fit(RunConfig, reporter=None) -> RunResult`.

CLI, Optuna trials, evaluation seeds, perf and tests all train through this function. It builds
data, model and optimizer from the registries, trains with a Lightning Trainer stripped of
per-step work (no logger, progress bar, checkpoint, validation loop, callback or profiler),
evaluates whole splits once per epoch and hands each epoch's metrics to the reporter, which may
stop the run (pruning). The optimizer's entry says how it must be driven: full batch (BGD,
L-BFGS), with a closure that re-evaluates the loss (L-BFGS), or switched between train and eval
mode around every evaluation (schedule-free optimizers).
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
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.profilers import PassThroughProfiler

from bench.data import load_dataset
from bench.data.batches import TensorBatches
from bench.data.bundle import DataBundle, Split
from bench.models.base import BenchModule, SupervisedModule
from bench.optim import regularization, schedules, torch_optimizers
from bench.registry import OptimizerInfo
from bench.routing import Routed
from bench.spec.config import RunConfig, direction_of

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
    samples: int  # training examples seen (for a closure optimizer: every re-evaluation counts)
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
    owners = config.owners()
    routed = owners.split(config.params)
    regularization.check_data(owners.regularizers, data.input_shape, config.dataset)
    batches = make_batches(data.train, owners.optimizer, routed.training, config.seed)
    run = _Run(config, reporter, data.val, [info.load()(**kw) for info, kw in routed.regularizers])
    module = build_module(config, data, routed, run, config.epochs * math.ceil(len(batches) / batches.accumulate))
    trainer = build_trainer(config, device, module, run.regularizers, batches.accumulate)
    if callable(handler := signal.getsignal(signal.SIGTERM)):
        module.own_sigterm = handler  # a Slurm worker's grace-period handler survives Lightning's
    _fit_interruptible(trainer, module, batches)
    return run.result(trainer, module, data.test, device)


def make_batches(train: Split, optimizer: OptimizerInfo, training: dict[str, Any], seed: int) -> TensorBatches:
    """Mini-batches; or the exact full-set gradient as chunks under the memory cap, accumulated into
    one step (BGD); or, for a closure optimizer (which re-evaluates the loss chunk by chunk inside
    its step), the whole set as one batch per epoch."""
    n = len(train)
    if optimizer.closure:
        return TensorBatches(train.x, train.y, n, shuffle=False, seed=seed)
    if optimizer.full_batch:
        chunk = min(n, training["bgd_max_chunk"])
        return TensorBatches(train.x, train.y, chunk, shuffle=False, seed=seed, accumulate=math.ceil(n / chunk))
    return TensorBatches(train.x, train.y, training["batch_size"], shuffle=True, seed=seed)


def build_module(config: RunConfig, data: DataBundle, routed: Routed, run: _Run, total_steps: int) -> BenchModule:
    """The model with the arm's optimizer and schedule injected and the regularizers' hooks installed."""
    owners = config.owners()

    def configure_optim(module: BenchModule, params=None, lr_scale: float = 1.0) -> dict:
        """The arm's optimizer + schedule over `params` (default: all of the module's).
        Models with several optimizers (the GAN) call this once per parameter group."""
        values = {**routed.optimizer, **({"lr": routed.optimizer["lr"] * lr_scale} if lr_scale != 1.0 else {})}
        optimizer = torch_optimizers.build(owners.optimizer, module.parameters() if params is None else params, values)
        for reg in run.regularizers:
            reg.wrap_optimizer(optimizer)  # before the scheduler, which wraps optimizer.step too
        if owners.optimizer.mode_switch:
            optimizer.train()  # schedule-free: training mode until the first evaluation
        multiplier = owners.schedule.load()(**routed.schedule)
        scheduler = schedules.lambda_scheduler(optimizer, multiplier, total_steps)
        run.optimizers.append(optimizer)
        run.schedulers.append((multiplier, scheduler))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    model = owners.model
    if model.network:  # a plain nn.Module: the suite adds the task's loss and metrics
        module = SupervisedModule(model.load()(data.input_shape, data.n_outputs, **routed.model), data, configure_optim)
    else:
        module = model.load()(data, configure_optim, **routed.model)
    module.batch_transforms += data.augmentations(config.seed)  # the dataset's own (CIFAR crop + flip), training only
    for reg in run.regularizers:
        reg.attach(module)
        if regularization.overrides(reg, "penalty"):
            module.loss_penalties.append(reg.penalty)
        if regularization.overrides(reg, "transform"):
            module.batch_transforms.append(reg.transform)
    module.after_epoch = run.epoch_end  # metrics, divergence, reporter (once per epoch)
    if type(module).training_step is BenchModule.training_step:
        # the base step runs its optimizer itself (cheaper per step); a closure optimizer gets its own step
        module.optimize_in_training_step(closure_chunk=routed.training["bgd_max_chunk"]
                                         if owners.optimizer.closure else None)
    elif owners.optimizer.closure:
        raise ValueError(f"{owners.optimizer.name} needs a closure, but model {model.name} steps its optimizers itself")
    return module


def build_trainer(config: RunConfig, device: torch.device, module: BenchModule,
                  regs: list[regularization.Regularizer], accumulate: int) -> pl.Trainer:
    trainer_kwargs = {k: v for reg in regs for k, v in reg.trainer_kwargs().items()}
    if not module.automatic_optimization:
        # Lightning refuses its own clipping under manual optimization (the base step under fit, the
        # GAN): the grad_clip regularizer's norm is applied in the module's optimizer-step hook.
        trainer_kwargs.pop("gradient_clip_algorithm", None)
        module.clip_gradient_norm(trainer_kwargs.pop("gradient_clip_val", None))
    return pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=config.devices, num_nodes=config.num_nodes,
        strategy=config.strategy, precision=config.precision, max_epochs=config.epochs,
        # Lightning refuses accumulate_grad_batches under manual optimization (the base step under
        # fit, the GAN); such models accumulate full-batch chunks themselves (batches.accumulate).
        accumulate_grad_batches=accumulate if module.automatic_optimization else 1,
        logger=False, enable_checkpointing=False, enable_progress_bar=config.progress_bar,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, profiler=_NoProfiler(),
        **trainer_kwargs,
    )


class _NoProfiler(PassThroughProfiler):
    """Lightning wraps every hook call (~15 per step) in `profiler.profile(name)`; the default
    PassThroughProfiler still builds a generator context manager for each, this one builds none."""

    _NULL = contextlib.nullcontext()

    def profile(self, action_name: str) -> contextlib.AbstractContextManager:
        return self._NULL


@dataclass
class _Run:
    """What one run accumulates: per-epoch metrics, its optimizers and schedulers, its outcome."""

    config: RunConfig
    reporter: Reporter | None
    val: Split
    regularizers: list[regularization.Regularizer]
    history: list[dict[str, float]] = field(default_factory=list)
    status: Status = "completed"
    reason: str = ""
    start: float = field(default_factory=time.perf_counter)
    optimizers: list[torch.optim.Optimizer] = field(default_factory=list)
    # (multiplier, scheduler) per optimizer: run-dependent schedules (plateau) see each epoch's objective
    schedulers: list[tuple] = field(default_factory=list)

    @property
    def stopper(self) -> regularization.EarlyStopping | None:
        return next((r for r in self.regularizers if isinstance(r, regularization.EarlyStopping)), None)

    @contextlib.contextmanager
    def evaluating(self) -> Any:
        """Schedule-free optimizers hold the weights to evaluate only in eval mode."""
        switch = self.config.owners().optimizer.mode_switch
        for optimizer in self.optimizers if switch else ():
            optimizer.eval()
        try:
            yield
        finally:
            for optimizer in self.optimizers if switch else ():
                optimizer.train()

    def epoch_end(self, trainer: pl.Trainer, module: BenchModule, epoch_time: float) -> None:
        with self.evaluating():  # the stopper's snapshot, too, is of the evaluated weights
            self._epoch_end(trainer, module, epoch_time)

    def _epoch_end(self, trainer: pl.Trainer, module: BenchModule, epoch_time: float) -> None:
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
            return
        direction = direction_of(self.config.objective)
        value = metrics.get(self.config.objective)
        for multiplier, scheduler in self.schedulers:
            schedules.epoch_end(multiplier, scheduler, value, direction)
        if self.stopper is not None and (reason := self.stopper.update(epoch, value, direction, module)):
            self.reason = reason  # still 'completed': a regular end chosen by the run itself
            trainer.should_stop = True

    def result(self, trainer: pl.Trainer, module: BenchModule, test: Split, device: torch.device) -> RunResult:
        config, wall = self.config, time.perf_counter() - self.start
        final = dict(self.history[-1]) if self.history else {}
        extra: dict = {"world_size": trainer.world_size, "strategy": config.strategy, "precision": config.precision}
        if not config.owners().optimizer.full_batch:
            # The global batch is fixed (each rank takes 1/world of it), so lr needs no scaling rule.
            extra.update(effective_batch_size=config.params["batch_size"], lr_scaling="none (global batch fixed)")
        with self.evaluating():
            if self.stopper is not None and self.status != "diverged" and (best := self.stopper.restore(module)):
                # The returned model is the best epoch's: report its metrics; the spent epochs, steps,
                # samples and time stay the whole run's (early stopping is not free).
                final.update({k: v for k, v in self.history[best - 1].items() if k.startswith(("val/", "train/"))})
                final["best_epoch"] = float(best)
                extra.update(best_epoch=best, early_stopped=self.stopper.stopped_epoch is not None)
            if config.evaluate_test and self.status != "diverged":
                final.update({f"test/{k}": v for k, v in module.evaluate(test).items()})
        value = final.get(config.objective) if self.status != "diverged" else None
        return RunResult(
            status=self.status, reason=self.reason, history=self.history, final=final, epochs=len(self.history),
            steps=trainer.global_step,
            samples=int(self.history[-1]["samples"]) if self.history else module.samples_seen,
            wall_time_s=wall, device=str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            objective=value if value is not None and math.isfinite(value) else None, extra=extra,
        )


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
