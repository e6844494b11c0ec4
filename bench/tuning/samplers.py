"""Optuna samplers and pruners by name, every argument explicit and returned for recording.

Optuna's defaults move between releases (5.0 changed TPE's multivariate and constant_liar), so
each builder passes every argument it relies on and returns them as a settings dict that the
study stores as user attributes and MLflow tags.
"""

from __future__ import annotations

from typing import Any

import optuna

from bench.registry import Registry

SAMPLERS = Registry("sampler")
PRUNERS = Registry("pruner")


@SAMPLERS.register("tpe", summary="Tree-structured Parzen Estimator (Bayesian optimization)")
def tpe(seed: int, n_startup_trials: int, workers: int = 1) -> tuple[optuna.samplers.BaseSampler, dict]:
    settings = dict(
        n_startup_trials=n_startup_trials, n_ei_candidates=24, seed=seed,
        multivariate=True, group=False,
        constant_liar=workers > 1,  # only parallel workers need fantasized running trials
    )
    return optuna.samplers.TPESampler(**settings), settings


@SAMPLERS.register("random", summary="independent uniform / log-uniform sampling")
def random(seed: int, n_startup_trials: int, workers: int = 1) -> tuple[optuna.samplers.BaseSampler, dict]:
    return optuna.samplers.RandomSampler(seed=seed), {"seed": seed}


@PRUNERS.register("median", summary="stop a trial below the median of earlier trials at the same epoch")
def median(startup_trials: int, warmup_epochs: int) -> tuple[optuna.pruners.BasePruner, dict]:
    settings = dict(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs, interval_steps=1, n_min_trials=1)
    return optuna.pruners.MedianPruner(**settings), settings


@PRUNERS.register("none", summary="never prune")
def none(startup_trials: int, warmup_epochs: int) -> tuple[optuna.pruners.BasePruner, dict]:
    return optuna.pruners.NopPruner(), {}


def build(kind: Registry, name: str, **kwargs: Any) -> tuple[Any, dict]:
    return kind.get(name).factory(**kwargs)
