"""LightningModule base classes shared by the model zoo.

Models never pick their optimizer: `configure_optimizers` calls the builder that `train.fit`
injects (see bench/optim). Training loss is accumulated on-device and read once per epoch, and
evaluation is a plain no-grad pass over a whole split, so the per-step cost stays close to a bare
PyTorch loop (no `self.log` per step, no validation DataLoader).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from bench.data import DataBundle, Split

EVAL_CHUNK = 8192  # examples per forward pass during evaluation (bounds activation memory)


class BenchModule(pl.LightningModule):
    """Base: subclasses implement `training_loss(x, y)` and `evaluate(split)`."""

    def __init__(self, configure_optim: Callable[[BenchModule], Any] | None = None) -> None:
        super().__init__()
        self._configure_optim = configure_optim
        self._loss_sum = torch.zeros(())
        self._loss_count = 0
        self.samples_seen = 0
        # Regularization hooks (filled by train.fit from bench/optim/regularization.py):
        self.loss_penalties: list[Callable[[nn.Module], torch.Tensor]] = []  # added to the training loss
        self.batch_transforms: list[Callable[[torch.Tensor], torch.Tensor]] = []  # training inputs only

    # Lightning sets `_current_fx_name` ~45 times per step and the loss tally changes every step;
    # nn.Module.__setattr__ spends ~5 us per call on Parameter/Module/buffer checks that plain
    # attributes never need (measured: ~0.25 ms of a 1.2 ms digits step).
    _PLAIN_ATTRS = frozenset({"_current_fx_name", "_loss_sum", "_loss_count", "samples_seen"})

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

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        x, y, weight = batch
        for transform in self.batch_transforms:
            x = transform(x)
        loss = self.training_loss(x, y)
        self._loss_sum = self._loss_sum.to(loss.device) + loss.detach() * len(x)  # data loss, penalties excluded
        self._loss_count += len(x)
        self.samples_seen += len(x)
        for penalty in self.loss_penalties:
            # Full-batch chunks: the weights sum to 1 over a step, so the penalty counts once per step.
            loss = loss + penalty(self)
        return loss * weight if weight != 1.0 else loss

    def pop_train_loss(self) -> float:
        """Mean training loss since the last call (one host sync per epoch)."""
        mean = (self._loss_sum / max(self._loss_count, 1)).item()
        self._loss_sum, self._loss_count = torch.zeros(()), 0
        return mean


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
