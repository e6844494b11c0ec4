"""Search space -> Optuna suggestions, and the RunConfig of one trial."""

from __future__ import annotations

from typing import Any

from bench.hparams import Dist
from bench.spec import hparams_for


def sample(trial: Any, space: dict[str, Dist], model: str, optimizer: str, schedule: str,
           regularizers: tuple[str, ...] = ()) -> dict[str, Any]:
    """Draw every parameter of `space` from the trial, typed by its HParam declaration."""
    declared = hparams_for(model, optimizer, schedule, regularizers)
    return {name: d.suggest(trial, name, declared[name].kind) for name, d in space.items()}
