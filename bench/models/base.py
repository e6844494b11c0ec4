"""LightningModule base classes shared by the model zoo.

Models never pick their optimizer: `configure_optimizers` calls the builder that `train.fit`
injects (see bench/optim). Training loss is kept on-device and read once per epoch, and
evaluation is a plain no-grad pass over a whole split, so the per-step cost stays close to a bare
PyTorch loop (no `self.log` per step, no validation DataLoader).

Under `train.fit` the base training step also runs the optimizer and the lr scheduler itself
(`optimize_in_training_step`, Lightning manual optimization): Lightning's automatic loop (closure,
per-step hooks, scheduler bookkeeping) costs more per step than a digits MLP step. Otherwise the
module stays automatic: `training_step` returns the loss, as a plain Trainer or a direct call expects.
"""

from __future__ import annotations

import inspect
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.plugins.precision import Precision
from pytorch_lightning.strategies import SingleDeviceStrategy
from pytorch_lightning.utilities.model_helpers import is_overridden
from torch import nn

from bench import interrupt
from bench.data.bundle import DataBundle, Split

EVAL_CHUNK = 8192  # examples per forward pass during evaluation (bounds activation memory)


class BenchModule(pl.LightningModule):
    """Base: subclasses implement `training_loss(x, y)` and `evaluate(split)`."""

    def __init__(self, configure_optim: Callable[[BenchModule], Any] | None = None) -> None:
        super().__init__()
        self._configure_optim = configure_optim
        self._step_losses: list[tuple[torch.Tensor, int]] = []  # (mean data loss, examples) per batch
        self.samples_seen = 0
        self._epoch_start = 0.0
        # Set by train.fit: called after every epoch with (trainer, module, epoch seconds). A module
        # hook rather than a Callback: Lightning dispatches every callback ~5 times per step.
        self.after_epoch: Callable[[pl.Trainer, BenchModule, float], None] | None = None
        self.before_training: Callable[[], None] | None = None  # set by train.fit: starts the training clock
        # A budget other than epochs replaces `on_train_batch_end` on the instance (train._Run.watch).
        self._steps_itself = False  # see optimize_in_training_step
        self._gradient_clip_norm: float | None = None
        # A process that handles SIGTERM itself (a Slurm worker's grace period, bench.launch.preempt)
        # keeps its handler during fit: Lightning installs its own, which ends fit at the next batch.
        self.own_sigterm: Callable[..., Any] | None = None
        # Regularization hooks (filled by train.fit from bench/optim/regularization.py):
        self.loss_penalties: list[Callable[[nn.Module], torch.Tensor]] = []  # added to the training loss
        self.batch_transforms: list[Callable[[torch.Tensor], torch.Tensor]] = []  # training inputs only

    # Lightning sets `_current_fx_name` ~45 times per step and the sample count changes every step;
    # nn.Module.__setattr__ spends ~5 us per call on Parameter/Module/buffer checks that plain
    # attributes never need (measured: ~0.25 ms of a 1.2 ms digits step).
    _PLAIN_ATTRS = frozenset({"_current_fx_name", "_step_losses", "samples_seen"})

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._PLAIN_ATTRS:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # --- contract -------------------------------------------------------------------------
    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, split: Split) -> dict[str, float]:
        """Metrics on a whole split, keys without the split prefix (e.g. {'loss':..,'acc':..})."""
        raise NotImplementedError

    # --- Lightning hooks --------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        if self._configure_optim is None:
            raise RuntimeError("no optimizer builder was injected (train.fit injects one)")
        return self._configure_optim(self)

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor | None:
        x, y, weight = batch
        for transform in self.batch_transforms:
            x = transform(x)
        loss, n = self.training_loss(x, y), len(x)
        self._step_losses.append((loss.detach(), n))  # data loss, penalties excluded
        self.samples_seen += n
        for penalty in self.loss_penalties:
            # Full-batch chunks: the weights sum to 1 over a step, so the penalty counts once per step.
            loss = loss + penalty(self)
        if not self._steps_itself:  # Lightning divides by accumulate_grad_batches itself
            return loss * weight if weight != 1.0 else loss
        # Manual: one optimizer step per `accumulate` chunks (and at the end of the epoch), exactly
        # where Lightning's automatic loop steps; the batch weights assume the division by it.
        scale = weight / self._accumulate
        loss = loss * scale if scale != 1.0 else loss
        if self._direct_backward:
            loss.backward()
        else:
            self.manual_backward(loss)  # precision scaling, DDP gradient sync
        if (batch_idx + 1) % self._accumulate == 0 or batch_idx + 1 == self.trainer.num_training_batches:
            self._optimizer_step()
            # The wrapped optimizer's own zero_grad: Lightning's wrapper subclasses the optimizer
            # class, so its zero_grad would fetch every attribute through __getattr__.
            self._optimizer.optimizer.zero_grad(set_to_none=True)
            if self._scheduler is not None:
                self._scheduler.step()  # Lightning steps no scheduler under manual optimization
        return None

    def _optimizer_step(self, closure: Callable[[], Any] | None = None) -> Any:
        """The step of the module's optimizer: through Lightning (precision, strategy, global_step),
        or, in one process at full precision with no callbacks, what that chain (LightningOptimizer ->
        Strategy -> Precision, ~30 us a digits step) comes down to there: the raw optimizer's step with
        a closure that runs `closure` (if any), then the on_before_optimizer_step hook (gradient
        clipping), and the step counted where Lightning counts it (`trainer.global_step`, which steps
        budgets, the `steps` metric and schedule progress read). Each step first stops on a signal
        whose KeyboardInterrupt was lost on its way (bench.interrupt.check)."""
        interrupt.check()
        progress = self._step_progress
        if progress is None:
            return self._optimizer.step(closure=closure)
        optimizer = self._optimizer.optimizer

        def hooked() -> Any:
            loss = closure() if closure is not None else None
            self.on_before_optimizer_step(optimizer)
            return loss

        progress.increment_ready()
        loss = optimizer.step(closure=hooked)
        progress.increment_completed()
        return loss

    def optimize_in_training_step(self, closure_chunk: int | None = None) -> None:
        """Let the base training_step run the optimizer and scheduler itself (Lightning manual
        optimization; Lightning then refuses its own clipping and accumulate_grad_batches).
        With `closure_chunk` the optimizer needs a closure (L-BFGS): each batch is the whole
        training set and `closure_step` replaces the step for this module only, so the per-step
        path of every other optimizer stays as it is."""
        self.automatic_optimization = False
        self._steps_itself = True
        if closure_chunk is not None:
            self._closure_chunk = closure_chunk
            self.training_step = self.closure_step

    def closure_step(self, batch: tuple, batch_idx: int) -> None:
        """One step of a closure optimizer on the whole set: the closure re-evaluates the exact mean
        loss (chunks of at most `closure_chunk` examples, penalties once) and its gradient as often
        as the optimizer asks; every evaluation counts in `samples_seen`."""
        x, y, weight = batch  # the whole training set (this rank's share under DDP)
        n, chunk = len(x), self._closure_chunk
        backward = (lambda t: t.backward()) if self._direct_backward else self.manual_backward
        evaluated: list[bool] = []

        def closure() -> torch.Tensor:
            self._optimizer.optimizer.zero_grad(set_to_none=True)
            data_loss = torch.zeros((), device=x.device)
            for i in range(0, n, chunk):
                xc, yc = x[i : i + chunk], y[i : i + chunk]
                for transform in self.batch_transforms:
                    xc = transform(xc)
                loss = self.training_loss(xc, yc) * (len(xc) / n)
                backward(loss * weight)
                data_loss = data_loss + loss.detach()
            total = data_loss
            if self.loss_penalties:
                penalty = sum(p(self) for p in self.loss_penalties)
                backward(penalty)
                total = total + penalty.detach()
            self.samples_seen += n
            if not evaluated:  # train/loss: the loss at the step's starting point, as for other optimizers
                self._step_losses.append((data_loss, n))
                evaluated.append(True)
            if self.trainer.world_size > 1:  # every rank's line search must see the same global loss
                total = self.trainer.strategy.reduce(total * weight, reduce_op="mean")
            return total

        self._optimizer_step(closure)
        if self._scheduler is not None:
            self._scheduler.step()
        return None

    def clip_gradient_norm(self, norm: float | None) -> None:
        """Clip the gradient norm before every optimizer step (also for modules with their own
        manual loop, e.g. the GAN: Lightning clips only under automatic optimization)."""
        self._gradient_clip_norm = norm

    def on_train_start(self) -> None:
        if self.before_training is not None:
            self.before_training()
        if self.own_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.own_sigterm)  # Lightning restores it again at teardown
        if self._steps_itself:  # looked up once, not per step
            self._optimizer, self._scheduler = self.optimizers(), self.lr_schedulers()
            self._accumulate = getattr(self.trainer.train_dataloader, "accumulate", 1)
            self._optimizer.optimizer.zero_grad(set_to_none=True)  # each step leaves them cleared
            # One process, full precision, no callback or backward hook: Lightning's backward would
            # only dispatch empty hooks around loss.backward() (~20 us a step).
            trainer, hooks = self.trainer, ("backward", "on_before_backward", "on_after_backward")
            plain = (type(trainer.strategy) is SingleDeviceStrategy and type(trainer.precision_plugin) is Precision
                     and not trainer.callbacks)
            self._direct_backward = plain and not any(is_overridden(hook, self) for hook in hooks)
            # ... and the optimizer step need not go through Lightning's wrappers (_optimizer_step)
            self._step_progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress if plain else None

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Lightning clips only under automatic optimization. Here, as there, gradients are already
        # unscaled (mixed precision) and the step is about to be taken.
        if self._gradient_clip_norm is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self._gradient_clip_norm, gradient_clip_algorithm="norm")

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # fit's batches are slices of tensors that already live on the training device: skip
        # Lightning's recursive per-element copy, which costs more than a small model's step.
        if batch[0].device == device and batch[1].device == device:
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        if self.after_epoch is not None:
            self.after_epoch(self.trainer, self, time.perf_counter() - self._epoch_start)

    def pop_train_loss(self) -> float:
        """Mean training loss since the last call (one host sync per epoch)."""
        losses, self._step_losses = self._step_losses, []
        if not losses:
            return 0.0
        values = torch.stack([loss for loss, _ in losses])
        counts = [n for _, n in losses]
        # 16-bit losses are summed in fp32
        weights = torch.tensor(counts, dtype=torch.promote_types(values.dtype, torch.float32), device=values.device)
        return (values.to(weights.dtype) @ weights).item() / sum(counts)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Lightning re-inspects training_step's signature on every batch (to decide whether to pass
        # batch_idx); a stored __signature__ lets inspect skip re-parsing the function.
        cls.training_step.__signature__ = inspect.signature(cls.training_step)


class SupervisedModule(BenchModule):
    """A network mapping x -> outputs, trained with the task's loss.

    multiclass: logits + cross-entropy (label smoothing optional); metrics loss, acc.
    binary: one logit + BCE (logistic); metrics loss, acc.
    regression: outputs + MSE; metrics loss, mse, r2.
    """

    def __init__(
        self,
        net: nn.Module,
        data: DataBundle,
        configure_optim: Callable | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(configure_optim)
        self.net = net
        self.task = data.task
        self.label_smoothing = label_smoothing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def task_loss(self, out: torch.Tensor, y: torch.Tensor, *, smoothing: float) -> torch.Tensor:
        if self.task == "multiclass":
            return F.cross_entropy(out, y, label_smoothing=smoothing)
        if self.task == "binary":
            target = y.float() * (1 - smoothing) + 0.5 * smoothing
            return F.binary_cross_entropy_with_logits(out.squeeze(-1), target)
        return F.mse_loss(out, y)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.task_loss(self(x), y, smoothing=self.label_smoothing)

    @torch.no_grad()
    def evaluate(self, split: Split) -> dict[str, float]:
        was_training = self.training
        self.eval()
        outs = torch.cat([self(split.x[i : i + EVAL_CHUNK]) for i in range(0, len(split), EVAL_CHUNK)])
        self.train(was_training)
        y = split.y.to(outs.device)
        metrics = {"loss": self.task_loss(outs, y, smoothing=0.0).item()}
        if self.task == "multiclass":
            metrics["acc"] = (outs.argmax(-1) == y).float().mean().item()
        elif self.task == "binary":
            metrics["acc"] = ((outs.squeeze(-1) > 0).long() == y).float().mean().item()
        else:
            mse = F.mse_loss(outs, y).item()
            var = y.var(dim=0, unbiased=False).mean().item()
            metrics.update(mse=mse, r2=1.0 - mse / var if var > 0 else float("nan"))
        return metrics
