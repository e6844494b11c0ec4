"""Optimizer registry: sgd (mini-batch), bgd (true full-batch GD), adam, adagrad.

Every argument of the torch optimizer is set explicitly from a declared hyper-parameter (no
silent library defaults: momentum 0 and no Nesterov for sgd unless a study asks for them), and
each entry ships a default search space that a study file may override.

Metadata:
    hparams: the tunable/fixed arguments (HParam tuple); their defaults are the torch defaults.
    space: the default search space (AlgoPerf-style ranges; lr always log-scale).
    full_batch: True when one optimizer step uses the exact gradient of the whole training set.
"""

from __future__ import annotations

import types
from collections.abc import Iterable

import torch

from bench.hparams import HParam, dist
from bench.registry import Registry

OPTIMIZERS = Registry("optimizer")

LR = HParam("lr", "float", 0.01, "learning rate (peak value when a schedule is used)", low=0.0)
WEIGHT_DECAY = HParam("weight_decay", "float", 0.0, "coupled L2 penalty added to the gradient", low=0.0)
MOMENTUM = HParam("momentum", "float", 0.0, "heavy-ball momentum (0 = plain gradient descent)", low=0.0, high=1.0)
NESTEROV = HParam("nesterov", "bool", False, "Nesterov momentum (needs momentum > 0)")


def _sgd(params: Iterable, *, lr: float, momentum: float, nesterov: bool, weight_decay: float):
    """torch.optim.SGD with every argument explicit (dampening 0)."""
    return torch.optim.SGD(
        params, lr=lr, momentum=momentum, dampening=0.0, nesterov=nesterov and momentum > 0,
        weight_decay=weight_decay,
    )


OPTIMIZERS.register(
    "sgd",
    summary="mini-batch stochastic gradient descent (momentum 0 unless tuned)",
    hparams=(LR, MOMENTUM, NESTEROV, WEIGHT_DECAY),
    space={"lr": dist(1e-3, 1.0, log=True)},
    full_batch=False,
)(_sgd)

OPTIMIZERS.register(
    "bgd",
    summary="batch gradient descent: one step per epoch on the exact full training-set gradient",
    hparams=(LR, MOMENTUM, NESTEROV, WEIGHT_DECAY),
    # One step per epoch takes fewer, larger-risk steps: the range reaches higher than sgd's.
    space={"lr": dist(1e-2, 10.0, log=True)},
    full_batch=True,
)(_sgd)


@OPTIMIZERS.register(
    "adam",
    summary="Adam (Kingma & Ba 2015), betas and eps explicit",
    hparams=(
        LR,
        HParam("beta1", "float", 0.9, "first-moment decay", low=0.0, high=1.0),
        HParam("beta2", "float", 0.999, "second-moment decay", low=0.0, high=1.0),
        HParam("eps", "float", 1e-8, "denominator epsilon", low=0.0),
        WEIGHT_DECAY,
    ),
    space={"lr": dist(1e-5, 1e-1, log=True), "eps": dist(1e-10, 1e-6, log=True)},
    full_batch=False,
)
def _adam(params, *, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float):
    return torch.optim.Adam(
        params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, amsgrad=False
    )


@OPTIMIZERS.register(
    "adagrad",
    summary="Adagrad (Duchi et al. 2011): per-coordinate steps from accumulated squared gradients",
    hparams=(
        LR,
        HParam("initial_accumulator_value", "float", 0.0, "starting value of the accumulator", low=0.0),
        HParam("adagrad_eps", "float", 1e-10, "denominator epsilon", low=0.0),
        WEIGHT_DECAY,
    ),
    space={
        "lr": dist(1e-3, 1.0, log=True),
        "initial_accumulator_value": dist(1e-6, 1.0, log=True),
    },
    full_batch=False,
)
def _adagrad(params, *, lr: float, initial_accumulator_value: float, adagrad_eps: float, weight_decay: float):
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

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.mul_(1 - group["lr"] * weight_decay)
        inner_step()
        return loss

    # A bound method (not a plain function): torch's LR schedulers re-wrap `step.__func__`.
    optimizer.step = types.MethodType(step, optimizer)
    return optimizer
