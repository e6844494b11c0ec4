"""Search space -> Optuna suggestions."""

from __future__ import annotations

from typing import Any

from bench.hparams import Dist
from bench.routing import OPTIMIZER_KEY, ArmParams


def sample(trial: Any, space: dict[str, Dist], params: ArmParams) -> dict[str, Any]:
    """Draw every parameter of `space` from the trial, typed by its HParam declaration.

    A space with an `optimizer` entry (an arm choosing among optimizers) is conditional, Optuna's
    define-by-run way: the choice is drawn first, then the shared names and only the chosen
    optimizer's `<optimizer>.<name>` ones, so a trial never carries another optimizer's
    parameters and the sampler models each one on the trials that used it."""
    out = {}
    chosen = None
    if OPTIMIZER_KEY in space:
        chosen = out[OPTIMIZER_KEY] = space[OPTIMIZER_KEY].suggest(trial, OPTIMIZER_KEY, "str")
    declared = params.declared()
    for name, d in space.items():
        if name != OPTIMIZER_KEY and params.prefix(name)[0] in (None, chosen):
            out[name] = d.suggest(trial, name, declared[name].kind)
    return out
