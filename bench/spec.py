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
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.data import DATASETS, resolve_args
from bench.hparams import Dist, HParam
from bench.models import MODELS
from bench.optim import OPTIMIZERS, SCHEDULES
from bench.registry import Registry
from bench.tuning.samplers import PRUNERS, SAMPLERS

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


class SpecError(ValueError):
    """A study-file problem; str() is the one-line message the CLI prints before exiting 2."""


def direction_of(metric: str) -> Literal["minimize", "maximize"]:
    return "maximize" if metric.rsplit("/", 1)[-1] in MAXIMIZED_METRICS else "minimize"


def hparams_for(model: str, optimizer: str, schedule: str) -> dict[str, HParam]:
    """Every hyper-parameter a run of this (model, optimizer, schedule) accepts, by name."""
    owned: list[HParam] = [
        *MODELS.get(model).meta["hparams"],
        *OPTIMIZERS.get(optimizer).meta["hparams"],
        *SCHEDULES.get(schedule).meta["hparams"],
        *TRAINING_HPARAMS,
    ]
    if OPTIMIZERS.get(optimizer).meta["full_batch"]:
        owned = [hp for hp in owned if hp.name != "batch_size"]
    return {hp.name: hp for hp in owned}


def resolve_params(
    model: str, optimizer: str, schedule: str, given: dict[str, Any]
) -> dict[str, Any]:
    """Fill defaults for every declared hyper-parameter; reject unknown names and bad values."""
    declared = hparams_for(model, optimizer, schedule)
    for name, value in given.items():
        if name not in declared:
            raise KeyError(
                f"{name}: not a hyper-parameter of {model}/{optimizer}/{schedule} "
                f"(known: {', '.join(sorted(declared))})"
            )
    out = {}
    for name, hp in declared.items():
        try:
            out[name] = hp.check(given[name]) if name in given else hp.default
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
    return out


class RunConfig(BaseModel):
    """Everything one training run depends on; frozen, JSON-serializable and hashed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    dataset: str
    optimizer: str
    schedule: str = "constant"
    params: dict[str, Any] = Field(default_factory=dict)  # resolved hyper-parameters
    data_args: dict[str, Any] = Field(default_factory=dict)
    data_seed: int = 0
    seed: int = 0
    epochs: int = Field(10, ge=1)
    objective: str = "val/acc"
    evaluate_test: bool = False  # eval runs also score the held-out test split at the end
    accelerator: str = "auto"
    devices: int = 1
    progress_bar: bool = False

    def hash(self) -> str:
        """Short content hash: equal configs (same resolved values) get the same hash."""
        payload = json.dumps(self.model_dump(), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    @classmethod
    def build(cls, *, model: str, dataset: str, optimizer: str, schedule: str = "constant",
              params: dict[str, Any] | None = None, data_args: dict[str, Any] | None = None,
              **rest: Any) -> RunConfig:
        """Resolve defaults of params and dataset arguments, then freeze."""
        return cls(
            model=model, dataset=dataset, optimizer=optimizer, schedule=schedule,
            params=resolve_params(model, optimizer, schedule, params or {}),
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
    optimizer: str
    model: str | None = None
    dataset: str | None = None
    schedule: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)  # fixed values
    space: dict[str, Dist] | None = None  # replaces the optimizer's default space when given

    _optimizer = field_validator("optimizer")(lambda v: _known(OPTIMIZERS, v))

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9_.+-]+", v):
            raise ValueError(f"{v!r}: use letters, digits and _ . + - only")
        return v


class StudySpec(Strict):
    name: str
    description: str = ""
    model: str
    dataset: str
    schedule: str = "constant"
    data_args: dict[str, Any] = Field(default_factory=dict)
    data_seed: int = 0
    epochs: int = Field(10, ge=1)
    objective: str | None = None  # default: val/acc for classification, val/mse for regression
    params: dict[str, Any] = Field(default_factory=dict)  # fixed values shared by every arm
    accelerator: str = "auto"
    tuning: TuningSpec = TuningSpec()
    eval: EvalSpec = EvalSpec()
    quick: QuickSpec = QuickSpec()
    arms: list[ArmSpec] = Field(min_length=1)

    _model = field_validator("model")(lambda v: _known(MODELS, v))
    _dataset = field_validator("dataset")(lambda v: _known(DATASETS, v))
    _schedule = field_validator("schedule")(lambda v: _known(SCHEDULES, v))

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
        for i, arm in enumerate(self.arms):
            where = f"arms[{i}]"
            model = arm.model or self.model
            dataset = arm.dataset or self.dataset
            schedule = arm.schedule or self.schedule
            for field, reg, value in (("model", MODELS, model), ("dataset", DATASETS, dataset),
                                      ("schedule", SCHEDULES, schedule)):
                if value not in reg:
                    raise _FieldError(f"{where}.{field}", reg.unknown_message(value))
            task = DATASETS.get(dataset).meta["task"]
            if task not in MODELS.get(model).meta["tasks"]:
                raise _FieldError(f"{where}.dataset", f"model '{model}' cannot train on {task} data '{dataset}'")
            name = self.arm_name(arm)
            if name in seen:
                raise _FieldError(f"{where}.name", f"duplicate arm name '{name}'")
            seen.add(name)
            declared = hparams_for(model, arm.optimizer, schedule)
            fixed = self.arm_fixed(arm)
            space = self.arm_space(arm)
            for key, source in [*((k, "params") for k in arm.params), *((k, "space") for k in space)]:
                if key not in declared:
                    raise _FieldError(f"{where}.{source}.{key}", f"not a hyper-parameter of {model}/{arm.optimizer}/"
                                      f"{schedule} (known: {', '.join(sorted(declared))})")
            used_shared.update(k for k in self.params if k in declared)
            for key, value in fixed.items():
                try:
                    declared[key].check(value)
                except ValueError as err:
                    raise _FieldError(f"{where}.params.{key}", str(err)) from None
            if not space:
                raise _FieldError(f"{where}.space", "empty search space: nothing to tune")
            for key, d in space.items():
                try:
                    d.check_against(declared[key])
                except ValueError as err:
                    raise _FieldError(f"{where}.space.{key}", str(err)) from None
            try:
                resolve_args(dataset, self.data_args)
            except (KeyError, ValueError) as err:
                raise _FieldError("data_args", str(err).split(": ", 1)[-1]) from None
        for key in self.params:
            if key not in used_shared:
                raise _FieldError(f"params.{key}", "not a hyper-parameter of any arm's model/optimizer/schedule")
        objective = self.objective_metric()
        if not re.fullmatch(r"val/[a-z_0-9]+", objective):
            raise _FieldError("objective", f"{objective!r}: must be a validation metric like 'val/acc'")
        return self

    # --- derived values --------------------------------------------------------------------
    def arm_name(self, arm: ArmSpec) -> str:
        return arm.name or arm.optimizer

    def arm_fixed(self, arm: ArmSpec) -> dict[str, Any]:
        """Fixed values for an arm: shared params it declares, then its own; tuned ones excluded."""
        declared = hparams_for(arm.model or self.model, arm.optimizer, arm.schedule or self.schedule)
        shared = {k: v for k, v in self.params.items() if k in declared}
        space = self.arm_space(arm)
        return {k: v for k, v in {**shared, **arm.params}.items() if k not in space}

    def arm_space(self, arm: ArmSpec) -> dict[str, Dist]:
        return dict(arm.space) if arm.space is not None else dict(OPTIMIZERS.get(arm.optimizer).meta["space"])

    def objective_metric(self) -> str:
        if self.objective:
            return self.objective
        return "val/mse" if DATASETS.get(self.dataset).meta["task"] == "regression" else "val/acc"

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
        if msg.startswith(("arms[", "params.", "data_args", "objective")) or not loc:
            raise SpecError(f"{source}: {msg}") from None  # path already inside the message
        raise SpecError(f"{source}: {loc}: {msg}") from None


def load(path: str | Path) -> StudySpec:
    """Read and validate a TOML study file; raises SpecError with a one-line message."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: no such study file") from None
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path}: not valid TOML: {err}") from None
    return parse(data, str(path))
