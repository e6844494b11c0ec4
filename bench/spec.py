"""Study-file schema (TOML -> StudySpec) and the frozen per-run configuration (RunConfig).

`load(path)` validates everything a study can get wrong *before* any store is touched: unknown
keys, wrong types, unknown registry names, hyper-parameters no component owns, empty search
spaces and impossible budgets all raise SpecError with a one-line message naming the field,
e.g. `studies/x.toml: arms[2].optimizer: unknown 'adamx' (known: adagrad, adam, bgd, sgd)`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Container
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench import studyfile
from bench.data import DATASETS, resolve_args
from bench.hparams import Dist, HParam, choice
from bench.launch import options as slurm_options
from bench.models import MODELS
from bench.optim import OPTIMIZERS, REGULARIZERS, SCHEDULES, regularization
from bench.registry import Registry
from bench.studyfile import SpecError
from bench.tuning.samplers import PRUNERS, SAMPLERS, grid_points, grid_size

# Knobs of the training loop itself (owned by neither model nor optimizer).
TRAINING_HPARAMS = (
    HParam("batch_size", "int", 64, "examples per mini-batch (ignored by full-batch optimizers)", low=1),
    HParam(
        "bgd_max_chunk", "int", 16384,
        "memory cap for full-batch GD: examples per forward pass; larger sets accumulate chunks", low=1,
    ),
)
# Lower is better unless the metric's last path part is listed here.
MAXIMIZED_METRICS = {"acc", "r2", "seq_acc", "token_acc"}


def default_objective(model: str, dataset: str) -> str:
    """The model's natural validation metric (e.g. val/mmd for the GAN), else by dataset task."""
    declared = MODELS.get(model).meta.get("objective")
    if declared:
        return declared
    return "val/mse" if DATASETS.get(dataset).meta["task"] == "regression" else "val/acc"


def check_task(model: str, dataset: str) -> None:
    """Raise ValueError when the model cannot train on the dataset's task (classification, ...)."""
    task = DATASETS.get(dataset).meta["task"]
    if task not in MODELS.get(model).meta["tasks"]:
        raise ValueError(f"model '{model}' cannot train on {task} data '{dataset}'")


def direction_of(metric: str) -> Literal["minimize", "maximize"]:
    return "maximize" if metric.rsplit("/", 1)[-1] in MAXIMIZED_METRICS else "minimize"


def hparams_for(model: str, optimizer: str, schedule: str, regularizers: tuple[str, ...] | list[str] = ()
                ) -> dict[str, HParam]:
    """Every hyper-parameter a run of this (model, optimizer, schedule, regularizers) accepts, by name."""
    owned: list[HParam] = [
        *MODELS.get(model).meta["hparams"],
        *OPTIMIZERS.get(optimizer).meta["hparams"],
        *SCHEDULES.get(schedule).meta["hparams"],
        *regularization.own_hparams(regularizers),
        *TRAINING_HPARAMS,
    ]
    if OPTIMIZERS.get(optimizer).meta["full_batch"]:
        owned = [hp for hp in owned if hp.name != "batch_size"]
    return {hp.name: hp for hp in owned}


OPTIMIZER_KEY = "optimizer"  # the categorical parameter of an arm that chooses among optimizers


def arm_hparams(model: str, optimizers: tuple[str, ...] | list[str], schedule: str,
                regularizers: tuple[str, ...] | list[str] = ()) -> dict[str, HParam]:
    """The names an arm's `params` and `space` may use. One optimizer: `hparams_for`. Several (the
    optimizer is itself tuned): `optimizer`, the names every choice declares (shared by all
    branches), and each choice's own names as `<optimizer>.<name>` (used only when it is chosen)."""
    if len(optimizers) == 1:
        return hparams_for(model, optimizers[0], schedule, regularizers)
    each = {o: hparams_for(model, o, schedule, regularizers) for o in optimizers}
    first = each[optimizers[0]]
    return {
        OPTIMIZER_KEY: HParam(OPTIMIZER_KEY, "str", optimizers[0], "the optimizer a trial trains with",
                              choices=tuple(optimizers)),
        **{k: hp for k, hp in first.items() if all(k in d for d in each.values())},
        **{f"{o}.{k}": hp for o, d in each.items() for k, hp in d.items()},
    }


def chosen_params(values: dict[str, Any], optimizer: str, declared: Container[str]) -> dict[str, Any]:
    """The values of an arm (fixed and sampled) that apply once `optimizer` is chosen, un-prefixed:
    the plain names it declares, then its own `<optimizer>.<name>` ones, which win. For an arm
    with a single optimizer this is `values` itself."""
    shared = {k: v for k, v in values.items() if "." not in k and k != OPTIMIZER_KEY and k in declared}
    own = {k.removeprefix(f"{optimizer}."): v for k, v in values.items() if k.startswith(f"{optimizer}.")}
    return {**shared, **own}


def resolve_params(
    model: str, optimizer: str, schedule: str, given: dict[str, Any], regularizers: tuple[str, ...] | list[str] = ()
) -> dict[str, Any]:
    """Fill defaults for every declared hyper-parameter; reject unknown names and bad values.
    A listed regularizer that switches on another component's knob (l2 -> weight_decay) supplies
    that knob's default."""
    declared = hparams_for(model, optimizer, schedule, regularizers)
    for name in given:
        if name not in declared:
            raise KeyError(
                f"{name}: not a hyper-parameter of {_owners(model, optimizer, schedule, regularizers)} "
                f"(known: {', '.join(sorted(declared))})"
            )
    defaults = {**{k: hp.default for k, hp in declared.items()}, **regularization.borrowed_defaults(regularizers)}
    out = {}
    for name, hp in declared.items():
        try:
            out[name] = hp.check(given[name]) if name in given else defaults[name]
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
    return out


def _owners(model: str, optimizer: str, schedule: str, regularizers: tuple[str, ...] | list[str] = ()) -> str:
    return "/".join([model, optimizer, schedule, *regularizers])


def _undeclared(key: str, model: str, optimizers: tuple[str, ...], schedule: str, regularizers: tuple[str, ...],
                declared: dict[str, HParam]) -> str:
    """Why an arm's params/space name is not one of the arm's, with the fix for a choice arm."""
    prefix, dot, _ = key.partition(".")
    if len(optimizers) > 1 and dot:
        if prefix not in optimizers:
            return f"'{prefix}' is not one of the arm's optimizers ({', '.join(optimizers)})"
        own = ", ".join(sorted(hparams_for(model, prefix, schedule, regularizers)))
        return f"not a hyper-parameter of {_owners(model, prefix, schedule, regularizers)} (known: {own})"
    having = [o for o in optimizers if key in hparams_for(model, o, schedule, regularizers)]
    if having:
        lacking = [o for o in optimizers if o not in having]
        return f"not a hyper-parameter of {', '.join(lacking)}; name it per optimizer, e.g. '{having[0]}.{key}'"
    known = ", ".join(sorted(k for k in declared if "." not in k and k != OPTIMIZER_KEY))
    per_optimizer = "; per optimizer: <optimizer>.<name>" if len(optimizers) > 1 else ""
    return (f"not a hyper-parameter of {_owners(model, '|'.join(optimizers), schedule, regularizers)} "
            f"(known: {known}{per_optimizer})")


Strategy = Literal["auto", "ddp", "ddp_spawn", "fsdp", "deepspeed"]
Precision = Literal["32-true", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true"]
EXECUTION_FIELDS = ("accelerator", "devices", "num_nodes", "strategy", "precision")


def _strategy_available(strategy: str) -> str:
    if strategy == "deepspeed":
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise ValueError("'deepspeed' needs the deepspeed package (pip install deepspeed)")
    return strategy


class RunConfig(BaseModel):
    """Everything one training run depends on; frozen, JSON-serializable and hashed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    dataset: str
    optimizer: str
    schedule: str = "constant"
    regularizers: tuple[str, ...] = ()  # names in REGULARIZERS, applied together
    params: dict[str, Any] = Field(default_factory=dict)  # resolved hyper-parameters
    data_args: dict[str, Any] = Field(default_factory=dict)
    data_seed: int = 0
    seed: int = 0
    epochs: int = Field(10, ge=1)
    objective: str = "val/acc"
    evaluate_test: bool = False  # eval runs also score the held-out test split at the end
    accelerator: str = "auto"
    devices: int = Field(1, ge=1)  # processes (CPU) or GPUs per node; > 1 trains in its own process group
    num_nodes: int = Field(1, ge=1)
    strategy: Strategy = "auto"
    precision: Precision = "32-true"
    progress_bar: bool = False

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    def hash(self) -> str:
        """Short content hash: equal configs (same resolved values) get the same hash."""
        payload = json.dumps(self.model_dump(), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    _strategy = field_validator("strategy")(lambda v: _strategy_available(v))

    @field_validator("regularizers")
    @classmethod
    def _regularizers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            _known(REGULARIZERS, name)
        if len(set(v)) != len(v):
            raise ValueError(f"regularizers listed twice: {list(v)}")
        return v

    @classmethod
    def build(cls, *, model: str, dataset: str, optimizer: str, schedule: str = "constant",
              params: dict[str, Any] | None = None, data_args: dict[str, Any] | None = None,
              regularizers: tuple[str, ...] | list[str] = (), **rest: Any) -> RunConfig:
        """Resolve defaults of params and dataset arguments, then freeze."""
        return cls(
            model=model, dataset=dataset, optimizer=optimizer, schedule=schedule, regularizers=tuple(regularizers),
            params=resolve_params(model, optimizer, schedule, params or {}, regularizers),
            data_args=resolve_args(dataset, data_args or {}),
            **rest,
        )


# ---------------------------------------------------------------------------------------------
# Study file schema
# ---------------------------------------------------------------------------------------------
def _known(registry: Registry, value: str) -> str:
    if value not in registry:
        raise ValueError(registry.unknown_message(value))
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TuningSpec(Strict):
    n_trials: int = Field(20, ge=1, description="trials per arm (pruned trials count)")
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    n_startup_trials: int = Field(5, ge=0, description="TPE random start-up trials")
    pruner_startup_trials: int = Field(3, ge=0, description="trials finished before pruning starts")
    pruner_warmup_epochs: int = Field(1, ge=0, description="epochs of each trial never pruned")
    pruner_percentile: float = Field(25.0, gt=0, lt=100, description="percentile pruner: keep trials above this")
    pruner_reduction_factor: int = Field(3, ge=2, description="successive halving / hyperband: keep 1/rf per rung")
    pruner_min_epochs: int = Field(1, ge=1, description="successive halving / hyperband: first rung, in epochs")
    max_failed_trials: int = Field(3, ge=0, description="failures tolerated per arm before giving up")

    @field_validator("sampler")
    @classmethod
    def _sampler(cls, v: str) -> str:
        return _known(SAMPLERS, v)

    @field_validator("pruner")
    @classmethod
    def _pruner(cls, v: str) -> str:
        return _known(PRUNERS, v)


class EvalSpec(Strict):
    seeds: int = Field(5, ge=2, description="re-runs of the best config (>= 2 for a CI)")


class QuickSpec(Strict):
    """Budgets used with `--quick` (CI, smoke tests)."""

    n_trials: int = Field(3, ge=1)
    epochs: int = Field(3, ge=1)
    seeds: int = Field(2, ge=2)


class ArmSpec(Strict):
    """One compared configuration: its own Optuna study with the study's shared budget."""

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

    _sampler = field_validator("sampler")(lambda v: v if v is None else _known(SAMPLERS, v))
    _pruner = field_validator("pruner")(lambda v: v if v is None else _known(PRUNERS, v))
    _regs = field_validator("regularizers")(lambda v: v if v is None else [_known(REGULARIZERS, r) for r in v])

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
            _known(OPTIMIZERS, name)
        if isinstance(v, list) and len(set(v)) != len(v):
            raise ValueError(f"listed twice: {v}")
        if isinstance(v, list) and len(v) < 2:
            raise ValueError(f"a choice needs at least 2 optimizers (got {v}); name a single one as a string")
        return v

    @field_validator("params", "space", mode="before")
    @classmethod
    def _per_optimizer_tables(cls, v: Any) -> Any:
        """TOML reads `sgd.lr = ...` (unquoted) and `[arms.space.sgd]` as a table per optimizer:
        the same as the name "sgd.lr" (no hyper-parameter value or range is itself such a table)."""
        if not isinstance(v, dict):
            return v
        out: dict[str, Any] = {}
        for key, value in v.items():
            if key in OPTIMIZERS and isinstance(value, dict):
                out.update({f"{key}.{name}": x for name, x in value.items()})
            else:
                out[key] = value
        return out

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

    _optimizers = field_validator("optimizers")(lambda v: [_known(OPTIMIZERS, o) for o in v])
    _schedules = field_validator("schedules")(lambda v: v if v is None else [_known(SCHEDULES, s) for s in v])

    @field_validator("regularizers")
    @classmethod
    def _levels(cls, v: list[str | list[str]] | None) -> list[str | list[str]] | None:
        for level in v or []:
            for name in regularizer_level(level):
                _known(REGULARIZERS, name)
        return v


def regularizer_level(level: str | list[str]) -> list[str]:
    """'none' -> [], 'l2' -> ['l2'], 'l2+dropout' or ['l2', 'dropout'] -> ['l2', 'dropout']."""
    names = level if isinstance(level, list) else [p for p in level.split("+") if p]
    return [] if names in (["none"], []) else list(names)


class StudySpec(Strict):
    name: str
    description: str = ""
    model: str
    dataset: str
    schedule: str = "constant"
    regularizers: list[str] = Field(default_factory=list)  # default for arms that list none
    data_args: dict[str, Any] = Field(default_factory=dict)
    data_seed: int = 0
    epochs: int = Field(10, ge=1)
    objective: str | None = None  # default: val/acc for classification, val/mse for regression
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

    _model = field_validator("model")(lambda v: _known(MODELS, v))
    _regs = field_validator("regularizers")(lambda v: [_known(REGULARIZERS, r) for r in v])
    _dataset = field_validator("dataset")(lambda v: _known(DATASETS, v))
    _schedule = field_validator("schedule")(lambda v: _known(SCHEDULES, v))

    @field_validator("slurm", mode="before")
    @classmethod
    def _slurm(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        out = {}
        for key, value in v.items():
            try:
                out[key.replace("_", "-")] = slurm_options.check(key, value)
            except ValueError as err:  # "time: ..." names the key; "unknown key ..." does not
                where = "slurm" if str(err).startswith("unknown") else "slurm."
                raise ValueError(f"{where}{': ' if where == 'slurm' else ''}{err}") from None
        return out

    @field_validator("name")
    @classmethod
    def _study_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
            raise ValueError(f"{v!r}: use letters, digits and _ . - only")
        return v

    @model_validator(mode="after")
    def _arms(self) -> StudySpec:
        seen: set[str] = set()
        used_shared: set[str] = set()  # shared params apply to the arms that declare them
        all_arms = self.all_arms()
        if not all_arms:
            raise _FieldError("arms", "required (or a [factorial] table)")
        for i, arm in enumerate(all_arms):
            where = f"arms[{i}]" if i < len(self.arms) else f"factorial[{self.arm_name(arm)}]"
            model = arm.model or self.model
            dataset = arm.dataset or self.dataset
            schedule = arm.schedule or self.schedule
            for field, reg, value in (("model", MODELS, model), ("dataset", DATASETS, dataset),
                                      ("schedule", SCHEDULES, schedule)):
                if value not in reg:
                    raise _FieldError(f"{where}.{field}", reg.unknown_message(value))
            task = DATASETS.get(dataset).meta["task"]
            try:
                check_task(model, dataset)
            except ValueError as err:
                raise _FieldError(f"{where}.dataset", str(err)) from None
            name = self.arm_name(arm)
            if name in seen:
                raise _FieldError(f"{where}.name", f"duplicate arm name '{name}'")
            seen.add(name)
            regs = self.arm_regularizers(arm)
            each = {o: hparams_for(model, o, schedule, regs) for o in arm.optimizers}
            declared = arm_hparams(model, arm.optimizers, schedule, regs)
            owned = {k: hp for d in each.values() for k, hp in d.items()}  # shared params go where declared
            for d in each.values():
                try:
                    regularization.check(regs, declared=d, task=task)
                except ValueError as err:
                    raise _FieldError(f"{where}.regularizers", str(err)) from None
            fixed = self.arm_fixed(arm)
            space = self.arm_space(arm)
            given = [*((k, "params") for k in arm.params), *((k, "space") for k in arm.space or {})]
            for key, source in given:
                if key == OPTIMIZER_KEY:
                    raise _FieldError(f"{where}.{source}.{key}", "to tune the optimizer, list the choices as the "
                                      "arm's optimizer = [...]")
            for key, source in [*((k, "params") for k in arm.params), *((k, "space") for k in space)]:
                if key not in declared:
                    raise _FieldError(f"{where}.{source}.{key}", _undeclared(key, model, arm.optimizers, schedule,
                                                                             regs, declared))
            used_shared.update(k for k in self.params if k in owned)
            for key, value in fixed.items():
                try:
                    declared.get(key, owned.get(key)).check(value)
                except ValueError as err:
                    raise _FieldError(f"{where}.params.{key}", str(err)) from None
            if not space:
                raise _FieldError(f"{where}.space", "empty search space: nothing to tune")
            for key, d in space.items():
                try:
                    d.check_against(declared[key])
                except ValueError as err:
                    raise _FieldError(f"{where}.space.{key}", str(err)) from None
            if self.arm_sampler(arm) == "grid" and len(arm.optimizers) > 1:
                # GridSampler walks one fixed product of values; branches would repeat each point.
                raise _FieldError(f"{where}", "the grid sampler needs a fixed search space, but this arm's parameters "
                                  "depend on the chosen optimizer: use tpe or random, or one arm per optimizer")
            if self.arm_sampler(arm) == "grid":
                try:
                    points = grid_points(space, {k: declared[k].kind for k in space})
                except ValueError as err:
                    key, msg = str(err).split(": ", 1)
                    raise _FieldError(f"{where}.space.{key}", msg) from None
                if grid_size(points) < self.tuning.n_trials:
                    raise _FieldError(f"{where}", f"the grid sampler has {grid_size(points)} points but "
                                      f"tuning.n_trials = {self.tuning.n_trials}: refine the grid or lower n_trials")
            try:
                resolve_args(dataset, self.data_args)
            except (KeyError, ValueError) as err:
                raise _FieldError("data_args", str(err).split(": ", 1)[-1]) from None
        for key in self.params:
            if key not in used_shared:
                raise _FieldError(f"params.{key}", "not a hyper-parameter of any arm's model/optimizer/schedule")
        if self.factorial is not None:
            cells = all_arms[len(self.arms):]
            for key in self.factorial.space:
                if not any(key in self.arm_space(c) for c in cells):
                    raise _FieldError(f"factorial.space.{key}", "not a hyper-parameter of any factorial cell")
        objective = self.objective_metric()
        if not re.fullmatch(r"val/[a-z_0-9]+", objective):
            raise _FieldError("objective", f"{objective!r}: must be a validation metric like 'val/acc'")
        return self

    # --- derived values --------------------------------------------------------------------
    def all_arms(self) -> list[ArmSpec]:
        """Explicit arms, then one arm per factorial cell (optimizer-major order)."""
        out = list(self.arms)
        f = self.factorial
        if f is None:
            return out
        schedules = f.schedules or [None]
        levels = [regularizer_level(lv) for lv in f.regularizers] if f.regularizers is not None else [None]
        for optimizer in f.optimizers:
            for schedule in schedules:
                for regs in levels:
                    parts = [optimizer, *([schedule] if schedule else []), *(regs or [])]
                    cell = ArmSpec(name="+".join(parts), optimizer=optimizer, schedule=schedule, regularizers=regs)
                    if f.space:
                        declared = hparams_for(self.model, optimizer, schedule or self.schedule,
                                               regs if regs is not None else self.regularizers)
                        extra = {k: d for k, d in f.space.items() if k in declared}
                        cell = cell.model_copy(update={"space": {**self.arm_space(cell), **extra}})
                    out.append(cell)
        return out

    def arm_name(self, arm: ArmSpec) -> str:
        return arm.name or "|".join(arm.optimizers)

    def arm_regularizers(self, arm: ArmSpec) -> tuple[str, ...]:
        return tuple(arm.regularizers if arm.regularizers is not None else self.regularizers)

    def arm_sampler(self, arm: ArmSpec) -> str:
        return arm.sampler or self.tuning.sampler

    def arm_pruner(self, arm: ArmSpec) -> str:
        return arm.pruner or self.tuning.pruner

    def arm_execution(self, arm: ArmSpec) -> dict[str, Any]:
        """accelerator / devices / num_nodes / strategy / precision of an arm (its own, else the study's)."""
        return {k: getattr(arm, k) if getattr(arm, k) is not None else getattr(self, k) for k in EXECUTION_FIELDS}

    def arm_fixed(self, arm: ArmSpec) -> dict[str, Any]:
        """Fixed values for an arm: shared params it declares, then its own; tuned ones excluded.
        An arm choosing among optimizers keeps shared params any choice declares (each trial uses
        those its optimizer has) and drops a name only when every choice tunes it."""
        opts = arm.optimizers
        declared = set().union(*(hparams_for(arm.model or self.model, o, arm.schedule or self.schedule,
                                             self.arm_regularizers(arm)) for o in opts))
        shared = {k: v for k, v in self.params.items() if k in declared}
        space = self.arm_space(arm)
        return {k: v for k, v in {**shared, **arm.params}.items()
                if k not in space and not all(f"{o}.{k}" in space for o in opts)}

    def arm_space(self, arm: ArmSpec) -> dict[str, Dist]:
        """The arm's `space` when given; else the optimizer's, schedule's and regularizers' defaults.
        An arm choosing among optimizers tunes `optimizer` first, then each optimizer's own space
        under `<optimizer>.` names (drawn only when it is chosen); the rest is shared."""
        opts = arm.optimizers
        choice_of = {OPTIMIZER_KEY: choice(*opts)} if len(opts) > 1 else {}
        if arm.space is not None:
            return {**choice_of, **arm.space}
        return {
            **choice_of,
            **{f"{o}.{k}" if choice_of else k: d for o in opts for k, d in OPTIMIZERS.get(o).meta["space"].items()},
            **SCHEDULES.get(arm.schedule or self.schedule).meta.get("space", {}),
            **regularization.default_space(self.arm_regularizers(arm)),
        }

    def objective_metric(self) -> str:
        return self.objective or default_objective(self.model, self.dataset)

    def quick_variant(self) -> StudySpec:
        """The same study with the `[quick]` budgets, stored under its own name."""
        return self.model_copy(update={
            "name": f"{self.name}-quick",
            "epochs": min(self.epochs, self.quick.epochs),
            "tuning": self.tuning.model_copy(update={
                "n_trials": self.quick.n_trials,
                "n_startup_trials": min(self.tuning.n_startup_trials, self.quick.n_trials),
            }),
            "eval": self.eval.model_copy(update={"seeds": self.quick.seeds}),
        })


class _FieldError(ValueError):
    """Raised inside validators when the error belongs to a nested field path."""

    def __init__(self, loc: str, msg: str) -> None:
        super().__init__(f"{loc}: {msg}")


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse(data: dict[str, Any], source: str = "<study>") -> StudySpec:
    try:
        return StudySpec.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        msg = first["msg"].removeprefix("Value error, ")
        loc = _format_loc(tuple(first["loc"]))
        if first["type"] == "extra_forbidden":
            msg = "unknown key"
        elif first["type"] == "missing":
            msg = "required"
        if msg.startswith(("arms[", "params.", "data_args", "objective", "slurm")) or not loc:
            raise SpecError(f"{source}: {msg}") from None  # path already inside the message
        raise SpecError(f"{source}: {loc}: {msg}") from None


def load(path: str | Path) -> StudySpec:
    """Read and validate a TOML study file; raises SpecError with a one-line message."""
    return parse(studyfile.read(path), str(path))
