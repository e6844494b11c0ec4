"""Search space -> Optuna suggestions, and the RunConfig of one trial."""

from __future__ import annotations

from typing import Any

from bench.hparams import Dist
from bench.spec import OPTIMIZER_KEY, hparams_for


def sample(trial: Any, space: dict[str, Dist], model: str, optimizer: str, schedule: str,
           regularizers: tuple[str, ...] = ()) -> dict[str, Any]:
    """Draw every parameter of `space` from the trial, typed by its HParam declaration.

    A space with an `optimizer` entry (an arm choosing among optimizers) is conditional, Optuna's
    define-by-run way: the choice is drawn first, then the shared names and only the chosen
    optimizer's `<optimizer>.<name>` ones, so a trial never carries another optimizer's
    parameters and the sampler models each one on the trials that used it."""
    out = {}
    if OPTIMIZER_KEY in space:
        optimizer = out[OPTIMIZER_KEY] = space[OPTIMIZER_KEY].suggest(trial, OPTIMIZER_KEY, "str")
    declared = hparams_for(model, optimizer, schedule, regularizers)
    for name, d in space.items():
        owner, _, param = name.rpartition(".")
        if name != OPTIMIZER_KEY and owner in ("", optimizer):
            out[name] = d.suggest(trial, name, declared[param].kind)
    return out
