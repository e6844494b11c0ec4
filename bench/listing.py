"""`bench list`: every registry with its hyper-parameters, default search spaces and sources.

Plug-ins are loaded for this (their hyper-parameters come from their signatures); one that fails to
load is listed at the end with the reason, naming its package, and the others are shown.
"""

from __future__ import annotations

from bench.data import DATASETS
from bench.models import MODELS
from bench.optim import OPTIMIZERS, REGULARIZERS, SCHEDULES
from bench.registry import Info
from bench.routing import TRAINING_HPARAMS
from bench.tuning.catalog import PRUNERS, SAMPLERS


def _hp_lines(hparams, space=None) -> list[str]:
    lines = []
    for hp in hparams:
        tuned = f"  search {space[hp.name].describe()}" if space and hp.name in space else ""
        choices = f" {{{', '.join(map(str, hp.choices))}}}" if hp.choices else ""
        lines.append(f"      {hp.name:<26} {hp.kind:<5} default {hp.default!r}{choices}{tuned}  — {hp.help}")
    return lines


def _source(info: Info) -> str:
    return "" if info.source.origin == "built-in" else f"  [{info.source.describe()}]"


def render() -> str:
    out = ["models:"]
    for e in MODELS:
        out.append(f"  {e.name:<12} {e.summary}  [tasks: {', '.join(e.tasks)}]{_source(e)}")
        if e.reference:
            out.append(f"      reference: {e.reference}")
        out += _hp_lines(e.hparams)
    out.append("datasets:")
    for e in DATASETS:
        out.append(f"  {e.name:<24} {e.summary}  [task: {e.task}]{_source(e)}")
        out += _hp_lines(e.args)
    out.append("optimizers (default search space marked 'search'; any other by import path, e.g. "
               "optimizer = \"torch.optim.AdamW\"):")
    for e in OPTIMIZERS:
        needs = [flag for flag in ("full_batch", "closure", "mode_switch") if getattr(e, flag)]
        out.append(f"  {e.name:<12} {e.summary}{'  [' + ', '.join(needs) + ']' if needs else ''}{_source(e)}")
        out += _hp_lines(e.hparams, e.space)
    out.append("schedules:")
    for e in SCHEDULES:
        out.append(f"  {e.name:<12} {e.summary}{_source(e)}")
        out += _hp_lines(e.hparams, e.space)
    out.append("regularizers (list them per arm: regularizers = [\"l2\", \"dropout\"]):")
    for e in REGULARIZERS:
        out.append(f"  {e.name:<16} changes {e.changes:<8} {e.summary}{_source(e)}")
        out.append(f"      how: {e.how}")
        for name, value in e.borrows.items():
            space = f"  search {e.space[name].describe()}" if name in e.space else ""
            out.append(f"      {name:<26} (switched on; default when listed {value!r}){space}")
        out += _hp_lines(e.hparams, e.space)
    out.append("training loop:")
    out += _hp_lines(TRAINING_HPARAMS)
    out.append("samplers: " + ", ".join(f"{e.name} ({e.summary})" for e in SAMPLERS))
    out.append("pruners: " + ", ".join(f"{e.name} ({e.summary})" for e in PRUNERS))
    failures = [msg for reg in (MODELS, DATASETS, OPTIMIZERS, SCHEDULES, REGULARIZERS) for msg in reg.failures.values()]
    if failures:
        out.append("plug-ins that did not load:")
        out += [f"  {msg}" for msg in failures]
    return "\n".join(out)
