"""Study-file schema (pydantic): the shape of a TOML study file, and the names in it.

This stage checks keys, types, ranges and that every model, dataset, optimizer, schedule,
regularizer, sampler and pruner names a registry entry (or, for optimizers and models, an import
path that imports). Whether the named things fit together (hyper-parameters, spaces, tasks) is the
next stage's job (bench/spec/arms.py). Nothing here imports torch, Lightning, MLflow or Optuna:
registry entries are metadata, and an import path is imported only when a study names one.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bench.data import DATASETS
from bench.hparams import Dist
from bench.launch import options as slurm_options
from bench.models import MODELS
from bench.optim import OPTIMIZERS, REGULARIZERS, SCHEDULES
from bench.registry import Registry
from bench.spec.budget import KINDS, Budget
from bench.spec.config import Precision, Strategy, default_objective
from bench.tuning.catalog import PRUNERS, SAMPLERS

_DIST_KEYS = set(Dist.model_fields)


def known(registry: Registry, value: str) -> str:
    registry.get(value)  # RegistryError (a ValueError) with the one-line message
    return value


def flatten(table: Any, *, leaf_dicts: bool) -> Any:
    """TOML reads `sgd.lr = ...`, `betas.0 = ...` and `[arms.space.sgd]` as nested tables: the same
    as the dotted names "sgd.lr" and "betas.0". With `leaf_dicts` a table of Dist keys (low, high,
    ...) is a value, not a namespace (search spaces)."""
    if not isinstance(table, dict):
        return table
    out: dict[str, Any] = {}
    for key, value in table.items():
        is_leaf = not isinstance(value, dict) or (leaf_dicts and value and set(value) <= _DIST_KEYS)
        if is_leaf:
            out[key] = value
        else:
            out.update({f"{key}.{k}": v for k, v in flatten(value, leaf_dicts=leaf_dicts).items()})
    return out


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TuningSpec(Strict):
    n_trials: int = Field(20, ge=1, description="trials per arm (pruned trials count)")
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    n_startup_trials: int = Field(5, ge=0, description="TPE random start-up trials")
    pruner_startup_trials: int = Field(3, ge=0, description="trials finished before pruning starts")
    pruner_warmup_epochs: int = Field(1, ge=0, description="evaluations (epochs by default) of each trial never pruned")
    pruner_percentile: float = Field(25.0, gt=0, lt=100, description="percentile pruner: keep trials above this")
    pruner_reduction_factor: int = Field(3, ge=2, description="successive halving / hyperband: keep 1/rf per rung")
    pruner_min_epochs: int = Field(1, ge=1, description="successive halving / hyperband: first rung, in evaluations")
    max_failed_trials: int = Field(3, ge=0, description="failures tolerated per arm before giving up")
    batch: int = Field(1, ge=1, description="trials asked together and trained as one batched model "
                       "(bench/batched.py); 1: one trial at a time")

    _sampler = field_validator("sampler")(lambda v: known(SAMPLERS, v))
    _pruner = field_validator("pruner")(lambda v: known(PRUNERS, v))


class EvalSpec(Strict):
    seeds: int = Field(5, ge=2, description="re-runs of the best config (>= 2 for a CI)")
    batched: bool = Field(True, description="train the seeds as one batched model where that is exact "
                          "(bench/batched.py); otherwise, and with false, one after another")


class QuickSpec(Strict):
    """Budgets used with `--quick` (CI, smoke tests). Each budget kind given here caps the budgets
    of that kind wherever the study sets them (study level and arms), so a study comparing an
    epochs, a steps and a seconds budget gives one quick value per kind."""

    n_trials: int = Field(3, ge=1)
    epochs: int = Field(3, ge=1)
    steps: int | None = Field(None, ge=1)
    samples: int | None = Field(None, ge=1)
    seconds: float | None = Field(None, gt=0)
    seeds: int = Field(2, ge=2)


class BudgetFields(Strict):
    """A budget (exactly one kind; bench/spec/budget.py) and its evaluation cadence, in its unit."""

    epochs: int | None = Field(None, ge=1)
    steps: int | None = Field(None, ge=1)
    samples: int | None = Field(None, ge=1)
    seconds: float | None = Field(None, gt=0)
    eval_every: float | None = Field(None, gt=0)

    def budget_values(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in KINDS if getattr(self, k) is not None}


class ArmSpec(BudgetFields):
    """One compared configuration: its own Optuna study, with the study's budget unless it sets
    its own (`steps = 200`: an arm-level budget replaces the study's)."""

    name: str | None = None
    optimizer: str | list[str]  # a list: the optimizer is tuned too, each trial choosing one
    model: str | None = None
    dataset: str | None = None
    schedule: str | None = None
    regularizers: list[str] | None = None  # default: the study's `regularizers`
    sampler: str | None = None  # default: tuning.sampler (compare samplers on the same arm)
    pruner: str | None = None  # default: tuning.pruner
    params: dict[str, Any] = Field(default_factory=dict)  # fixed values
    space: dict[str, Dist] | None = None  # replaces the default space (optimizer + regularizers) when given
    # Execution overrides (default: the study's), e.g. compare strategy "auto" vs "ddp" on one arm.
    accelerator: str | None = None
    devices: int | None = Field(None, ge=1)
    num_nodes: int | None = Field(None, ge=1)
    strategy: Strategy | None = None
    precision: Precision | None = None

    _sampler = field_validator("sampler")(lambda v: v if v is None else known(SAMPLERS, v))
    _pruner = field_validator("pruner")(lambda v: v if v is None else known(PRUNERS, v))
    _regs = field_validator("regularizers")(lambda v: v if v is None else [known(REGULARIZERS, r) for r in v])
    _model = field_validator("model")(lambda v: v if v is None else known(MODELS, v))
    _dataset = field_validator("dataset")(lambda v: v if v is None else known(DATASETS, v))
    _schedule = field_validator("schedule")(lambda v: v if v is None else known(SCHEDULES, v))
    _params = field_validator("params", mode="before")(lambda v: flatten(v, leaf_dicts=False))
    _space = field_validator("space", mode="before")(lambda v: flatten(v, leaf_dicts=True))

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9_.+-]+", v):
            raise ValueError(f"{v!r}: use letters, digits and _ . + - only")
        return v

    @field_validator("optimizer", mode="before")  # before: a wrong type gets this message, not a union's
    @classmethod
    def _optimizer(cls, v: Any) -> Any:
        if not isinstance(v, str | list):
            raise ValueError(f"expected an optimizer name or a list of them, got {v!r}")
        for name in [v] if isinstance(v, str) else v:
            known(OPTIMIZERS, name)
        if isinstance(v, list) and len(set(v)) != len(v):
            raise ValueError(f"listed twice: {v}")
        if isinstance(v, list) and len(v) < 2:
            raise ValueError(f"a choice needs at least 2 optimizers (got {v}); name a single one as a string")
        return v

    @property
    def optimizers(self) -> tuple[str, ...]:
        """The optimizer, or the ones each trial chooses among."""
        return (self.optimizer,) if isinstance(self.optimizer, str) else tuple(self.optimizer)


class FactorialSpec(Strict):
    """Cross factors into arms: every (optimizer, schedule, regularizer level) is one arm with its
    own tuning budget, named `optimizer+schedule+regs` from the factors given (a level may be
    "none", one name, "l2+dropout" or a list). `space` entries are added to every cell's default
    space where the cell declares them (so `momentum` is tuned for sgd/bgd cells only)."""

    optimizers: list[str] = Field(min_length=1)
    schedules: list[str] | None = None
    regularizers: list[str | list[str]] | None = None
    space: dict[str, Dist] = Field(default_factory=dict)

    _optimizers = field_validator("optimizers")(lambda v: [known(OPTIMIZERS, o) for o in v])
    _schedules = field_validator("schedules")(lambda v: v if v is None else [known(SCHEDULES, s) for s in v])
    _space = field_validator("space", mode="before")(lambda v: flatten(v, leaf_dicts=True))

    @field_validator("regularizers")
    @classmethod
    def _levels(cls, v: list[str | list[str]] | None) -> list[str | list[str]] | None:
        for level in v or []:
            for name in regularizer_level(level):
                known(REGULARIZERS, name)
        return v


def regularizer_level(level: str | list[str]) -> list[str]:
    """'none' -> [], 'l2' -> ['l2'], 'l2+dropout' or ['l2', 'dropout'] -> ['l2', 'dropout']."""
    names = level if isinstance(level, list) else [p for p in level.split("+") if p]
    return [] if names in (["none"], []) else list(names)


class StudySpec(BudgetFields):
    name: str
    description: str = ""
    model: str
    dataset: str
    schedule: str = "constant"
    regularizers: list[str] = Field(default_factory=list)  # default for arms that list none
    data_args: dict[str, Any] = Field(default_factory=dict)
    data_seed: int = 0
    # budget fields (epochs | steps | samples | seconds, eval_every) come from BudgetFields; none: 10 epochs
    objective: str | None = None  # default: the model's, else val/acc (classification) or val/mse (regression)
    target: float | None = None  # time-to-target threshold of the objective (default: the workload's)
    params: dict[str, Any] = Field(default_factory=dict)  # fixed values shared by every arm
    accelerator: str = "auto"
    devices: int = Field(1, ge=1)
    num_nodes: int = Field(1, ge=1)
    strategy: Strategy = "auto"
    precision: Precision = "32-true"
    tuning: TuningSpec = TuningSpec()
    eval: EvalSpec = EvalSpec()
    quick: QuickSpec = QuickSpec()
    factorial: FactorialSpec | None = None
    arms: list[ArmSpec] = Field(default_factory=list)  # explicit arms; factorial cells are added after them
    # defaults for `bench run --launcher slurm` (sbatch option names; --slurm KEY=VALUE wins)
    slurm: dict[str, str | int] = Field(default_factory=dict)

    _model = field_validator("model")(lambda v: known(MODELS, v))
    _regs = field_validator("regularizers")(lambda v: [known(REGULARIZERS, r) for r in v])
    _dataset = field_validator("dataset")(lambda v: known(DATASETS, v))
    _schedule = field_validator("schedule")(lambda v: known(SCHEDULES, v))
    _params = field_validator("params", mode="before")(lambda v: flatten(v, leaf_dicts=False))

    @model_validator(mode="before")
    @classmethod
    def _slurm(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("slurm"), dict):
            return data
        out = {}
        for key, value in data["slurm"].items():
            try:
                out[key.replace("_", "-")] = slurm_options.check(key, value)
            except ValueError as err:  # "time: ..." names the key; "unknown key ..." does not
                raise ValueError(f"slurm{': ' if str(err).startswith('unknown') else '.'}{err}") from None
        return {**data, "slurm": out}

    @field_validator("name")
    @classmethod
    def _study_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
            raise ValueError(f"{v!r}: use letters, digits and _ . - only")
        return v

    def objective_metric(self) -> str:
        return self.objective or default_objective(self.model, self.dataset)

    def budget(self) -> Budget:
        """The study-level budget (arms may set their own: bench/spec/arms.py)."""
        return Budget.of(self.budget_values(), self.eval_every)

    def quick_variant(self) -> StudySpec:
        """The same study with the `[quick]` budgets, stored under its own name: each budget is
        capped by the quick value of its kind (epochs: 3 unless [quick] says otherwise)."""
        return self.model_copy(update={
            "name": f"{self.name}-quick",
            **_quick_budget(self, self.quick, default_epochs=True),
            "arms": [a.model_copy(update=_quick_budget(a, self.quick)) for a in self.arms],
            "tuning": self.tuning.model_copy(update={
                "n_trials": self.quick.n_trials,
                "n_startup_trials": min(self.tuning.n_startup_trials, self.quick.n_trials),
            }),
            "eval": self.eval.model_copy(update={"seeds": self.quick.seeds}),
        })


def _quick_budget(level: BudgetFields, quick: QuickSpec, *, default_epochs: bool = False) -> dict[str, Any]:
    """Budget fields of one level capped by [quick]; a cadence longer than the capped budget falls
    back to the default one."""
    values = level.budget_values()
    if not values and default_epochs:
        values = {"epochs": Budget.of({}).value}
    out: dict[str, Any] = {}
    for kind, value in values.items():
        cap = getattr(quick, kind)
        if cap is not None and cap < value:
            out[kind] = int(cap) if kind != "seconds" else float(cap)
            if level.eval_every is not None and level.eval_every > cap:
                out["eval_every"] = None
    return out
