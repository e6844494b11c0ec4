"""Adapters: what an entry point or import path names -> a typed registry info.

A plug-in or a study file may name an info (`OptimizerInfo(...)`, ...) or a plain object:
  * optimizer: a torch.optim.Optimizer subclass or a function returning one. Every argument after
    `params` becomes a hyper-parameter with the signature's default and type; a tuple default such
    as `betas=(0.9, 0.999)` becomes `betas.0`, `betas.1`. Flags are read off the class: a `step`
    whose `closure` has no default needs a closure (and then the full batch, as L-BFGS); `train()`
    and `eval()` methods mean a schedule-free mode switch. Default space: lr in
    [default/100, default*10], log scale.
  * model: a BenchModule subclass (`cls(data, configure_optim, **hparams)`, tasks from its `tasks`
    attribute), or any other callable `f(input_shape, n_outputs, **hparams) -> nn.Module` that the
    suite wraps with the task's loss and metrics.
  * dataset: a function `f(seed, **args)` with a `task` attribute (or a DatasetInfo, which says it).
  * schedule / regularizer: a factory whose keyword arguments are its hyper-parameters.
What a signature cannot say (a dataset's task, an optimizer's flags for a factory function) goes in
an info. Nothing here imports torch: a class can only subclass torch's Optimizer (or bench's
BenchModule) if its module imported that already, so `sys.modules` answers the question.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import types
import typing
from typing import Any

from bench.hparams import REQUIRED, Dist, HParam
from bench.registry import (
    SUPERVISED,
    TASKS,
    DatasetInfo,
    Info,
    ModelInfo,
    OptimizerInfo,
    RegistryError,
    RegularizerInfo,
    ScheduleInfo,
    Source,
)

CHANGES = ("loss", "update", "model", "data", "stopping")
_BASIC = ("float", "int", "bool", "str")


def _summary(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _annotation_kinds(annotation: Any) -> tuple[set[str], bool]:
    """Basic types an annotation admits ({'float', ...}) and whether it admits None."""
    if annotation is inspect.Parameter.empty:
        return set(), False
    if isinstance(annotation, str):  # unevaluated (from __future__ import annotations)
        nullable = bool(re.search(r"\bNone\b|Optional", annotation))
        return set(re.findall(r"\b(float|int|bool|str)\b", annotation)), nullable
    if annotation is None or annotation is type(None):
        return set(), True
    if annotation in (float, int, bool, str):
        return {annotation.__name__}, False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds, nullable = set(), False
        for arg in typing.get_args(annotation):
            k, n = _annotation_kinds(arg)
            kinds |= k
            nullable |= n
        return kinds, nullable
    return set(), False


def _kind(default: Any, kinds: set[str]) -> str | None:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int) and "float" in kinds:
        return "float"  # `weight_decay: float = 0`
    if isinstance(default, int | float | str):
        return type(default).__name__
    return next((k for k in _BASIC if k in kinds), None)  # default None or required: the annotation says


def signature_hparams(fn: Any, owner: str, *, skip: int = 0, exclude: tuple[str, ...] = ()) -> tuple[HParam, ...]:
    """The keyword arguments of `fn` (after `skip` positional ones) as hyper-parameters. Arguments
    a study file cannot express (a callable default, *args) are left out; a required argument
    without a type raises TypeError."""
    owner = getattr(fn, "__qualname__", owner)  # help text: "AdamW argument eps"
    try:
        sig = inspect.signature(fn, eval_str=True)
    except Exception:  # annotations that do not evaluate: read them as text
        sig = inspect.signature(fn)
    out: list[HParam] = []
    for i, p in enumerate(sig.parameters.values()):
        if i < skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in exclude:
            continue
        kinds, nullable = _annotation_kinds(p.annotation)
        default = REQUIRED if p.default is inspect.Parameter.empty else p.default
        if isinstance(default, tuple):
            elements = [(f"{p.name}.{j}", _kind(v, kinds or {"float"}), v) for j, v in enumerate(default)]
            if all(k is not None for _, k, _ in elements) and default:
                out += [HParam(n, k, float(v) if k == "float" else v, f"{owner} argument {p.name}[{n[-1]}]")
                        for n, k, v in elements]
            continue
        kind = _kind(default, kinds)
        if kind is None:
            if default is REQUIRED:
                raise TypeError(f"argument {p.name!r} has no default and no type a study file can give")
            continue
        if kind == "float" and isinstance(default, int) and not isinstance(default, bool):
            default = float(default)
        out.append(HParam(p.name, kind, default, f"{owner} argument {p.name}",
                          nullable=nullable or default is None))
    return tuple(out)


def _fill(info: Info, name: str, source: Source, **fields: Any) -> Any:
    return dataclasses.replace(info, name=name, source=source, **fields)


def _lr_space(hparams: tuple[HParam, ...]) -> dict[str, Dist]:
    lr = next((hp for hp in hparams if hp.name == "lr" and hp.kind == "float"), None)
    if lr is None or lr.required or not isinstance(lr.default, float) or not lr.default > 0:
        return {}
    return {"lr": Dist(low=lr.default / 100, high=lr.default * 10, log=True)}


def _check_space(space: typing.Mapping[str, Dist], declared: typing.Iterable[str], what: str) -> None:
    names = set(declared)
    for key in space:
        if key not in names:
            raise RegistryError(f"{what}: default space names {key!r}, which is not one of its hyper-parameters")


def _is_subclass(obj: Any, module: str, cls: str) -> bool:
    loaded = sys.modules.get(module)
    return isinstance(obj, type) and loaded is not None and issubclass(obj, getattr(loaded, cls))


def optimizer_info(obj: Any, name: str, source: Source) -> OptimizerInfo:
    what = source.target or name
    if isinstance(obj, OptimizerInfo):
        hparams = obj.hparams or signature_hparams(obj.load(), what, skip=1)
        info = _fill(obj, name, source, hparams=hparams, space=obj.space or _lr_space(hparams),
                     summary=obj.summary or _summary(obj.load()), full_batch=obj.full_batch or obj.closure)
    elif isinstance(obj, type):
        if not _is_subclass(obj, "torch.optim", "Optimizer"):
            raise RegistryError(f"{what} is not an optimizer class or factory (a torch.optim.Optimizer "
                                f"subclass or a function returning one)")
        step = inspect.signature(obj.step).parameters.get("closure")
        closure = step is not None and step.default is inspect.Parameter.empty
        hparams = signature_hparams(obj, what, skip=1)
        info = OptimizerInfo(name=name, summary=_summary(obj), factory=obj, source=source, hparams=hparams,
                             space=_lr_space(hparams), closure=closure, full_batch=closure,
                             mode_switch=callable(getattr(obj, "train", None)) and callable(getattr(obj, "eval", None)))
    elif inspect.isfunction(obj) and obj.__code__.co_argcount >= 1:
        hparams = signature_hparams(obj, what, skip=1)
        info = OptimizerInfo(name=name, summary=_summary(obj), factory=obj, source=source, hparams=hparams,
                             space=_lr_space(hparams))
    else:
        raise RegistryError(f"{what} is not an optimizer class or factory (a torch.optim.Optimizer subclass "
                            f"or a function returning one), but a {type(obj).__name__}")
    _check_space(info.space, (hp.name for hp in info.hparams), what)
    return info


def model_info(obj: Any, name: str, source: Source) -> ModelInfo:
    what = source.target or name
    if isinstance(obj, ModelInfo):
        # both calling conventions start with two positional arguments (data + builder, or shape + outputs)
        info = _fill(obj, name, source, summary=obj.summary or _summary(obj.load()),
                     hparams=obj.hparams or signature_hparams(obj.load(), what, skip=2, exclude=("label_smoothing",)))
    elif _is_subclass(obj, "bench.models.base", "BenchModule"):
        base = sys.modules["bench.models.base"].BenchModule
        info = ModelInfo(name=name, summary=_summary(obj), factory=obj, source=source,
                         hparams=signature_hparams(obj, what, skip=2, exclude=("label_smoothing",)),
                         tasks=tuple(getattr(obj, "tasks", SUPERVISED)), objective=getattr(obj, "objective", None),
                         own_steps=obj.training_step is not base.training_step)
    elif callable(obj):
        info = ModelInfo(name=name, summary=_summary(obj), factory=obj, source=source, network=True,
                         hparams=signature_hparams(obj, what, skip=2))
    else:
        raise RegistryError(f"{what} is not a model (a BenchModule subclass or a function returning an nn.Module)")
    if bad := [t for t in info.tasks if t not in TASKS]:
        raise RegistryError(f"{what}: unknown task {bad[0]!r} (known: {', '.join(TASKS)})")
    if info.network and "sequence" in info.tasks:
        raise RegistryError(f"{what}: a wrapped network trains on {', '.join(SUPERVISED)} data, not sequences")
    return info


def dataset_info(obj: Any, name: str, source: Source) -> DatasetInfo:
    what = source.target or name
    if isinstance(obj, DatasetInfo):
        info = _fill(obj, name, source, summary=obj.summary or _summary(obj.load()),
                     args=obj.args or signature_hparams(obj.load(), what, exclude=("seed",)))
    elif callable(obj):
        task = getattr(obj, "task", None)
        if task is None:
            raise RegistryError(f"{what}: a dataset function must declare its task: set `{obj.__name__}.task = "
                                "'multiclass'` or name a DatasetInfo(factory=..., task=...)")
        info = DatasetInfo(name=name, summary=_summary(obj), factory=obj, source=source, task=task,
                           args=signature_hparams(obj, what, exclude=("seed",)))
    else:
        raise RegistryError(f"{what} is not a dataset (a function returning arrays, or a DatasetInfo)")
    if info.task not in TASKS:
        raise RegistryError(f"{what}: unknown task {info.task!r} (known: {', '.join(TASKS)})")
    return info


def schedule_info(obj: Any, name: str, source: Source) -> ScheduleInfo:
    what = source.target or name
    if isinstance(obj, ScheduleInfo):
        info = _fill(obj, name, source, hparams=obj.hparams or signature_hparams(obj.load(), what))
    elif callable(obj):
        info = ScheduleInfo(name=name, summary=_summary(obj), factory=obj, source=source,
                            hparams=signature_hparams(obj, what),
                            needs_validation=callable(getattr(obj, "on_epoch_end", None)))
    else:
        raise RegistryError(f"{what} is not a schedule (a function returning a multiplier m(p))")
    _check_space(info.space, (hp.name for hp in info.hparams), what)
    return info


def regularizer_info(obj: Any, name: str, source: Source) -> RegularizerInfo:
    what = source.target or name
    if isinstance(obj, RegularizerInfo):
        info = _fill(obj, name, source, hparams=obj.hparams or signature_hparams(obj.load(), what))
    elif callable(obj):
        info = RegularizerInfo(name=name, summary=_summary(obj), factory=obj, source=source,
                               hparams=signature_hparams(obj, what), changes=getattr(obj, "changes", "loss"),
                               how=_summary(obj))
    else:
        raise RegistryError(f"{what} is not a regularizer (a factory returning a Regularizer)")
    if info.changes not in CHANGES:
        raise RegistryError(f"{what}: changes={info.changes!r}, expected one of {', '.join(CHANGES)}")
    _check_space(info.space, [*(hp.name for hp in info.hparams), *info.borrows], what)
    return info
