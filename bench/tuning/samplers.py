"""Optuna samplers and pruners (declared by name in bench/tuning/catalog.py), every argument
explicit and returned for recording.

Optuna's defaults move between releases (5.0 changed TPE's multivariate and constant_liar), so
each builder passes every argument it relies on and returns them as a settings dict that the
study stores as user attributes and MLflow tags.

Samplers are called as `factory(seed=, n_startup_trials=, workers=, grid=, conditional=)`; `grid`
(name -> list of values, from `grid_points`) is only used by `grid`; `conditional` (the arm tunes
its optimizer, so which parameters a trial has depends on that choice) only by `tpe`, which then
models each group of parameters that occur together (`group=True`) instead of sampling the
conditional ones independently. random handles such spaces as they are; qmc, gp and cmaes draw
the parameters not in every trial with their independent (random) sampler; grid refuses them.
Pruners are called as
`factory(startup_trials=, warmup_epochs=, percentile=, reduction_factor=, min_epochs=, max_epochs=)`;
each uses the arguments its algorithm has. One resource unit = one epoch (trials report once per
epoch).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import optuna

from bench.registry import Registry
from bench.tuning.catalog import GRID_MAX_POINTS, PRUNERS, SAMPLERS, grid_points, grid_size  # noqa: F401

Built = tuple[Any, dict]


def tpe(seed: int, n_startup_trials: int, workers: int = 1, grid: Mapping | None = None,
        conditional: bool = False) -> Built:
    settings = dict(
        n_startup_trials=n_startup_trials, n_ei_candidates=24, seed=seed,
        multivariate=True, group=conditional,
        constant_liar=workers > 1,  # only parallel workers need fantasized running trials
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # `group`; recorded anyway
        return optuna.samplers.TPESampler(**settings), settings


def random(seed: int, n_startup_trials: int, workers: int = 1, grid: Mapping | None = None,
           conditional: bool = False) -> Built:
    return optuna.samplers.RandomSampler(seed=seed), {"seed": seed}


class _AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler whose exhaustion does not call `study.stop()`: that only works inside
    `study.optimize` and raises under ask/tell; the runner stops at n_trials itself."""

    def after_trial(self, study, trial, state, values) -> None:  # noqa: ANN001
        pass


def grid(seed: int, n_startup_trials: int, workers: int = 1, grid: Mapping | None = None,
         conditional: bool = False) -> Built:
    if not grid:
        raise ValueError("the grid sampler needs the arm's grid points (see samplers.grid_points)")
    search_space = {k: list(v) for k, v in grid.items()}
    settings = {"seed": seed, "search_space": search_space, "n_points": grid_size(search_space)}
    return _AskTellGridSampler(search_space, seed=seed), settings


def qmc(seed: int, n_startup_trials: int, workers: int = 1, grid: Mapping | None = None,
        conditional: bool = False) -> Built:
    settings = dict(qmc_type="sobol", scramble=True, seed=seed, warn_asynchronous_seeding=True,
                    warn_independent_sampling=True)
    # The first trial infers the search space with the independent sampler (seeded too).
    sampler = optuna.samplers.QMCSampler(independent_sampler=optuna.samplers.RandomSampler(seed=seed), **settings)
    return sampler, {**settings, "independent_sampler": "random"}


def gp(seed: int, n_startup_trials: int, workers: int = 1, grid: Mapping | None = None,
       conditional: bool = False) -> Built:
    settings = dict(seed=seed, n_startup_trials=n_startup_trials, deterministic_objective=False,
                    warn_independent_sampling=True)
    sampler = optuna.samplers.GPSampler(independent_sampler=optuna.samplers.RandomSampler(seed=seed), **settings)
    return sampler, {**settings, "independent_sampler": "random"}


def cmaes(seed: int, n_startup_trials: int, workers: int = 1, grid: Mapping | None = None,
          conditional: bool = False) -> Built:
    settings = dict(
        seed=seed, n_startup_trials=n_startup_trials, x0=None, sigma0=None, restart_strategy=None,
        popsize=None, inc_popsize=-1, consider_pruned_trials=False, use_separable_cma=False,
        with_margin=False, lr_adapt=False, warn_independent_sampling=True,
    )
    sampler = optuna.samplers.CmaEsSampler(independent_sampler=optuna.samplers.RandomSampler(seed=seed), **settings)
    return sampler, {**settings, "independent_sampler": "random"}


# --- pruners -------------------------------------------------------------------------------------
def median(startup_trials: int, warmup_epochs: int, **_: Any) -> Built:
    settings = dict(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs, interval_steps=1, n_min_trials=1)
    return optuna.pruners.MedianPruner(**settings), settings


def percentile(startup_trials: int, warmup_epochs: int, percentile: float = 25.0, **_: Any) -> Built:
    settings = dict(percentile=percentile, n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs,
                    interval_steps=1, n_min_trials=1)
    return optuna.pruners.PercentilePruner(**settings), settings


def successive_halving(startup_trials: int, warmup_epochs: int, reduction_factor: int = 3, min_epochs: int = 1,
                       **_: Any) -> Built:
    settings = dict(min_resource=min_epochs, reduction_factor=reduction_factor, min_early_stopping_rate=0,
                    bootstrap_count=0)
    return optuna.pruners.SuccessiveHalvingPruner(**settings), settings


def hyperband(startup_trials: int, warmup_epochs: int, reduction_factor: int = 3, min_epochs: int = 1,
              max_epochs: int | None = None, **_: Any) -> Built:
    if max_epochs is None:
        raise ValueError("hyperband needs max_epochs (the study's epoch budget)")
    settings = dict(min_resource=min_epochs, max_resource=max_epochs, reduction_factor=reduction_factor,
                    bootstrap_count=0)
    return optuna.pruners.HyperbandPruner(**settings), settings


def none(startup_trials: int, warmup_epochs: int, **_: Any) -> Built:
    return optuna.pruners.NopPruner(), {}


def build(kind: Registry, name: str, **kwargs: Any) -> tuple[Any, dict]:
    return kind.get(name).load()(**kwargs)
