"""Small real optimizers that the plug-in tests name by import path (`tests.optimizers:Flaky`)."""

from __future__ import annotations

import torch


class Flaky(torch.optim.SGD):
    """Plain SGD whose step raises when `fail` is set: a plug-in that breaks at run time."""

    def __init__(self, params, lr: float = 0.1, fail: bool = False) -> None:
        super().__init__(params, lr=lr)
        self.fail = fail

    def step(self, closure=None):
        if self.fail:
            raise RuntimeError("step failed on purpose")
        return super().step(closure)


class Poison(torch.optim.SGD):
    """SGD that writes NaN into the weights after `after` steps: non-finite weights, not an error."""

    def __init__(self, params, lr: float = 0.1, after: int = 3) -> None:
        super().__init__(params, lr=lr)
        self.after, self.steps = after, 0

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        self.steps += 1
        if self.steps >= self.after:
            for group in self.param_groups:
                for p in group["params"]:
                    p.fill_(float("nan"))
        return loss


class ModeLog(torch.optim.SGD):
    """SGD with a schedule-free style train()/eval() switch that records each call and refuses to
    step in eval mode, as schedulefree's optimizers do."""

    log: list[str] = []

    def __init__(self, params, lr: float = 0.1) -> None:
        super().__init__(params, lr=lr)
        self.training = False

    def train(self) -> None:
        self.training = True
        ModeLog.log.append("train")

    def eval(self) -> None:
        self.training = False
        ModeLog.log.append("eval")

    def step(self, closure=None):
        if not self.training:
            raise RuntimeError("step in eval mode")
        return super().step(closure)


def needs_lr(params, lr: float, momentum: float = 0.0) -> torch.optim.Optimizer:
    """A factory function whose `lr` has no default: a study must fix or tune it."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum)
