"""A run's budget as a value: `epochs | steps | samples | seconds`, and its evaluation cadence.

Exactly one kind is given per level (study, arm; the arm's wins); with none given a run gets
DEFAULT_EPOCHS epochs. The units:

  epochs   passes over the training set
  steps    optimizer steps (a full-batch optimizer takes one per epoch, so 200 steps are 200
           epochs of BGD and 200 mini-batches of SGD: the equal-steps comparison)
  samples  training examples seen (a closure optimizer's re-evaluations of the loss count)
  seconds  training time only, evaluation excluded (AlgoPerf's wall-clock budget); the run stops
           at the first optimizer step boundary after the budget is spent

`eval_every` is in the budget's own unit: epochs (whole numbers) for an epochs budget, steps,
samples or training seconds otherwise. Default: every epoch for an epochs budget (the suite's
behaviour before budgets were values), else DEFAULT_POINTS evaluations over the budget. A run is
evaluated at the first step boundary at or after each multiple of eval_every, and always at the end
of its budget. Evaluation point k (reported to Optuna as step k, logged to MLflow as step k) is the
number of whole intervals spent, k = floor(counter / eval_every), and ceil(budget / eval_every) at
the end of the budget: at point k every trial of an arm has spent the same share of its budget,
whatever its batch size or speed, and with the default epoch cadence k is the epoch number.

Metadata only (no torch): the schema, the arms stage and `train.fit` all read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["epochs", "steps", "samples", "seconds"]
KINDS: tuple[str, ...] = ("epochs", "steps", "samples", "seconds")
DEFAULT_EPOCHS = 10
DEFAULT_POINTS = 20  # evaluations over a steps / samples / seconds budget without eval_every
UNITS = {"epochs": "epochs", "steps": "optimizer steps", "samples": "training samples", "seconds": "training seconds"}


@dataclass(frozen=True)
class Budget:
    kind: str
    value: float
    eval_every: float

    @classmethod
    def of(cls, values: dict[str, Any], eval_every: float | None = None) -> Budget:
        """The budget among `values` (kind -> value or None; none given: DEFAULT_EPOCHS epochs).
        Raises ValueError '<kind>: ...' for several kinds or an impossible cadence."""
        given = [k for k in KINDS if values.get(k) is not None]
        if len(given) > 1:
            raise ValueError(f"{given[1]}: one budget per level, but {given[0]} = {values[given[0]]} is set too")
        kind = given[0] if given else "epochs"
        value = values[kind] if given else DEFAULT_EPOCHS
        if eval_every is None:
            eval_every = 1 if kind == "epochs" else default_every(kind, value)
        elif kind != "seconds" and eval_every != int(eval_every):
            article = "an" if kind[0] in "aeiou" else "a"
            raise ValueError(f"eval_every: {article} {kind} budget evaluates every whole number of {kind} "
                             f"(got {eval_every:g})" + ("; use a steps budget to evaluate within epochs"
                                                       if kind == "epochs" else ""))
        if value < eval_every:
            raise ValueError(f"{kind}: {value:g} is less than one evaluation interval (eval_every = {eval_every:g})")
        return cls(kind, float(value), float(eval_every))

    @property
    def points(self) -> int:
        """Evaluation points of a whole run (the last one at the end of the budget)."""
        return math.ceil(self.value / self.eval_every - 1e-9)

    @property
    def fixed_reports(self) -> bool:
        """Whether every run reports at the same points: not under a seconds budget, where a slow
        step (or a slow machine) skips points and the number of reports depends on the speed."""
        return self.kind != "seconds"

    def describe(self) -> str:
        every = "every epoch" if self.kind == "epochs" and self.eval_every == 1 else \
            f"every {self.eval_every:g} {UNITS[self.kind]}"
        return f"{self.value:g} {UNITS[self.kind]}, evaluated {every}"

    def params(self) -> dict[str, Any]:
        """MLflow params of a run or arm: the kind, the value under its own name, the cadence."""
        value: Any = self.value if self.kind == "seconds" else int(self.value)
        every: Any = self.eval_every if self.kind == "seconds" else int(self.eval_every)
        return {"budget": self.kind, self.kind: value, "eval_every": every}


def default_every(kind: str, value: float) -> float:
    every = value / DEFAULT_POINTS
    return every if kind == "seconds" else float(max(1, math.ceil(every)))
