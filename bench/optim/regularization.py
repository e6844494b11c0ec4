"""Regularizer hooks (torch): the objects the entries of bench/optim/regularizers.py build.

Hooks (each entry overrides only what it needs): `penalty(module)` is added to the training loss
in BenchModule.training_step; `transform(x)` maps each training batch's inputs; `wrap_optimizer`
modifies the optimizer in place; `trainer_kwargs` goes to pl.Trainer; `attach(module)` sets
model attributes; `EarlyStopping.update` decides in train._Run.epoch_end.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.optim.torch_optimizers import with_decoupled_weight_decay
from bench.registry import RegularizerInfo

Direction = Literal["minimize", "maximize"]


class Regularizer:
    """Base: every hook is a no-op."""

    def penalty(self, module: nn.Module) -> torch.Tensor | None:
        return None

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        pass

    def trainer_kwargs(self) -> dict[str, Any]:
        return {}

    def attach(self, module: nn.Module) -> None:
        pass


# --- through another component's hyper-parameter ---------------------------------------------------
def l2() -> Regularizer:
    return Regularizer()  # the optimizer applies weight_decay itself


def dropout() -> Regularizer:
    return Regularizer()  # the model builds its dropout layers from its own hyper-parameter


# --- loss ----------------------------------------------------------------------------------------
class _L1(Regularizer):
    def __init__(self, strength: float) -> None:
        self.strength = strength

    def penalty(self, module: nn.Module) -> torch.Tensor | None:
        weights = [p for p in module.parameters() if p.requires_grad and p.ndim >= 2]
        if self.strength == 0 or not weights:
            return None
        return self.strength * sum(p.abs().sum() for p in weights)


def l1(l1_strength: float) -> Regularizer:
    return _L1(l1_strength)


class _LabelSmoothing(Regularizer):
    def __init__(self, value: float) -> None:
        self.value = value

    def attach(self, module: nn.Module) -> None:
        if not hasattr(module, "label_smoothing"):
            raise ValueError(f"label_smoothing: model {type(module).__name__} has no label_smoothing")
        module.label_smoothing = self.value


def label_smoothing(label_smoothing: float) -> Regularizer:
    return _LabelSmoothing(label_smoothing)


# --- data ----------------------------------------------------------------------------------------
class _Noise(Regularizer):
    def __init__(self, std: float) -> None:
        self.std = std

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.std * torch.randn_like(x) if self.std > 0 else x


def noise(input_noise_std: float) -> Regularizer:
    return _Noise(input_noise_std)


def random_shift(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translate each image of a (B, [C,] H, W) batch by its own integer offset in
    [-max_shift, max_shift]^2, filling with zeros (the standardized mean)."""
    if max_shift == 0:
        return x
    squeeze = x.ndim == 3
    xb = x.unsqueeze(1) if squeeze else x
    b, c, h, w = xb.shape
    s = max_shift
    padded = F.pad(xb, (s, s, s, s))
    dy = torch.randint(0, 2 * s + 1, (b,), device=x.device)
    dx = torch.randint(0, 2 * s + 1, (b,), device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(b, c, h, w + 2 * s)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(b, c, h, w)
    out = padded.gather(2, rows).gather(3, cols)
    return out.squeeze(1) if squeeze else out


class _Shift(Regularizer):
    def __init__(self, max_shift: int) -> None:
        self.max_shift = max_shift

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return random_shift(x, self.max_shift)


def shift(max_shift: int) -> Regularizer:
    return _Shift(max_shift)


# --- update --------------------------------------------------------------------------------------
class _Decoupled(Regularizer):
    def __init__(self, weight_decay: float) -> None:
        self.weight_decay = weight_decay

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        with_decoupled_weight_decay(optimizer, self.weight_decay)


def decoupled_wd(decoupled_weight_decay: float) -> Regularizer:
    return _Decoupled(decoupled_weight_decay)


class _GradClip(Regularizer):
    def __init__(self, norm: float) -> None:
        self.norm = norm

    def trainer_kwargs(self) -> dict[str, Any]:
        return {"gradient_clip_val": self.norm, "gradient_clip_algorithm": "norm"}


def grad_clip(grad_clip_norm: float) -> Regularizer:
    return _GradClip(grad_clip_norm)


# --- stopping ------------------------------------------------------------------------------------
class EarlyStopping(Regularizer):
    """Patience on the validation objective. The epochs after the best one were spent, so they
    stay in the run's epochs/steps/samples/wall time; only the weights (and the validation
    metrics reported) go back to the best epoch."""

    def __init__(self, patience: int, min_delta: float) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.best: float | None = None
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stopped_epoch: int | None = None

    def update(self, epoch: int, value: float | None, direction: Direction, module: nn.Module) -> str | None:
        """Feed one epoch's objective; returns the stop reason when patience is exhausted."""
        if value is not None and math.isfinite(value) and (
            self.best is None
            or (value > self.best + self.min_delta if direction == "maximize" else value < self.best - self.min_delta)
        ):
            self.best, self.best_epoch = value, epoch
            self.best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            return None
        if epoch - self.best_epoch >= self.patience:
            self.stopped_epoch = epoch
            return (f"early stopped at epoch {epoch}: no improvement > {self.min_delta:g} for "
                    f"{self.patience} epochs (best {self.best:.4g} at epoch {self.best_epoch})")
        return None

    def restore(self, module: nn.Module) -> int | None:
        """Load the best epoch's weights; returns that epoch (None when none was finite)."""
        if self.best_state is None:
            return None
        module.load_state_dict(self.best_state)
        return self.best_epoch


def early_stopping(early_stop_patience: int, early_stop_min_delta: float) -> EarlyStopping:
    return EarlyStopping(early_stop_patience, early_stop_min_delta)


# --- helpers used by train.fit -----------------------------------------------------------------------
def check_data(infos: Iterable[RegularizerInfo], input_shape: tuple[int, ...], dataset: str) -> None:
    """Raise ValueError when a regularizer needs image inputs and the data is flat."""
    for info in infos:
        if info.input_rank is not None and len(input_shape) < info.input_rank:
            raise ValueError(f"{info.name}: needs image inputs (shape like (1, 8, 8)); {dataset} has {input_shape}")


def overrides(reg: Regularizer, hook: str) -> bool:
    """True when `reg` implements `hook` itself (so fit installs only the hooks that do work)."""
    return getattr(type(reg), hook) is not getattr(Regularizer, hook)
