"""Arms: a validated study file resolved into the cells it compares, and the checks that need them.

`expand` lists the explicit arms, then one arm per factorial cell (optimizer-major order);
`arms` resolves each into an Arm (model, dataset, optimizer(s), schedule, regularizers, fixed
values, search space, sampler, pruner, execution); `validate` checks what only resolved arms can
say (hyper-parameters nobody owns, spaces of the wrong type, tasks a model cannot train on,
samplers a space does not suit) and raises FieldError naming the study-file field. Metadata only:
no torch, Lightning or Optuna.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

from bench.data import DATASETS, resolve_args
from bench.hparams import Dist, choice
from bench.models import MODELS
from bench.routing import OPTIMIZER_KEY, ArmParams
from bench.spec.budget import Budget
from bench.spec.config import EXECUTION_FIELDS, RunConfig, check_task
from bench.spec.schema import ArmSpec, StudySpec, regularizer_level
from bench.tuning.catalog import PRUNERS, SAMPLERS


class FieldError(ValueError):
    """A problem at a study-file field path; str() is 'path: message'."""

    def __init__(self, loc: str, msg: str) -> None:
        super().__init__(f"{loc}: {msg}")


@dataclass(frozen=True)
class Arm:
    """One compared cell of a study, fully resolved."""

    name: str
    model: str
    dataset: str
    optimizer: str  # registry name or import path; for an arm that tunes it, the choices joined by '|'
    schedule: str
    fixed: dict[str, Any]
    space: dict[str, Dist]
    regularizers: tuple[str, ...] = ()
    sampler: str = "tpe"
    pruner: str = "median"
    execution: dict[str, Any] = field(default_factory=dict)  # accelerator, devices, strategy, ...
    choices: tuple[str, ...] = ()  # the optimizers each trial chooses among (`optimizer` parameter)
    budget: Budget = field(default_factory=lambda: Budget.of({}))  # every run's budget and cadence

    @property
    def optimizers(self) -> tuple[str, ...]:
        return self.choices or (self.optimizer,)

    @functools.cached_property
    def params(self) -> ArmParams:
        return ArmParams(self.model, self.optimizers, self.schedule, self.regularizers)

    def config(self, spec: StudySpec, sampled: dict[str, Any], *, seed: int, evaluate_test: bool) -> RunConfig:
        """The run of one trial (or of the best trial's params): its chosen optimizer, with the
        values that apply to it un-prefixed."""
        optimizer = sampled.get(OPTIMIZER_KEY, self.optimizer)
        b = self.budget
        budget = {b.kind: b.value if b.kind == "seconds" else int(b.value), "eval_every": b.eval_every}
        return RunConfig.build(
            model=self.model, dataset=self.dataset, optimizer=optimizer, schedule=self.schedule,
            regularizers=self.regularizers, params=self.params.chosen({**self.fixed, **sampled}, optimizer),
            data_args=spec.data_args, data_seed=spec.data_seed,
            seed=seed, **budget, objective=spec.objective_metric(),
            evaluate_test=evaluate_test, **self.execution,
        )

    def tags(self) -> dict[str, str]:
        sources = [self.params.each[o].sources() for o in self.optimizers]
        return {"arm": self.name, "model": self.model, "dataset": self.dataset,
                "optimizer": self.optimizer, "schedule": self.schedule,
                "regularizers": "+".join(self.regularizers) or "none",
                "strategy": self.execution.get("strategy", "auto"), "devices": str(self.execution.get("devices", 1)),
                **sources[0], "source.optimizer": " | ".join(s["source.optimizer"] for s in sources),
                "source.dataset": DATASETS.get(self.dataset).source.describe(),
                # runs of an arm that tunes the optimizer override `optimizer` with the one they used
                **({"optimizer_choice": self.optimizer} if self.choices else {})}

    def identity(self) -> dict[str, str]:
        """What the arm compares, as its parent run's params (the compare view's rows)."""
        tags = self.tags()
        return {key: tags[key] for key in ("model", "dataset", "optimizer", "schedule", "regularizers")}

    def kinds(self) -> dict[str, str]:
        declared = self.params.declared()
        return {name: declared[name].kind for name in self.space}


def expand(spec: StudySpec) -> list[tuple[str, ArmSpec]]:
    """(study-file location, arm): explicit arms, then one arm per factorial cell (optimizer-major)."""
    out = [(f"arms[{i}]", a) for i, a in enumerate(spec.arms)]
    f = spec.factorial
    if f is None:
        return out
    levels = [regularizer_level(lv) for lv in f.regularizers] if f.regularizers is not None else [None]
    for optimizer in f.optimizers:
        for schedule in f.schedules or [None]:
            for regs in levels:
                name = "+".join([optimizer, *([schedule] if schedule else []), *(regs or [])])
                cell = ArmSpec(name=name, optimizer=optimizer, schedule=schedule, regularizers=regs)
                if f.space:
                    base = _params(spec, cell)
                    extra = {k: d for k, d in f.space.items() if k in base.declared()}
                    cell = cell.model_copy(update={"space": {**base.default_space(), **extra}})
                out.append((f"factorial[{name}]", cell))
    return out


def _params(spec: StudySpec, a: ArmSpec) -> ArmParams:
    regs = a.regularizers if a.regularizers is not None else spec.regularizers
    return ArmParams(a.model or spec.model, a.optimizers, a.schedule or spec.schedule, regs)


def _fixed(spec: StudySpec, a: ArmSpec, params: ArmParams, space: dict[str, Dist]) -> dict[str, Any]:
    """Fixed values for an arm: shared params it declares, then its own; tuned ones excluded.
    An arm choosing among optimizers keeps shared params any choice declares (each trial uses
    those its optimizer has) and drops a name only when every choice tunes it."""
    shared = {k: v for k, v in spec.params.items() if params.owned(k) is not None}
    return {k: v for k, v in {**shared, **a.params}.items()
            if k not in space and not all(f"{o}.{k}" in space for o in params.optimizers)}


def arm_budget(spec: StudySpec, a: ArmSpec, where: str = "arm") -> Budget:
    """The arm's budget: its own when it sets one (with its own eval_every), else the study's. The
    study's eval_every applies to an arm of the same budget kind only (it is in that kind's unit).
    Raises FieldError naming the field."""
    try:
        study = spec.budget()
    except ValueError as err:
        raise FieldError(*str(err).split(": ", 1)) from None
    own = a.budget_values()
    if not own:
        if a.eval_every is None:
            return study
        own = {study.kind: study.value}
    elif a.eval_every is None and study.kind in own and spec.eval_every is not None:
        return _budget(own, spec.eval_every, where)
    return _budget(own, a.eval_every, where)


def _budget(values: dict[str, Any], eval_every: float | None, where: str) -> Budget:
    try:
        return Budget.of(values, eval_every)
    except ValueError as err:
        key, msg = str(err).split(": ", 1)
        raise FieldError(f"{where}.{key}", msg) from None


def resolve(spec: StudySpec, a: ArmSpec, where: str = "arm") -> Arm:
    """One arm of `expand`, resolved: its space is the arm's `space` when given (a choice arm
    draws `optimizer` first), else the default spaces of its components."""
    params = _params(spec, a)
    if a.space is None:
        space = params.default_space()
    else:
        space = {**({OPTIMIZER_KEY: choice(*a.optimizers)} if params.is_choice else {}), **a.space}
    execution = {k: getattr(a, k) if getattr(a, k) is not None else getattr(spec, k) for k in EXECUTION_FIELDS}
    return Arm(a.name or "|".join(a.optimizers), a.model or spec.model, a.dataset or spec.dataset,
               "|".join(a.optimizers), a.schedule or spec.schedule, _fixed(spec, a, params, space), space,
               tuple(a.regularizers if a.regularizers is not None else spec.regularizers),
               a.sampler or spec.tuning.sampler, a.pruner or spec.tuning.pruner, execution,
               a.optimizers if params.is_choice else (), arm_budget(spec, a, where))


def arms(spec: StudySpec) -> list[Arm]:
    """Every arm of a study (see `expand`), resolved."""
    return [resolve(spec, a) for _, a in expand(spec)]


def validate(spec: StudySpec) -> None:
    """Raise FieldError for the first problem only resolved arms show."""
    try:
        cells = expand(spec)
    except ValueError as err:  # a factorial cell whose components cannot share a run
        raise FieldError("factorial", str(err)) from None
    if not cells:
        raise FieldError("arms", "required (or a [factorial] table)")
    seen: set[str] = set()
    used_shared: set[str] = set()  # shared params apply to the arms that declare them
    try:
        spec.budget()
    except ValueError as err:  # several kinds at the study level, or a cadence longer than the budget
        raise FieldError(*str(err).split(": ", 1)) from None
    for where, a in cells:
        try:
            arm = resolve(spec, a, where)
            declared = arm.params.declared()
        except FieldError:
            raise
        except ValueError as err:  # e.g. a name that two components of one run both declare
            raise FieldError(where, str(err)) from None
        pruner = PRUNERS.get(arm.pruner)
        if pruner.fixed_reports and not arm.budget.fixed_reports:
            raise FieldError(f"{where}.pruner" if a.pruner else "tuning.pruner", (
                f"{arm.pruner} needs every trial to report at the same evaluation points, but arm '{arm.name}' "
                f"has a budget of {arm.budget.describe()}, whose points depend on the machine's speed: "
                "use median, percentile or none"))
        if arm.name in seen:
            raise FieldError(f"{where}.name", f"duplicate arm name '{arm.name}'")
        seen.add(arm.name)
        task, model = DATASETS.get(arm.dataset).task, MODELS.get(arm.model)
        try:
            check_task(arm.model, arm.dataset)
        except ValueError as err:
            raise FieldError(f"{where}.dataset", str(err)) from None
        try:
            for owners in arm.params.each.values():
                owners.check_regularizers(task)
        except ValueError as err:
            raise FieldError(f"{where}.regularizers", str(err)) from None
        for optimizer in arm.params.each.values():
            if optimizer.optimizer.closure and model.own_steps:
                raise FieldError(f"{where}.optimizer", f"{optimizer.optimizer.name} re-evaluates the loss in its step "
                                 f"(a closure), but model '{arm.model}' runs its optimizer steps itself")
        for key, source in [*((k, "params") for k in a.params), *((k, "space") for k in a.space or {})]:
            if key == OPTIMIZER_KEY:
                raise FieldError(f"{where}.{source}.{key}", "to tune the optimizer, list the choices as the arm's "
                                 "optimizer = [...]")
            if key not in declared:
                raise FieldError(f"{where}.{source}.{key}", arm.params.why_undeclared(key))
        used_shared.update(k for k in spec.params if arm.params.owned(k) is not None)
        for key, value in arm.fixed.items():
            try:
                (declared.get(key) or arm.params.owned(key)).check(value)
            except ValueError as err:
                raise FieldError(f"{where}.params.{key}", str(err)) from None
        _check_required(where, arm)
        if not arm.space:
            raise FieldError(f"{where}.space", "empty search space: nothing to tune")
        for key, d in arm.space.items():
            try:
                d.check_against(declared[key])
            except ValueError as err:
                raise FieldError(f"{where}.space.{key}", str(err)) from None
        check = SAMPLERS.get(arm.sampler).check
        if check is not None:
            try:
                check(arm.space, arm.kinds(), spec.tuning.n_trials, arm.params.is_choice)
            except ValueError as err:
                key, sep, msg = str(err).partition(": ")
                raise FieldError(f"{where}.space.{key}" if sep and key in arm.space else where,
                                 msg if sep and key in arm.space else str(err)) from None
        try:
            resolve_args(arm.dataset, spec.data_args)
        except ValueError as err:
            raise FieldError("data_args", str(err).split(": ", 1)[-1]) from None
    for key in spec.params:
        if key not in used_shared:
            raise FieldError(f"params.{key}", "not a hyper-parameter of any arm's model/optimizer/schedule")
    if spec.factorial is not None:
        cells_space = [a.space or {} for where, a in cells if where.startswith("factorial[")]
        for key in spec.factorial.space:
            if not any(key in s for s in cells_space):
                raise FieldError(f"factorial.space.{key}", "not a hyper-parameter of any factorial cell")
    objective = spec.objective_metric()
    if not re.fullmatch(r"val/[a-z_0-9]+", objective):
        raise FieldError("objective", f"{objective!r}: must be a validation metric like 'val/acc'")


def _check_required(where: str, arm: Arm) -> None:
    """An argument without a default (an import-path optimizer's required `lr`) is fixed or tuned."""
    for optimizer, owners in arm.params.each.items():
        for name, hp in owners.declared().items():
            keys = {name, f"{optimizer}.{name}"} if arm.params.is_choice else {name}
            if hp.required and not keys & (set(arm.fixed) | set(arm.space)):
                raise FieldError(f"{where}.params.{name}", f"required by {optimizer} (it has no default): "
                                 "fix it in params or tune it in space")
