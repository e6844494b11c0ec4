"""signSGD with momentum ("signum", Bernstein et al. 2018): step by the sign of the averaged gradient.

bench reads the hyper-parameters off the signature: lr, momentum, weight_decay, with these defaults.
"""

from __future__ import annotations

import torch


class SignSGD(torch.optim.Optimizer):
    """signSGD with momentum: w <- w - lr * sign(m), m <- momentum * m + (1 - momentum) * g."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.9, weight_decay: float = 0.0) -> None:
        if lr <= 0 or not 0 <= momentum < 1:
            raise ValueError(f"need lr > 0 and 0 <= momentum < 1, got lr={lr}, momentum={momentum}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad
                avg = self.state[p].setdefault("avg", torch.zeros_like(p))
                avg.mul_(group["momentum"]).add_(grad, alpha=1 - group["momentum"])
                p.add_(avg.sign(), alpha=-group["lr"])
        return loss
