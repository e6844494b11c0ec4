"""The one seam: `fit(RunConfig, reporter=None) -> RunResult`.

CLI, Optuna trials, evaluation seeds, perf and tests all train through this function. It builds
data, model and optimizer from the registries, trains with a Lightning Trainer stripped of
per-step work (no logger, progress bar, checkpoint, validation loop, callback or profiler),
trains for the config's budget (epochs, optimizer steps, samples or training seconds; see
bench/spec/budget.py), evaluates whole splits at every evaluation point of that budget (once per
epoch by default) and hands each point's metrics to the reporter, which may stop the run (pruning).
A budget other than epochs is watched from the module's batch-end hook: one comparison of a
counter with the next mark per batch (plus a clock read for seconds); evaluation time is kept out
of the training time that a seconds budget and `train_time_s` count. The optimizer's entry says
how it must be driven: full batch (BGD, L-BFGS), with a closure that re-evaluates the loss
(L-BFGS), or switched between train and eval mode around every evaluation (schedule-free optimizers).
A non-finite loss ends the run as 'diverged' with the reason recorded; it never raises.
"""

from __future__ import annotations

import contextlib
import functools
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
from lightning_fabric.utilities import registry as _lightning_registry
from pytorch_lightning.loops.training_epoch_loop import _TrainingEpochLoop
from pytorch_lightning.plugins.precision import Precision
from pytorch_lightning.profilers import PassThroughProfiler
from pytorch_lightning.strategies import SingleDeviceStrategy
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.model_helpers import is_overridden

from bench.data import load_dataset
from bench.data.batches import TensorBatches
from bench.data.bundle import DataBundle, Split
from bench.models.base import BenchModule, SupervisedModule
from bench.optim import regularization, schedules, torch_optimizers
from bench.registry import OptimizerInfo
from bench.routing import Routed
from bench.spec.budget import Budget
from bench.spec.config import RunConfig, direction_of

# Precisions that convert the whole model (not autocast): the data must be in the same dtype.
TRUE_DTYPES = {"64-true": torch.float64, "16-true": torch.float16, "bf16-true": torch.bfloat16}

# Called at every evaluation point with (point, metrics): point k = whole evaluation intervals of the
# budget spent (the epoch with the default cadence; bench/spec/budget.py); a returned string stops
# the run as 'pruned'.
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
# Every Trainer looks up the entry points of external callback factories (group
# `pytorch_lightning.callbacks_factory`), a scan of every installed distribution: ~20 ms per fit,
# ~5% of a 30-epoch digits MLP trial. The installed set does not change during a run, so the lookup is
# made once per process; the factories found (usually none) still build new callbacks per Trainer.
if callable(getattr(_lightning_registry, "entry_points", None)):
    _lightning_registry.entry_points = functools.lru_cache(maxsize=None)(_lightning_registry.entry_points)


@dataclass
class RunResult:
    """Outcome of one run; `history` holds one metrics dict per evaluation point (per epoch by default).
    The four budget counters sit side by side: epochs, steps, samples, train_time_s."""

    status: Status
    reason: str
    history: list[dict[str, float]]
    final: dict[str, float]  # last point's metrics, plus test/* when config.evaluate_test
    epochs: float  # passes over the training set (fractional when a run stops within an epoch)
    steps: int  # optimizer steps
    samples: int  # training examples seen (for a closure optimizer: every re-evaluation counts)
    train_time_s: float  # training time, evaluation excluded (what a seconds budget counts)
    wall_time_s: float  # the whole fit: set-up, training, evaluations
    device: str
    objective: float | None = None  # final value of config.objective (None unless finite)
    extra: dict = field(default_factory=dict)

    @property
    def epochs_run(self) -> int | float:
        """`epochs` as the `epochs_run` tag shows it: a whole number of epochs as an integer ("3", as
        before budgets could stop within an epoch, so `tags.epochs_run = '3'` still finds it)."""
        return int(self.epochs) if float(self.epochs).is_integer() else round(self.epochs, 4)


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
    budget = run.budget
    # lr schedules follow the budget: progress = the budget's counter / its value (steps per epoch
    # are fixed, so an epochs budget keeps the exact step / total_steps of LambdaLR)
    total_steps = int(budget.value) * math.ceil(len(batches) / batches.accumulate) if budget.kind == "epochs" else 1
    module = build_module(config, data, routed, run, total_steps)
    trainer = build_trainer(config, device, module, run.regularizers, batches.accumulate)
    use_lean_loop(trainer, module, batches)
    run.watch(trainer, module, batches.accumulate)
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
        scheduler = schedules.lambda_scheduler(optimizer, multiplier, total_steps, run.progress(module))
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
    module.after_epoch = run.epoch_end  # epochs budget: metrics, divergence, reporter at its points
    module.before_training = run.start_clock
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
        strategy=config.strategy, precision=config.precision,
        # an epochs budget is Lightning's max_epochs; the others are watched per batch (_Run.watch),
        # steps also by max_steps (one more guard, at no cost)
        max_epochs=config.epochs if config.epochs is not None else -1,
        max_steps=config.steps if config.steps is not None else -1,
        # Lightning refuses accumulate_grad_batches under manual optimization (the base step under
        # fit, the GAN); such models accumulate full-batch chunks themselves (batches.accumulate).
        accumulate_grad_batches=accumulate if module.automatic_optimization else 1,
        logger=False, enable_checkpointing=False, enable_progress_bar=config.progress_bar,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, profiler=_NoProfiler(),
        **trainer_kwargs,
    )


def use_lean_loop(trainer: pl.Trainer, module: BenchModule, batches: TensorBatches) -> None:
    """Train with `_LeanEpochLoop` where it runs exactly what Lightning's epoch loop would: the
    base training step (which steps its optimizer itself) in one process at full precision, with no
    callback, no batch hook of the module's own, batches already on the device and no validation
    loop. Everything else (DDP, mixed or 16/64-bit precision, the progress bar, the GAN's own
    step) keeps Lightning's loop."""
    hooks = ("on_train_batch_start", "on_before_batch_transfer", "on_after_batch_transfer")
    if (
        module._steps_itself and type(trainer.strategy) is SingleDeviceStrategy
        and type(trainer.precision_plugin) is Precision and not trainer.callbacks
        and trainer.accumulate_grad_batches == 1 and trainer.limit_val_batches == 0
        and not any(is_overridden(hook, module) for hook in hooks)
        and type(module).transfer_batch_to_device is BenchModule.transfer_batch_to_device
        and batches.x.device == batches.y.device == trainer.strategy.root_device
    ):
        loop = trainer.fit_loop.epoch_loop
        trainer.fit_loop.epoch_loop = _LeanEpochLoop(trainer, min_steps=loop.min_steps, max_steps=loop.max_steps)


class _LeanEpochLoop(_TrainingEpochLoop):
    """Lightning's training epoch loop without the per-batch work that does nothing in the setting
    `use_lean_loop` admits (~0.2 ms of a ~0.9 ms digits MLP step). Per batch it keeps: the fetch, the
    batch progress counters (batch_idx, the epoch's end, restarts), the training step (which counts
    the optimizer step in trainer.global_step), the module's on_train_batch_end (a budget's watch),
    trainer.should_stop, and the SIGTERM check. It leaves out: the batch conversion and transfer
    hooks (full precision, no batch hooks, batches already on the device), the on_train_batch_start
    hooks (none overridden, no callbacks), the logger connector (no logger; the base step logs
    nothing), the training-step signature inspection and the manual-optimization loop around the step
    (its only effect, counting the optimizer step, is done by the step itself: BenchModule._optimizer_step),
    the lr-scheduler update (Lightning steps none under manual optimization: the training step does),
    the validation check (no validation loop) and the loggers' save (no loggers)."""

    def advance(self, data_fetcher: Any) -> None:
        batch, _, _ = next(data_fetcher)
        progress = self.batch_progress
        batch_idx = progress.current.ready  # self.batch_idx + 1, as Lightning numbers it
        progress.is_last_batch = data_fetcher.done
        progress.increment_ready()
        progress.increment_started()
        module = self.trainer.lightning_module
        module.training_step(batch, batch_idx)  # manual optimization: its output (None) is not used
        progress.increment_processed()
        module.on_train_batch_end({}, batch, batch_idx)  # {}: what Lightning passes for a step returning None
        progress.increment_completed()

    def on_advance_end(self, data_fetcher: Any) -> None:
        self._batches_that_stepped += 1  # accumulate_grad_batches == 1: every batch "steps" for loggers
        if not self._is_training_done and self.trainer.received_sigterm:
            raise SIGTERMException

    # The fetch's profiler calls (an f-string and a no-op call each, twice per batch) are left out:
    # fit's profiler is _NoProfiler.
    def _on_before_fetch(self) -> None:
        pass

    def _on_after_fetch(self) -> None:
        pass


class _NoProfiler(PassThroughProfiler):
    """Lightning wraps every hook call (~15 per step) in `profiler.profile(name)`; the default
    PassThroughProfiler still builds a generator context manager for each, this one builds none."""

    _NULL = contextlib.nullcontext()

    def profile(self, action_name: str) -> contextlib.AbstractContextManager:
        return self._NULL


@dataclass
class _Run:
    """What one run accumulates: metrics per evaluation point, its optimizers and schedulers, its
    budget's counters and clock, its outcome."""

    config: RunConfig
    reporter: Reporter | None
    val: Split
    regularizers: list[regularization.Regularizer]
    history: list[dict[str, float]] = field(default_factory=list)
    status: Status = "completed"
    reason: str = ""
    start: float = field(default_factory=time.perf_counter)
    optimizers: list[torch.optim.Optimizer] = field(default_factory=list)
    # (multiplier, scheduler) per optimizer: run-dependent schedules (plateau) see each point's objective
    schedulers: list[tuple] = field(default_factory=list)
    epochs_done: int = 0
    # perf_counter() at the start of training, moved later by each evaluation's duration: now minus
    # this is the training time (evaluation excluded)
    clock_zero: float = 0.0
    mark: float = math.inf  # the counter's value at the next evaluation point or the end of the budget
    point: int = 0  # the last evaluation point (k of bench/spec/budget.py)
    stopped: bool = False

    def __post_init__(self) -> None:
        self.budget: Budget = self.config.budget

    @property
    def stopper(self) -> regularization.EarlyStopping | None:
        return next((r for r in self.regularizers if isinstance(r, regularization.EarlyStopping)), None)

    def start_clock(self) -> None:
        self.clock_zero = time.perf_counter()
        self.mark = min(self.budget.eval_every, self.budget.value)

    def train_time(self) -> float:
        return time.perf_counter() - self.clock_zero

    def progress(self, module: BenchModule) -> Callable[[], float] | None:
        """Schedule progress for budgets other than epochs: the budget's counter / its value."""
        b = self.budget
        if b.kind == "steps":  # global_step counts every optimizer's steps (the GAN's two)
            return lambda: module.trainer.global_step / b.value
        if b.kind == "samples":
            return lambda: module.samples_seen * module.trainer.world_size / b.value
        if b.kind == "seconds":
            return lambda: self.train_time() / b.value if self.clock_zero else 0.0  # built before the clock starts
        return None

    def watch(self, trainer: pl.Trainer, module: BenchModule, accumulate: int) -> None:
        """Install the batch-end check of a steps / samples / seconds budget: one comparison with
        the next mark per batch; at a step boundary past it, evaluate (and stop at the budget's end).
        Under DDP the ranks' samples and clocks differ, so the decision is reduced (max) per step."""
        kind = self.budget.kind
        if kind == "epochs":
            return
        world = trainer.world_size

        def boundary(batch_idx: int) -> bool:  # chunks accumulated into one step (BGD) end here
            return accumulate == 1 or (batch_idx + 1) % accumulate == 0 or batch_idx + 1 == trainer.num_training_batches

        if kind == "steps":  # identical on every rank; global_step only moves at a step boundary
            def check(outputs: Any, batch: Any, batch_idx: int) -> None:
                if trainer.global_step >= self.mark:
                    self.at_mark(trainer, module, batch_idx, trainer.global_step)
        elif world == 1 and kind == "samples":
            def check(outputs: Any, batch: Any, batch_idx: int) -> None:
                if module.samples_seen >= self.mark and boundary(batch_idx):
                    self.at_mark(trainer, module, batch_idx, module.samples_seen)
        elif world == 1:
            def check(outputs: Any, batch: Any, batch_idx: int) -> None:
                if time.perf_counter() - self.clock_zero >= self.mark and boundary(batch_idx):
                    self.at_mark(trainer, module, batch_idx, self.train_time())
        else:
            def counter() -> float:
                return module.samples_seen * world if kind == "samples" else self.train_time()

            def check(outputs: Any, batch: Any, batch_idx: int) -> None:
                if not boundary(batch_idx):
                    return
                due = torch.tensor(float(counter() >= self.mark))
                if float(trainer.strategy.reduce(due, reduce_op="max")) > 0:
                    value = float(trainer.strategy.reduce(torch.tensor(counter()), reduce_op="max"))
                    self.at_mark(trainer, module, batch_idx, value)

        module.on_train_batch_end = check  # an instance attribute: Lightning calls it as the module's hook

    def at_mark(self, trainer: pl.Trainer, module: BenchModule, batch_idx: int, counter: float) -> None:
        b = self.budget
        end = counter >= b.value
        k = b.points if end else max(math.floor(counter / b.eval_every + 1e-9), self.point + 1)
        epochs = trainer.current_epoch + (batch_idx + 1) / trainer.num_training_batches
        self.evaluate(trainer, module, k, epochs)
        if end and not self.stopped:
            self.stopped = trainer.should_stop = True
        if not self.stopped:
            self.mark = min((math.floor(counter / b.eval_every + 1e-9) + 1) * b.eval_every, b.value)

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
        """An epoch ended (or a run stopped within one): an epochs budget's evaluation point when due."""
        if self.stopped:
            return
        self.epochs_done += 1
        b = self.budget
        if b.kind == "epochs" and (self.epochs_done % b.eval_every == 0 or self.epochs_done >= b.value):
            self.evaluate(trainer, module, math.ceil(self.epochs_done / b.eval_every - 1e-9), self.epochs_done,
                          epoch_time)

    def evaluate(self, trainer: pl.Trainer, module: BenchModule, k: int, epochs: float,
                 epoch_time: float | None = None) -> None:
        """Evaluation point k: metrics, divergence, reporter, schedules, early stopping. Its time
        (the reporter's included) is not training time."""
        started = time.perf_counter()
        train_time = started - self.clock_zero
        self.point = k
        with self.evaluating():  # the stopper's snapshot, too, is of the evaluated weights
            self._evaluate(trainer, module, k, epochs, epoch_time, train_time)
        self.clock_zero += time.perf_counter() - started

    def _stop(self, trainer: pl.Trainer, status: Status, reason: str) -> None:
        self.status, self.reason = status, reason
        self.stopped = trainer.should_stop = True

    def _evaluate(self, trainer: pl.Trainer, module: BenchModule, k: int, epochs: float,
                  epoch_time: float | None, train_time: float) -> None:
        # Under DDP every rank evaluates the whole (identical) val split; training loss and samples
        # are per rank and are reduced here (mean of the ranks' means; sum of samples).
        strategy = trainer.strategy
        metrics = {"train/loss": module.pop_train_loss()}
        if trainer.world_size > 1:
            metrics["train/loss"] = float(strategy.reduce(torch.tensor(metrics["train/loss"]), reduce_op="mean"))
        metrics.update({f"val/{k_}": v for k_, v in module.evaluate(self.val).items()})
        metrics["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        if epoch_time is not None:
            metrics["epoch_time_s"] = epoch_time
        metrics["epoch"] = float(epochs)
        metrics["steps"] = float(trainer.global_step)
        metrics["samples"] = float(strategy.reduce(torch.tensor(float(module.samples_seen)), reduce_op="sum")
                                   if trainer.world_size > 1 else module.samples_seen)
        metrics["train_time_s"] = train_time
        metrics["wall_time_s"] = time.perf_counter() - self.start
        self.history.append(metrics)
        where = f"epoch {epochs:g}" if self.budget.kind == "epochs" else f"step {trainer.global_step}"
        bad = [key for key in ("train/loss", "val/loss") if not math.isfinite(metrics[key])]
        if bad:
            self._stop(trainer, "diverged", f"{bad[0]}={metrics[bad[0]]} at {where}")
            return
        # Only rank 0 has a reporter (it talks to the stores); its decision reaches every rank.
        reason = self.reporter(k, metrics) if self.reporter is not None else None
        if trainer.world_size > 1:
            reason = strategy.broadcast(reason, src=0)
        if reason:
            self._stop(trainer, "pruned", reason)
            return
        direction = direction_of(self.config.objective)
        value = metrics.get(self.config.objective)
        for multiplier, scheduler in self.schedulers:
            schedules.epoch_end(multiplier, scheduler, value, direction)
        if self.stopper is not None and (reason := self.stopper.update(len(self.history), value, direction, module)):
            self._stop(trainer, "completed", reason)  # a regular end chosen by the run itself

    def result(self, trainer: pl.Trainer, module: BenchModule, test: Split, device: torch.device) -> RunResult:
        config, wall = self.config, time.perf_counter() - self.start
        final = dict(self.history[-1]) if self.history else {}
        b = self.budget
        extra: dict = {"budget": f"{b.kind}={b.value:g}", "eval_every": b.eval_every, "world_size": trainer.world_size,
                       "strategy": config.strategy, "precision": config.precision}
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
        last = self.history[-1] if self.history else {}
        return RunResult(
            status=self.status, reason=self.reason, history=self.history, final=final,
            epochs=last.get("epoch", float(self.epochs_done)), steps=trainer.global_step,
            samples=int(last.get("samples", module.samples_seen)), train_time_s=last.get("train_time_s", 0.0),
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
