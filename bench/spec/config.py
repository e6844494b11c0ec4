"""The frozen configuration of one training run (RunConfig), and how runs are scored.

A RunConfig is the last stage of a study file (schema -> arms -> run configs) and the input of
`train.fit`: every hyper-parameter resolved (defaults filled in, so each run records all of them),
JSON-serializable and hashed. Building one raises ValueError with a one-line message.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.data import DATASETS, resolve_args
from bench.models import MODELS
from bench.optim import REGULARIZERS
from bench.routing import Owners
from bench.spec.budget import DEFAULT_EPOCHS, KINDS, Budget

Strategy = Literal["auto", "ddp", "ddp_spawn", "fsdp", "deepspeed"]
Precision = Literal["32-true", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true"]
EXECUTION_FIELDS = ("accelerator", "devices", "num_nodes", "strategy", "precision")
# Lower is better unless the metric's last path part is listed here.
MAXIMIZED_METRICS = {"acc", "r2", "seq_acc", "token_acc"}


def default_objective(model: str, dataset: str) -> str:
    """The model's natural validation metric (e.g. val/mmd for the GAN), else by dataset task."""
    declared = MODELS.get(model).objective
    if declared:
        return declared
    return "val/mse" if DATASETS.get(dataset).task == "regression" else "val/acc"


def check_task(model: str, dataset: str) -> None:
    """Raise ValueError when the model cannot train on the dataset's task (classification, ...)."""
    task = DATASETS.get(dataset).task
    if task not in MODELS.get(model).tasks:
        raise ValueError(f"model '{model}' cannot train on {task} data '{dataset}'")


def direction_of(metric: str) -> Literal["minimize", "maximize"]:
    return "maximize" if metric.rsplit("/", 1)[-1] in MAXIMIZED_METRICS else "minimize"


def _strategy_available(strategy: str) -> str:
    if strategy == "deepspeed":
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise ValueError("'deepspeed' needs the deepspeed package (pip install deepspeed)")
    return strategy


_BOUNDS = {"greater_than_equal": ("ge", ">="), "less_than_equal": ("le", "<="), "greater_than": ("gt", ">"),
           "less_than": ("lt", "<")}


def error_line(err: ValidationError) -> tuple[str, str]:
    """(field path, message) of a pydantic error's first problem, e.g. ('tuning.n_trials', 'must be >= 1')."""
    first = err.errors()[0]
    loc = ""
    for part in first["loc"]:
        loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "missing":
        msg = "required"
    elif first["type"] in _BOUNDS:
        key, op = _BOUNDS[first["type"]]
        msg = f"must be {op} {first['ctx'][key]}"
    return loc, msg


class RunConfig(BaseModel):
    """Everything one training run depends on; frozen, JSON-serializable and hashed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    dataset: str
    optimizer: str  # a registry name or an import path (torch.optim.AdamW)
    schedule: str = "constant"
    regularizers: tuple[str, ...] = ()  # names in REGULARIZERS, applied together
    params: dict[str, Any] = Field(default_factory=dict)  # resolved hyper-parameters
    data_args: dict[str, Any] = Field(default_factory=dict)
    data_seed: int = 0
    seed: int = 0
    # The budget: exactly one of these (none given: DEFAULT_EPOCHS epochs); see bench/spec/budget.py.
    epochs: int | None = Field(None, ge=1)
    steps: int | None = Field(None, ge=1)
    samples: int | None = Field(None, ge=1)
    seconds: float | None = Field(None, gt=0)
    eval_every: float | None = Field(None, gt=0)  # in the budget's unit; default: every epoch / 20 points
    objective: str = "val/acc"
    evaluate_test: bool = False  # eval runs also score the held-out test split at the end
    accelerator: str = "auto"
    devices: int = Field(1, ge=1)  # processes (CPU) or GPUs per node; > 1 trains in its own process group
    num_nodes: int = Field(1, ge=1)
    strategy: Strategy = "auto"
    precision: Precision = "32-true"
    progress_bar: bool = False

    @model_validator(mode="before")
    @classmethod
    def _default_budget(cls, data: Any) -> Any:
        if isinstance(data, dict) and all(data.get(k) is None for k in KINDS):
            return {**data, "epochs": DEFAULT_EPOCHS}
        return data

    @model_validator(mode="after")
    def _one_budget(self) -> RunConfig:
        self.budget  # raises ValueError naming the field  # noqa: B018
        return self

    @property
    def budget(self) -> Budget:
        return Budget.of({k: getattr(self, k) for k in KINDS}, self.eval_every)

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    def owners(self) -> Owners:
        return Owners.of(self.model, self.optimizer, self.schedule, self.regularizers)

    def hash(self) -> str:
        """Short content hash: equal configs (same resolved values) get the same hash."""
        # budget fields not set are left out: configs from before budgets were values keep their hash
        dump = {k: v for k, v in self.model_dump().items() if v is not None or k not in (*KINDS, "eval_every")}
        payload = json.dumps(dump, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def source_tags(self) -> dict[str, str]:
        """Where each component comes from (built-in, plug-in package + version, import path)."""
        return {**self.owners().sources(), "source.dataset": DATASETS.get(self.dataset).source.describe()}

    _strategy = field_validator("strategy")(lambda v: _strategy_available(v))

    @field_validator("regularizers")
    @classmethod
    def _regularizers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            REGULARIZERS.get(name)
        if len(set(v)) != len(v):
            raise ValueError(f"regularizers listed twice: {list(v)}")
        return v

    @classmethod
    def build(cls, *, model: str, dataset: str, optimizer: str, schedule: str = "constant",
              params: dict[str, Any] | None = None, data_args: dict[str, Any] | None = None,
              regularizers: tuple[str, ...] | list[str] = (), **rest: Any) -> RunConfig:
        """Resolve defaults of params and dataset arguments, then freeze. Raises ValueError (one line)."""
        try:
            return cls(
                model=model, dataset=dataset, optimizer=optimizer, schedule=schedule, regularizers=tuple(regularizers),
                params=Owners.of(model, optimizer, schedule, regularizers).resolve(params or {}),
                data_args=resolve_args(dataset, data_args or {}),
                **rest,
            )
        except ValidationError as err:
            loc, msg = error_line(err)
            raise ValueError(f"{loc}: {msg}" if loc else msg) from None
