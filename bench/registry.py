"""Typed registries: name -> frozen info (metadata + a lazily imported factory). The public API.

Every component a study file can name is one info in a Registry: `OptimizerInfo`, `ModelInfo`,
`DatasetInfo`, `ScheduleInfo`, `RegularizerInfo` (and the tuning layer's samplers and pruners).
An info is metadata only: names, hyper-parameters, default search space, tasks, flags. Its
factory is a callable or an import path ("bench.models.mlp:MLP") resolved on first `load()`, so
validating a study file imports neither torch nor Lightning.

Three ways into a registry, all ending in the same `register(info)`:
  * built-ins: each package declares its infos (bench/models/__init__.py, bench/data/__init__.py,
    bench/optim/*.py);
  * plug-in packages: entry points in the groups `bench.optimizers`, `bench.models`,
    `bench.datasets`, `bench.schedules`, `bench.regularizers`. Their names are read from the
    installed metadata without importing anything; a plug-in is imported the first time one of its
    names is looked up, and one that fails to import is reported naming its package while the
    others still load;
  * import paths in a study file (`torch.optim.AdamW`, `mypkg.optim:Lion`), resolved on lookup.
Plug-ins and import paths may name an info directly, or a plain class / function that the
registry's adapter (bench/plugins.py) turns into one by reading its signature. Every info keeps
its `source` (built-in, plug-in package and version, or import path), which each MLflow run records.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Generic, Literal, TypeVar

from bench.hparams import Dist, HParam

Task = Literal["multiclass", "binary", "regression", "sequence"]
TASKS: tuple[str, ...] = ("multiclass", "binary", "regression", "sequence")
SUPERVISED: tuple[str, ...] = ("multiclass", "binary", "regression")
NAME = re.compile(r"[a-z][a-z0-9_-]*")  # registry names; anything with '.' or ':' is an import path


class RegistryError(ValueError):
    """A name that cannot be resolved; str() is the one-line message shown to users."""


class UnknownNameError(RegistryError, KeyError):
    """A name that no registry entry carries (also a KeyError, for `name in` style callers)."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


@dataclass(frozen=True)
class Source:
    """Where an entry comes from; `describe()` is the MLflow tag value."""

    origin: Literal["built-in", "plugin", "import"] = "built-in"
    package: str = ""  # distribution name (plugin, or the one providing an import path's module)
    version: str = ""
    target: str = ""  # "module:attribute"

    def describe(self) -> str:
        if self.origin == "built-in":
            return "built-in"
        dist = f"{self.package} {self.version}".strip()
        return f"{self.origin} {self.target}" + (f" ({dist})" if dist else "")


BUILT_IN = Source()
_LOADED: dict[str, Any] = {}  # import path -> object (infos are frozen; their factories resolve once)


def load_object(path: str) -> Any:
    """Import `pkg.mod:attr` or `pkg.mod.attr` (the longest importable module prefix). Modules in
    the working directory are importable too, as for `python -m`. Raises RegistryError (one line)."""
    if path in _LOADED:
        return _LOADED[path]
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # `bench` as a console script does not put it there
    module_name, colon, attrs = path.partition(":")
    candidates = [(module_name, attrs.split("."))] if colon else [
        (".".join(path.split(".")[:i]), path.split(".")[i:]) for i in range(path.count("."), 0, -1)]
    error: BaseException | None = None
    for mod, rest in candidates:
        try:
            obj: Any = importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if err.name is not None and (mod == err.name or mod.startswith(err.name + ".")):
                error = error or err  # this prefix is not a module: try a shorter one
                continue
            raise RegistryError(f"cannot import {path!r}: {type(err).__name__}: {err}") from None
        except Exception as err:  # the module itself raised while importing
            raise RegistryError(f"cannot import {path!r}: {_first_line(err)}") from None
        try:
            for attr in rest:
                obj = getattr(obj, attr)
        except AttributeError:
            raise RegistryError(f"cannot import {path!r}: module {mod!r} has no attribute "
                                f"{'.'.join(rest)!r}") from None
        _LOADED[path] = obj
        return obj
    raise RegistryError(f"cannot import {path!r}: {_first_line(error) if error else 'empty path'}")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


@dataclass(frozen=True, kw_only=True)
class Info:
    """Fields every entry has. `factory` is a callable or an import path resolved by `load()`."""

    name: str = ""
    summary: str = ""
    factory: str | Callable[..., Any]
    source: Source = BUILT_IN

    def load(self) -> Callable[..., Any]:
        return load_object(self.factory) if isinstance(self.factory, str) else self.factory


@dataclass(frozen=True, kw_only=True)
class OptimizerInfo(Info):
    """A torch optimizer. Called as `factory(params, **kwargs)`; hyper-parameters named `x.0`,
    `x.1`, ... reach it as one tuple argument `x` (torch's `betas`).

    Args:
        hparams: every argument, each with its default (all of them recorded on every run).
        space: default search space.
        full_batch: one step uses the exact gradient of the whole training set (BGD, L-BFGS).
        closure: `step(closure)` re-evaluates the loss itself (L-BFGS); implies full_batch.
        mode_switch: needs `optimizer.train()` while training and `optimizer.eval()` before every
            evaluation (schedule-free optimizers).
        elementwise: each coordinate's update reads only that coordinate's gradient and state, so
            K runs can train as one stacked tensor (bench/batched.py; torch.optim's SGD, Adam,
            AdamW, Adagrad, NAdam, RAdam, Adamax and RMSprop are recognised without it).
    """

    hparams: tuple[HParam, ...] = ()
    space: Mapping[str, Dist] = field(default_factory=dict)
    full_batch: bool = False
    closure: bool = False
    mode_switch: bool = False
    elementwise: bool = False


@dataclass(frozen=True, kw_only=True)
class ModelInfo(Info):
    """A model. `network=False`: `factory(data, configure_optim, **hparams)` returns a BenchModule.
    `network=True`: `factory(input_shape, n_outputs, **hparams)` returns a plain nn.Module that the
    suite wraps with the dataset task's loss and metrics.

    Args:
        tasks: dataset tasks it trains on.
        default_dataset / reference: for `bench list` and the registry tests.
        objective: its natural validation metric (default: by the dataset's task).
        own_steps: its training step runs its optimizers itself (the GAN), so it cannot drive an
            optimizer that needs a closure.
    """

    hparams: tuple[HParam, ...] = ()
    tasks: tuple[str, ...] = SUPERVISED
    default_dataset: str = "digits"
    reference: str = ""
    objective: str | None = None
    network: bool = False
    own_steps: bool = False


@dataclass(frozen=True, kw_only=True)
class DatasetInfo(Info):
    """A dataset. `factory(seed=..., **args)` returns a DataBundle, or arrays that the suite splits
    (seeded 60/20/20), scales on the training split and caches: `(x, y)` or
    `((x_train, y_train), (x_val, y_val), (x_test, y_test))`.

    Args:
        files: files its loader reads, as paths below the data folder (bench/data/store.py; `X.gz`
            stands in for `X`). `bench run` / `bench train` check that they are there before any
            store is created, and `bench data fetch NAME` downloads them.
        targets: the workload's fixed time-to-target thresholds: model name (or "*" for any model)
            -> {objective metric: value}, e.g. {"mlp": {"val/acc": 0.97}}. A study file's `target`
            overrides it; with neither, the report derives one from the arms' own results.
        targets_source: where the values come from (the reference run they were read from).
    """

    task: str
    args: tuple[HParam, ...] = ()
    files: tuple[str, ...] = ()
    targets: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    targets_source: str = ""

    def target(self, model: str, objective: str) -> float | None:
        """The declared target of `objective` for `model` on this dataset (None when none is)."""
        for key in (model, "*"):
            if objective in self.targets.get(key, {}):
                return float(self.targets[key][objective])
        return None


@dataclass(frozen=True, kw_only=True)
class ScheduleInfo(Info):
    """An lr schedule: `factory(**hparams)` returns a multiplier m(p) of the peak lr over training
    progress p in [0, 1); `needs_validation` when it also reads each epoch's objective (plateau)."""

    hparams: tuple[HParam, ...] = ()
    space: Mapping[str, Dist] = field(default_factory=dict)
    needs_validation: bool = False


@dataclass(frozen=True, kw_only=True)
class RegularizerInfo(Info):
    """A regularizer: `factory(**hparams)` returns an object with the hooks of
    bench.optim.regularization.Regularizer.

    Args:
        changes / how: which part of training it changes (loss, update, model, data, stopping).
        borrows: another component's hyper-parameters it switches on, with the value used when the
            study neither fixes nor tunes them (l2 -> weight_decay).
        tasks: dataset tasks it applies to (None: all). input_rank: least input rank (images: 2).
    """

    hparams: tuple[HParam, ...] = ()
    space: Mapping[str, Dist] = field(default_factory=dict)
    changes: str = "loss"
    how: str = ""
    borrows: Mapping[str, Any] = field(default_factory=dict)
    tasks: tuple[str, ...] | None = None
    input_rank: int | None = None


InfoT = TypeVar("InfoT", bound=Info)
Adapter = Callable[[Any, str, Source], Any]  # (loaded object, name, source) -> info


def _identity(obj: Any, name: str, source: Source) -> Info:
    if not isinstance(obj, Info):
        raise RegistryError(f"{source.target or name} is a {type(obj).__name__}, not a registry entry")
    return dataclasses.replace(obj, name=name, source=source)


class Registry(Generic[InfoT]):
    """An ordered mapping name -> info, filled by `register(info)`.

    Args:
        kind: what the entries are ("optimizer"), for messages.
        group: the entry-point group plug-ins declare (None: no plug-ins).
        adapt: turns a plug-in's or import path's object into an info (see bench/plugins.py).
        imports: whether names may be import paths.
    """

    def __init__(self, kind: str, group: str | None = None, adapt: Adapter = _identity, *,
                 imports: bool = False) -> None:
        self.kind, self.group, self.imports = kind, group, imports
        self._adapt = adapt
        self._entries: dict[str, InfoT] = {}
        self._imported: dict[str, InfoT] = {}  # import paths resolve once per process
        self._entry_points: dict[str, metadata.EntryPoint] | None = None
        self.failures: dict[str, str] = {}  # plug-in name -> why it did not load

    def register(self, info: InfoT) -> InfoT:
        if not NAME.fullmatch(info.name):
            raise ValueError(f"{self.kind} name {info.name!r}: use lower-case letters, digits, _ and - only")
        if info.name in self._entries:
            raise ValueError(f"{self.kind} '{info.name}' is registered twice")
        self._entries[info.name] = info
        return info

    def get(self, name: str) -> InfoT:
        """The entry for a name (loading its plug-in, or importing an import path, on first use);
        raises RegistryError with a one-line message."""
        found = self._entries.get(name) or self._imported.get(name)
        if found is not None:
            return found
        if self.imports and is_import_path(name):
            info = self._imported[name] = self._adapt_checked(load_object(name), name, _import_source(name))
            return info
        point = self._plugins().get(name)
        if point is None:
            raise UnknownNameError(self.unknown_message(name))
        return self._load_plugin(name, point)

    def _adapt_checked(self, obj: Any, name: str, source: Source) -> InfoT:
        try:
            return self._adapt(obj, name, source)
        except RegistryError:
            raise
        except (TypeError, ValueError) as err:
            raise RegistryError(f"{source.target or name}: {err}") from None

    def _load_plugin(self, name: str, point: metadata.EntryPoint) -> InfoT:
        dist = getattr(point, "dist", None)
        package = f"{dist.name} {dist.version}" if dist is not None else "unknown package"
        source = Source("plugin", dist.name if dist else "", dist.version if dist else "", point.value)
        try:
            try:
                obj = point.load()
            except Exception as err:
                raise RegistryError(f"cannot import {point.value}: {_first_line(err)}") from None
            info = self._adapt_checked(obj, name, source)
        except RegistryError as err:
            message = f"{self.kind} '{name}' from plug-in package {package}: {err}"
            self.failures[name] = message
            raise RegistryError(message) from None
        return self.register(info)  # the same call the built-ins use

    def _plugins(self) -> dict[str, metadata.EntryPoint]:
        """Entry points of the group, by name, read from installed metadata (nothing imported).
        A plug-in name that a built-in already has, or that is not a plain name, is refused."""
        if self._entry_points is None:
            self._entry_points = {}
            for point in metadata.entry_points(group=self.group) if self.group else ():
                dist = getattr(point, "dist", None)
                where = f"plug-in package {dist.name} {dist.version}" if dist is not None else "a plug-in"
                if point.name in self._entries or point.name in self._entry_points:
                    self.failures[point.name] = f"{self.kind} '{point.name}' from {where}: the name is taken"
                elif not NAME.fullmatch(point.name):
                    self.failures[point.name] = (f"{self.kind} '{point.name}' from {where}: use lower-case "
                                                 "letters, digits, _ and - only")
                else:
                    self._entry_points[point.name] = point
        return self._entry_points

    def unknown_message(self, name: object) -> str:
        return f"unknown {name!r} (known: {', '.join(self.names())})"

    def names(self) -> list[str]:
        """Built-in and plug-in names (plug-ins are not imported for this)."""
        return sorted({*self._entries, *self._plugins()})

    def builtin_names(self) -> list[str]:
        return sorted(n for n, e in self._entries.items() if e.source.origin == "built-in")

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._plugins()

    def __iter__(self) -> Iterator[InfoT]:
        """Every loadable named entry (plug-ins are loaded; the ones that fail are in `failures`)."""
        for name in self.names():
            try:
                yield self.get(name)
            except RegistryError:
                continue

    def __len__(self) -> int:
        return len(self.names())


def is_import_path(name: str) -> bool:
    """`torch.optim.AdamW`, `mypkg.optim:Lion`: registry names never contain '.' or ':'."""
    return "." in name or ":" in name


def _import_source(path: str) -> Source:
    """The distribution (and version) that provides an import path's top-level module."""
    top = re.split(r"[.:]", path, maxsplit=1)[0]
    try:
        dists = metadata.packages_distributions().get(top, [])
    except Exception:  # broken metadata elsewhere must not stop a lookup
        dists = []
    if dists:
        try:
            return Source("import", dists[0], metadata.version(dists[0]), path)
        except metadata.PackageNotFoundError:
            pass
    version = str(getattr(sys.modules.get(top), "__version__", ""))  # a local module has no distribution
    return Source("import", top if version else "", version, path)
