"""Hyper-parameter declarations and search-space distributions.

Every tunable or fixed knob of a model, optimizer, schedule or the training loop is declared once
as an HParam (name, type, default). Names are flat and globally unique, so a study file writes
`lr = 0.1` or `lr = {low = 1e-4, high = 1, log = true}` without saying who owns `lr`.
Search spaces are data (AlgoPerf's `tuning_search_space.json` style): a dict name -> Dist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

Kind = Literal["float", "int", "bool", "str"]


class _Required:
    """Default of an argument that has none (an import-path optimizer's required `lr`)."""

    def __repr__(self) -> str:
        return "required"


REQUIRED: Any = _Required()
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "float": (float, int),
    "int": (int,),
    "bool": (bool,),
    "str": (str,),
}


@dataclass(frozen=True)
class HParam:
    """One hyper-parameter.

    Args:
        name: flat, globally unique name (also the Optuna parameter and MLflow param name).
        kind: value type; ints are accepted for floats.
        default: value used when neither the study file nor the search space sets it.
        help: one line for `bench list`.
        choices: allowed values for `str` parameters.
        low / high: inclusive bounds checked on every value (fixed or sampled).
        nullable: None is a valid value (arguments whose default is None, e.g. torch's `foreach`).
    """

    name: str
    kind: Kind
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    nullable: bool = False

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def check(self, value: Any) -> Any:
        """Return the value coerced to this parameter's type, or raise ValueError (one line)."""
        if value is None and self.nullable:
            return None
        ok = _PY_TYPES[self.kind]
        if isinstance(value, bool) and self.kind != "bool" or not isinstance(value, ok):
            raise ValueError(f"expected {self.kind}, got {value!r}")
        if self.kind == "float":
            value = float(value)
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{value!r} not in {list(self.choices)}")
        if self.low is not None and value < self.low or self.high is not None and value > self.high:
            raise ValueError(f"{value!r}: {self.bounds()}")
        return value

    def bounds(self) -> str:
        """'must be >= 0', 'must be <= 1' or 'must be in [0, 1]' (the declared inclusive bounds)."""
        if self.low is not None and self.high is not None:
            return f"must be in [{self.low:g}, {self.high:g}]"
        return f"must be >= {self.low:g}" if self.low is not None else f"must be <= {self.high:g}"


class Dist(BaseModel):
    """A search-space entry: a range (`low`, `high`, `log`, `step`) or a list of `choices`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None

    @model_validator(mode="after")
    def _shape(self) -> Dist:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("choices is empty")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs both low and high (or give choices)")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0 (got {self.low:g})")
        if self.log and self.step is not None:
            raise ValueError("step and log cannot be combined")
        return self

    def check_against(self, hp: HParam) -> None:
        """Raise ValueError when this distribution cannot produce valid values of `hp`."""
        if self.choices is not None:
            for choice in self.choices:
                hp.check(choice)
            return
        if hp.kind not in ("float", "int"):
            raise ValueError(f"{hp.name} is {hp.kind}: give choices, not a range")
        if hp.kind == "int" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ValueError(f"{hp.name} is int: low and high must be integers")
        hp.check(int(self.low) if hp.kind == "int" else self.low)
        hp.check(int(self.high) if hp.kind == "int" else self.high)

    def suggest(self, trial: Any, name: str, kind: Kind) -> Any:
        """Draw this parameter from an Optuna trial."""
        if self.choices is not None:
            return trial.suggest_categorical(name, list(self.choices))
        if kind == "int":
            step = int(self.step) if self.step else 1
            return trial.suggest_int(name, int(self.low), int(self.high), step=step, log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def describe(self) -> str:
        if self.choices is not None:
            return "{" + ", ".join(map(str, self.choices)) + "}"
        scale = " log" if self.log else ""
        step = f" step {self.step:g}" if self.step else ""
        return f"[{self.low:g}, {self.high:g}]{scale}{step}"


def dist(low: float, high: float, *, log: bool = False, step: float | None = None) -> Dist:
    return Dist(low=low, high=high, log=log, step=step)


def choice(*values: Any) -> Dist:
    return Dist(choices=tuple(values))
