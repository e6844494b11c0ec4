"""Built-in optimizer factories (torch) and the one place optimizers are constructed.

`build(info, params, values)` calls an entry's factory with the run's values: hyper-parameters
named `x.0`, `x.1`, ... (an import-path optimizer's tuple arguments, such as torch's `betas`) are
passed as one tuple `x`. The built-in factories set every torch argument explicitly (no silent
library defaults: momentum 0 and no Nesterov for sgd unless a study asks for them).
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from bench.registry import OptimizerInfo


def build(info: OptimizerInfo, params: Iterable, values: Mapping[str, Any]) -> torch.optim.Optimizer:
    """The optimizer of `info` over `params` with the run's values (tuple arguments regrouped)."""
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        head, dot, index = name.rpartition(".")
        if dot and index.isdigit():
            kwargs.setdefault(head, {})[int(index)] = value
        else:
            kwargs[name] = value
    kwargs = {k: tuple(v[i] for i in sorted(v)) if isinstance(v, dict) else v for k, v in kwargs.items()}
    optimizer = info.load()(params, **kwargs)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer {info.name!r} built a {type(optimizer).__name__}, not a torch.optim.Optimizer")
    return optimizer


def sgd(params: Iterable, *, lr: float, momentum: float, nesterov: bool, weight_decay: float) -> torch.optim.SGD:
    """torch.optim.SGD with every argument explicit (dampening 0)."""
    return torch.optim.SGD(
        params, lr=lr, momentum=momentum, dampening=0.0, nesterov=nesterov and momentum > 0,
        weight_decay=weight_decay,
    )


def adam(params: Iterable, *, lr: float, beta1: float, beta2: float, eps: float,
         weight_decay: float) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, amsgrad=False)


def adagrad(params: Iterable, *, lr: float, initial_accumulator_value: float, adagrad_eps: float,
            weight_decay: float) -> torch.optim.Adagrad:
    return torch.optim.Adagrad(
        params, lr=lr, lr_decay=0.0, weight_decay=weight_decay,
        initial_accumulator_value=initial_accumulator_value, eps=adagrad_eps,
    )


def with_decoupled_weight_decay(optimizer: torch.optim.Optimizer, weight_decay: float) -> torch.optim.Optimizer:
    """Decoupled weight decay (Loshchilov & Hutter, AdamW) for any optimizer, in place.

    Each step first evaluates the closure (forward + backward, so gradients are taken at the
    undecayed weights), then shrinks every parameter by w <- w * (1 - lr * weight_decay) with the
    group's current (scheduled) lr, then applies the optimizer's own update. For Adam this is
    exactly torch.optim.AdamW; unlike coupled L2 (`weight_decay`, added to the gradient) the decay
    never passes through Adam's or Adagrad's per-coordinate scaling. Biases are decayed too, as
    AdamW does by default.
    """
    if weight_decay == 0:
        return optimizer
    inner_step = optimizer.step
    closure_param = inspect.signature(inner_step).parameters.get("closure")
    # L-BFGS re-evaluates the loss inside its step: decay first, then hand it the closure.
    needs_closure = closure_param is not None and closure_param.default is inspect.Parameter.empty

    def decay(self: torch.optim.Optimizer) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None or needs_closure:
                    p.mul_(1 - group["lr"] * weight_decay)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001
        if needs_closure:
            decay(self)
            return inner_step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        decay(self)
        inner_step()
        return loss

    # A bound method (not a plain function): torch's LR schedulers re-wrap `step.__func__`.
    optimizer.step = types.MethodType(step, optimizer)
    return optimizer
