"""Samplers and pruners by name: metadata and feasibility checks, without importing Optuna.

The study-file schema validates sampler and pruner names and whether an arm's search space suits
its sampler (the grid sampler needs a finite, fixed space with at least `n_trials` points) from
here; the Optuna objects are built by bench/tuning/samplers.py, imported on first build.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bench.hparams import Dist
from bench.registry import Info, Registry

GRID_MAX_POINTS = 100_000  # a grid larger than this is a typo (a step far too small)
# (space, parameter kinds, n_trials, conditional) -> None, or ValueError "<param>: why" / "why"
Check = Callable[[Mapping[str, Dist], Mapping[str, str], int, bool], None]


@dataclass(frozen=True, kw_only=True)
class SamplerInfo(Info):
    """An Optuna sampler: `factory(seed=, n_startup_trials=, workers=, grid=, conditional=)` returns
    (sampler, settings). `check` says whether an arm's space suits it (None: every space does)."""

    check: Check | None = None


@dataclass(frozen=True, kw_only=True)
class PrunerInfo(Info):
    """An Optuna pruner: `factory(startup_trials=, warmup_epochs=, percentile=, reduction_factor=,
    min_epochs=, max_epochs=)` returns (pruner, settings); the epochs are evaluation points (one
    per epoch by default). `fixed_reports`: it needs every trial to report at the same points, up to
    a known last one (rungs of successive halving / Hyperband), which a budget whose points depend
    on the machine's speed (seconds) cannot give."""

    fixed_reports: bool = False


def grid_points(space: Mapping[str, Dist], kinds: Mapping[str, str]) -> dict[str, list]:
    """Finite grid of a search space: choices as given, ranges every `step` (ints: every 1 unless
    a step is given). Raises ValueError naming the parameter when a float range has no step."""
    out: dict[str, list] = {}
    for name, d in space.items():
        if d.choices is not None:
            out[name] = list(d.choices)
            continue
        if kinds[name] == "int":
            step = int(d.step) if d.step else 1
            out[name] = list(range(int(d.low), int(d.high) + 1, step))
            continue
        if not d.step:
            raise ValueError(f"{name}: the grid sampler needs a finite space, but {d.describe()} is continuous; "
                             "give a step (e.g. step = 0.1, not with log) or choices")
        n = math.floor((d.high - d.low) / d.step + 1e-9) + 1
        if n > GRID_MAX_POINTS:
            raise ValueError(f"{name}: step {d.step:g} gives {n} grid points (max {GRID_MAX_POINTS})")
        out[name] = [round(d.low + i * d.step, 12) for i in range(n)]
    return out


def grid_size(grid: Mapping[str, list]) -> int:
    return math.prod(len(v) for v in grid.values())


def _grid_check(space: Mapping[str, Dist], kinds: Mapping[str, str], n_trials: int, conditional: bool) -> None:
    if conditional:  # GridSampler walks one fixed product of values; branches would repeat each point
        raise ValueError("the grid sampler needs a fixed search space, but this arm's parameters depend on the "
                         "chosen optimizer: use tpe or random, or one arm per optimizer")
    size = grid_size(grid_points(space, kinds))
    if size < n_trials:
        raise ValueError(f"the grid sampler has {size} points but tuning.n_trials = {n_trials}: refine the grid "
                         "or lower n_trials")


SAMPLERS: Registry[SamplerInfo] = Registry("sampler")
PRUNERS: Registry[PrunerInfo] = Registry("pruner")

_SAMPLERS: dict[str, tuple[str, Any]] = {
    "tpe": ("Tree-structured Parzen Estimator (Bayesian optimization)", None),
    "random": ("independent uniform / log-uniform sampling", None),
    "grid": ("every point of a finite grid (from step or choices), in seeded order", _grid_check),
    "qmc": ("quasi-Monte Carlo (scrambled Sobol) low-discrepancy sampling", None),
    "gp": ("Gaussian-process Bayesian optimization (needs torch + scipy)", None),
    "cmaes": ("CMA-ES evolution strategy (needs the cmaes package; numeric spaces)", None),
}
_PRUNERS = {  # name -> (summary, fixed_reports)
    "median": ("stop a trial below the median of earlier trials at the same evaluation point", False),
    "percentile": ("stop a trial outside the best pruner_percentile % at the same evaluation point", False),
    "successive_halving": ("asynchronous successive halving (ASHA): keep the top 1/rf per rung", True),
    "hyperband": ("Hyperband: successive-halving brackets from min_epochs to the budget's last evaluation", True),
    "none": ("never prune", False),
}
for _name, (_summary, _check) in _SAMPLERS.items():
    SAMPLERS.register(SamplerInfo(name=_name, summary=_summary, factory=f"bench.tuning.samplers:{_name}",
                                  check=_check))
for _name, (_summary, _fixed) in _PRUNERS.items():
    PRUNERS.register(PrunerInfo(name=_name, summary=_summary, factory=f"bench.tuning.samplers:{_name}",
                                fixed_reports=_fixed))
