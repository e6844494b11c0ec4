"""Regularizer registry: what each one changes, its hyper-parameters, and the hook it applies by.

A run lists regularizers by name (`regularizers = ["l2", "dropout"]`); several combine. Each entry
says which part of training it changes (`changes`), because that is what separates them:

| name           | changes  | how                                                                     |
|----------------|----------|-------------------------------------------------------------------------|
| l2             | loss     | coupled L2: optimizer adds weight_decay*w to the gradient (= +wd/2 ||w||^2) |
| decoupled_wd   | update   | w <- w (1 - lr*decoupled_weight_decay) before each step (AdamW-style, any optimizer) |
| l1             | loss     | + l1_strength * sum |w| over weight matrices (biases excluded)          |
| label_smoothing| loss     | cross-entropy / BCE against smoothed targets (classification)           |
| dropout        | model    | the model's dropout rate (a stochastic training-time network)           |
| noise          | data     | gaussian noise on each training batch's inputs                          |
| shift          | data     | random translations of image inputs by up to max_shift pixels           |
| grad_clip      | update   | rescale the gradient to total L2 norm <= grad_clip_norm (Trainer)       |
| early_stopping | stopping | stop after early_stop_patience epochs without a better val objective |

Hooks (each entry overrides only what it needs): `penalty(module)` is added to the training loss
in BenchModule.training_step; `transform(x)` maps each training batch's inputs; `wrap_optimizer`
modifies the optimizer in place; `trainer_kwargs` goes to pl.Trainer; `attach(module)` sets
model attributes; `EarlyStopping.update` decides in train._Run.epoch_end.

Metadata:
    hparams: the regularizer's own hyper-parameters (flat, globally unique names).
    borrows: hyper-parameters owned by the model/optimizer that the regularizer switches on,
        with the value used when the study neither fixes nor tunes them (`l2` -> weight_decay).
    space: default search space added to an arm's when it lists the regularizer.
    changes / how: the table above (shown by `bench list` and in reports).
    tasks: dataset tasks it applies to (None: all).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.hparams import HParam, dist
from bench.optim.optimizers import with_decoupled_weight_decay
from bench.registry import Registry

REGULARIZERS = Registry("regularizer")
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


def _register(name: str, *, summary: str, changes: str, how: str, hparams: tuple = (),
              borrows: Mapping[str, Any] | None = None, space: Mapping | None = None,
              tasks: tuple[str, ...] | None = None, input_rank: int | None = None):
    return REGULARIZERS.register(name, summary=summary, changes=changes, how=how, hparams=hparams,
                                 borrows=dict(borrows or {}), space=dict(space or {}), tasks=tasks,
                                 input_rank=input_rank)


# --- through another component's hyper-parameter ---------------------------------------------------
@_register("l2", summary="coupled L2 penalty (the optimizer's weight_decay)", changes="loss",
           how="optimizer adds weight_decay*w to the gradient, i.e. the loss gains weight_decay/2*||w||^2; "
               "Adam/Adagrad then rescale it per coordinate",
           borrows={"weight_decay": 5e-4}, space={"weight_decay": dist(1e-6, 1e-2, log=True)})
def l2() -> Regularizer:
    return Regularizer()  # the optimizer applies weight_decay itself


@_register("dropout", summary="dropout in the model (its `dropout` rate)", changes="model",
           how="zeroes hidden units with probability dropout during training (inverted scaling)",
           borrows={"dropout": 0.2}, space={"dropout": dist(0.0, 0.5)})
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


@_register("l1", summary="explicit L1 penalty on weight matrices (sparsity)", changes="loss",
           how="loss += l1_strength * sum|w| over weight matrices (biases excluded)",
           hparams=(HParam("l1_strength", "float", 1e-4, "L1 coefficient", low=0.0),),
           space={"l1_strength": dist(1e-6, 1e-2, log=True)})
def l1(l1_strength: float) -> Regularizer:
    return _L1(l1_strength)


class _LabelSmoothing(Regularizer):
    def __init__(self, value: float) -> None:
        self.value = value

    def attach(self, module: nn.Module) -> None:
        if not hasattr(module, "label_smoothing"):
            raise ValueError(f"label_smoothing: model {type(module).__name__} has no label_smoothing")
        module.label_smoothing = self.value


@_register("label_smoothing", summary="train against smoothed class targets", changes="loss",
           how="cross-entropy (or BCE) against targets mixed with the uniform distribution",
           hparams=(HParam("label_smoothing", "float", 0.1, "mass moved to the uniform target", low=0.0, high=0.5),),
           space={"label_smoothing": dist(0.0, 0.3)}, tasks=("multiclass", "binary"))
def label_smoothing(label_smoothing: float) -> Regularizer:
    return _LabelSmoothing(label_smoothing)


# --- data ----------------------------------------------------------------------------------------
class _Noise(Regularizer):
    def __init__(self, std: float) -> None:
        self.std = std

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.std * torch.randn_like(x) if self.std > 0 else x


@_register("noise", summary="gaussian input noise (tabular data; features are standardized)", changes="data",
           how="x + input_noise_std * N(0, 1) on every training batch (validation/test untouched)",
           hparams=(HParam("input_noise_std", "float", 0.1, "noise std in standardized feature units", low=0.0),),
           space={"input_noise_std": dist(0.01, 1.0, log=True)})
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


@_register("shift", summary="random small translations of image inputs (augmentation)", changes="data",
           how="each training image moved by up to max_shift pixels per axis, zero fill",
           hparams=(HParam("max_shift", "int", 1, "largest translation in pixels", low=0, high=8),),
           input_rank=2)
def shift(max_shift: int) -> Regularizer:
    return _Shift(max_shift)


# --- update --------------------------------------------------------------------------------------
class _Decoupled(Regularizer):
    def __init__(self, weight_decay: float) -> None:
        self.weight_decay = weight_decay

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        with_decoupled_weight_decay(optimizer, self.weight_decay)


@_register("decoupled_wd", summary="decoupled weight decay (AdamW-style; also for sgd, bgd, adagrad)",
           changes="update",
           how="w <- w*(1 - lr*decoupled_weight_decay) before each optimizer update, outside the "
               "adaptive scaling (Adam + this = AdamW)",
           hparams=(HParam("decoupled_weight_decay", "float", 1e-2, "decay per unit lr per step", low=0.0),),
           space={"decoupled_weight_decay": dist(1e-5, 0.3, log=True)})
def decoupled_wd(decoupled_weight_decay: float) -> Regularizer:
    return _Decoupled(decoupled_weight_decay)


class _GradClip(Regularizer):
    def __init__(self, norm: float) -> None:
        self.norm = norm

    def trainer_kwargs(self) -> dict[str, Any]:
        return {"gradient_clip_val": self.norm, "gradient_clip_algorithm": "norm"}


@_register("grad_clip", summary="gradient-norm clipping", changes="update",
           how="gradient rescaled to total L2 norm <= grad_clip_norm before each step (Lightning Trainer)",
           hparams=(HParam("grad_clip_norm", "float", 1.0, "largest total gradient norm", low=1e-12),),
           space={"grad_clip_norm": dist(0.1, 10.0, log=True)})
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


@_register("early_stopping", summary="stop on a validation plateau, keep the best epoch's weights",
           changes="stopping",
           how="stop after early_stop_patience epochs without improving the objective by > early_stop_min_delta; "
               "restore the best epoch (spent epochs still count)",
           hparams=(
               HParam("early_stop_patience", "int", 3, "epochs without improvement before stopping", low=1),
               HParam("early_stop_min_delta", "float", 0.0, "smallest improvement that counts (absolute)", low=0.0),
           ))
def early_stopping(early_stop_patience: int, early_stop_min_delta: float) -> EarlyStopping:
    return EarlyStopping(early_stop_patience, early_stop_min_delta)


# --- helpers used by spec and train ----------------------------------------------------------------
def own_hparams(names: Iterable[str]) -> list[HParam]:
    return [hp for name in names for hp in REGULARIZERS.get(name).meta["hparams"]]


def borrowed_defaults(names: Iterable[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        out.update(REGULARIZERS.get(name).meta["borrows"])
    return out


def default_space(names: Iterable[str]) -> dict:
    out: dict = {}
    for name in names:
        out.update(REGULARIZERS.get(name).meta["space"])
    return out


def check(names: Iterable[str], *, declared: Mapping[str, HParam], task: str | None = None) -> None:
    """Raise ValueError (one line) for an unknown, repeated or inapplicable regularizer."""
    seen: set[str] = set()
    for name in names:
        entry = REGULARIZERS.get(name)
        if name in seen:
            raise ValueError(f"'{name}' is listed twice")
        seen.add(name)
        for borrowed in entry.meta["borrows"]:
            if borrowed not in declared:
                raise ValueError(f"'{name}' needs a component with the hyper-parameter '{borrowed}' "
                                 "(e.g. the mlp model's dropout); this one has none")
        if task is not None and entry.meta["tasks"] is not None and task not in entry.meta["tasks"]:
            raise ValueError(f"'{name}' applies to {'/'.join(entry.meta['tasks'])} data, not {task}")


def check_data(names: Iterable[str], input_shape: tuple[int, ...], dataset: str) -> None:
    """Raise ValueError when a regularizer needs image inputs and the data is flat."""
    for name in names:
        rank = REGULARIZERS.get(name).meta["input_rank"]
        if rank is not None and len(input_shape) < rank:
            raise ValueError(f"{name}: needs image inputs (shape like (1, 8, 8)); {dataset} has {input_shape}")


def overrides(reg: Regularizer, hook: str) -> bool:
    """True when `reg` implements `hook` itself (so fit installs only the hooks that do work)."""
    return getattr(type(reg), hook) is not getattr(Regularizer, hook)


def build(names: Iterable[str], params: Mapping[str, Any]) -> list[Regularizer]:
    """Instantiate the listed regularizers from the run's flat resolved params."""
    out = []
    for name in names:
        entry = REGULARIZERS.get(name)
        out.append(entry.factory(**{hp.name: params[hp.name] for hp in entry.meta["hparams"]}))
    return out
