"""Hyper-parameter routing: which component owns each name, and what each one receives.

Names are flat: a study file writes `lr = 0.1` or a range for it without saying who owns it, and
Optuna parameters, MLflow params and study-file keys are the same strings. This module is the one
place that knows the owners:
  * `Owners` — the components of one run (model, optimizer, schedule, regularizers, training
    loop): the names they declare (`declared`), the run's values with every default filled in
    (`resolve`: nothing is left to a library default silently), and per-owner keyword arguments
    (`split`, which `train.fit` calls once per run);
  * `ArmParams` — the names an arm may use when it tunes the optimizer too (`optimizer = [...]`):
    shared names, and each choice's own under `<optimizer>.<name>` (`torch.optim.AdamW.betas.0`:
    the longest optimizer name of the arm that prefixes a key owns it).
Metadata only: nothing here imports torch.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bench.hparams import Dist, HParam, choice
from bench.models import MODELS
from bench.optim import OPTIMIZERS, REGULARIZERS, SCHEDULES
from bench.registry import ModelInfo, OptimizerInfo, RegularizerInfo, ScheduleInfo

# Knobs of the training loop itself (owned by neither model nor optimizer).
TRAINING_HPARAMS = (
    HParam("batch_size", "int", 64, "examples per mini-batch (ignored by full-batch optimizers)", low=1),
    HParam(
        "bgd_max_chunk", "int", 16384,
        "memory cap for full-batch GD: examples per forward pass; larger sets accumulate chunks", low=1,
    ),
)
OPTIMIZER_KEY = "optimizer"  # the categorical parameter of an arm that chooses among optimizers


@dataclass(frozen=True)
class Routed:
    """A run's resolved values per owner, ready to pass to each factory."""

    model: dict[str, Any]
    optimizer: dict[str, Any]
    schedule: dict[str, Any]
    regularizers: tuple[tuple[RegularizerInfo, dict[str, Any]], ...]
    training: dict[str, Any]


@dataclass(frozen=True)
class Owners:
    """The components of one run, by their registry entries."""

    model: ModelInfo
    optimizer: OptimizerInfo
    schedule: ScheduleInfo
    regularizers: tuple[RegularizerInfo, ...] = ()

    @classmethod
    def of(cls, model: str, optimizer: str, schedule: str = "constant", regularizers: Iterable[str] = ()) -> Owners:
        return _owners(model, optimizer, schedule, tuple(regularizers))

    def label(self) -> str:
        return "/".join([self.model.name, self.optimizer.name, self.schedule.name,
                         *(r.name for r in self.regularizers)])

    @functools.cached_property
    def _table(self) -> dict[str, tuple[str, HParam]]:
        """name -> (owner, declaration). A name declared by two owners is refused: the run could not
        say which one a value is for (e.g. an import-path optimizer's own `decoupled_weight_decay`
        next to the decoupled_wd regularizer's)."""
        training = [hp for hp in TRAINING_HPARAMS if not (self.optimizer.full_batch and hp.name == "batch_size")]
        groups = [(self.model.name, self.model.hparams), (self.optimizer.name, self.optimizer.hparams),
                  (self.schedule.name, self.schedule.hparams), *((r.name, r.hparams) for r in self.regularizers),
                  ("the training loop", training)]
        table: dict[str, tuple[str, HParam]] = {}
        for owner, hparams in groups:
            for hp in hparams:
                if hp.name in table and table[hp.name][1] != hp:
                    raise ValueError(f"'{hp.name}' is a hyper-parameter of both {table[hp.name][0]} and {owner}: "
                                     "the two cannot share a run")
                table.setdefault(hp.name, (owner, hp))
        return table

    def declared(self) -> dict[str, HParam]:
        """Every hyper-parameter this run accepts, by name (full-batch optimizers take no batch_size)."""
        return {name: hp for name, (_, hp) in self._table.items()}

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Every declared value: given, else the regularizers' switched-on value, else the default.
        Raises ValueError naming the hyper-parameter."""
        declared = self.declared()
        for name in given:
            if name not in declared:
                known = ", ".join(sorted(declared))
                raise ValueError(f"{name}: not a hyper-parameter of {self.label()} (known: {known})")
        defaults = {k: hp.default for k, hp in declared.items()}
        defaults.update({k: v for r in self.regularizers for k, v in r.borrows.items() if k in declared})
        out = {}
        for name, hp in declared.items():
            if name not in given and hp.required:
                raise ValueError(f"{name}: required by {self._table[name][0]} (it has no default)")
            try:
                out[name] = hp.check(given[name]) if name in given else defaults[name]
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None
        return out

    def split(self, values: Mapping[str, Any]) -> Routed:
        """Route resolved values (see `resolve`) to their owners. Regularizers get their own knobs;
        the ones they switch on (weight_decay, dropout) stay with the component that declares them."""
        def pick(hparams: Iterable[HParam]) -> dict[str, Any]:
            return {hp.name: values[hp.name] for hp in hparams if hp.name in values}

        return Routed(
            model=pick(self.model.hparams), optimizer=pick(self.optimizer.hparams),
            schedule=pick(self.schedule.hparams),
            regularizers=tuple((r, pick(r.hparams)) for r in self.regularizers),
            training=pick(TRAINING_HPARAMS),
        )

    def check_regularizers(self, task: str | None = None) -> None:
        """Raise ValueError (one line) for a repeated or inapplicable regularizer."""
        seen: set[str] = set()
        declared = self.declared()
        for reg in self.regularizers:
            if reg.name in seen:
                raise ValueError(f"'{reg.name}' is listed twice")
            seen.add(reg.name)
            for borrowed in reg.borrows:
                if borrowed not in declared:
                    raise ValueError(f"'{reg.name}' needs a component with the hyper-parameter '{borrowed}' "
                                     "(e.g. the mlp model's dropout); this one has none")
            if task is not None and reg.tasks is not None and task not in reg.tasks:
                raise ValueError(f"'{reg.name}' applies to {'/'.join(reg.tasks)} data, not {task}")

    def default_space(self) -> dict[str, Dist]:
        """The optimizer's, schedule's and regularizers' default search spaces."""
        regularizers = {k: d for r in self.regularizers for k, d in r.space.items()}
        return {**self.optimizer.space, **self.schedule.space, **regularizers}

    def sources(self) -> dict[str, str]:
        """MLflow tags saying where each component comes from (built-in, plug-in, import path)."""
        return {"source.model": self.model.source.describe(), "source.optimizer": self.optimizer.source.describe(),
                "source.schedule": self.schedule.source.describe(),
                "source.regularizers": "; ".join(f"{r.name}: {r.source.describe()}" for r in self.regularizers)
                or "none"}


@functools.lru_cache(maxsize=256)
def _owners(model: str, optimizer: str, schedule: str, regularizers: tuple[str, ...]) -> Owners:
    return Owners(MODELS.get(model), OPTIMIZERS.get(optimizer), SCHEDULES.get(schedule),
                  tuple(REGULARIZERS.get(r) for r in regularizers))


class ArmParams:
    """The names an arm's `params` and `space` may use. One optimizer: its run's names. Several (the
    optimizer is itself tuned): `optimizer`, the names every choice declares alike (shared by all
    branches), and each choice's own names as `<optimizer>.<name>` (used only when it is chosen)."""

    def __init__(self, model: str, optimizers: Iterable[str], schedule: str, regularizers: Iterable[str] = ()) -> None:
        self.optimizers = tuple(optimizers)
        self.each = {o: Owners.of(model, o, schedule, regularizers) for o in self.optimizers}
        self.first = self.each[self.optimizers[0]]

    @property
    def is_choice(self) -> bool:
        return len(self.optimizers) > 1

    def prefix(self, key: str) -> tuple[str | None, str]:
        """(optimizer, name) of a `<optimizer>.<name>` key of a choice arm, else (None, key)."""
        if self.is_choice:
            for o in sorted(self.optimizers, key=len, reverse=True):
                if key.startswith(o + "."):
                    return o, key[len(o) + 1:]
        return None, key

    @functools.cached_property
    def _declared(self) -> dict[str, HParam]:
        if not self.is_choice:
            return self.first.declared()
        each = {o: owners.declared() for o, owners in self.each.items()}
        shared = {k: hp for k, hp in each[self.optimizers[0]].items() if all(d.get(k) == hp for d in each.values())}
        return {
            OPTIMIZER_KEY: HParam(OPTIMIZER_KEY, "str", self.optimizers[0], "the optimizer a trial trains with",
                                  choices=self.optimizers),
            **shared,
            **{f"{o}.{k}": hp for o, d in each.items() for k, hp in d.items()},
        }

    def declared(self) -> dict[str, HParam]:
        return self._declared

    def owned(self, name: str) -> HParam | None:
        """The declaration of an unprefixed name that any choice has (study-level params go there)."""
        return next((o.declared()[name] for o in self.each.values() if name in o.declared()), None)

    def chosen(self, values: Mapping[str, Any], optimizer: str) -> dict[str, Any]:
        """The values (fixed and sampled) that apply once `optimizer` is chosen, un-prefixed: the
        plain names it declares, then its own `<optimizer>.<name>` ones, which win."""
        if not self.is_choice:
            return dict(values)
        declared = self.each[optimizer].declared()
        shared, own = {}, {}
        for key, value in values.items():
            owner, name = self.prefix(key)
            if owner == optimizer:
                own[name] = value
            elif owner is None and key != OPTIMIZER_KEY and key in declared:
                shared[key] = value
        return {**shared, **own}

    def default_space(self) -> dict[str, Dist]:
        """Without an arm `space`: each optimizer's default space (under its prefix for a choice),
        the schedule's and the regularizers'; a choice arm draws `optimizer` first."""
        if not self.is_choice:
            return self.first.default_space()
        rest = {k: d for k, d in self.first.default_space().items() if k not in self.first.optimizer.space}
        return {OPTIMIZER_KEY: choice(*self.optimizers),
                **{f"{o}.{k}": d for o in self.optimizers for k, d in self.each[o].optimizer.space.items()}, **rest}

    def why_undeclared(self, key: str) -> str:
        """Why a params/space name is not one of the arm's, with the fix for a choice arm."""
        first = self.first
        label = "/".join([first.model.name, "|".join(self.optimizers), first.schedule.name,
                          *(r.name for r in first.regularizers)])
        if self.is_choice:
            owner, name = self.prefix(key)
            if owner is not None:
                own = ", ".join(sorted(self.each[owner].declared()))
                return f"not a hyper-parameter of {self.each[owner].label()} (known: {own})"
            head, dot, _ = key.partition(".")
            if dot and head.isidentifier() and head not in self.owned_names():
                return f"'{head}' is not one of the arm's optimizers ({', '.join(self.optimizers)})"
            having = [o for o in self.optimizers if key in self.each[o].declared()]
            if having:
                lacking = [o for o in self.optimizers if o not in having]
                return (f"not a hyper-parameter of {', '.join(lacking)}; name it per optimizer, "
                        f"e.g. '{having[0]}.{key}'")
        known = ", ".join(sorted(k for k in self._declared if k != OPTIMIZER_KEY and self.prefix(k)[0] is None))
        per_optimizer = "; per optimizer: <optimizer>.<name>" if self.is_choice else ""
        return f"not a hyper-parameter of {label} (known: {known}{per_optimizer})"

    def owned_names(self) -> set[str]:
        """Unprefixed names any choice declares (a dotted one such as `betas.0` is not a prefix)."""
        return {k.split(".")[0] for o in self.each.values() for k in o.declared()}
