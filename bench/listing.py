"""`bench list`: every registry with its hyper-parameters and default search spaces."""

from __future__ import annotations

from bench.data import DATASETS, dataset_args
from bench.models import MODELS
from bench.optim import OPTIMIZERS, REGULARIZERS, SCHEDULES
from bench.spec import TRAINING_HPARAMS
from bench.tuning.samplers import PRUNERS, SAMPLERS


def _hp_lines(hparams, space=None) -> list[str]:
    lines = []
    for hp in hparams:
        tuned = f"  search {space[hp.name].describe()}" if space and hp.name in space else ""
        choices = f" {{{', '.join(map(str, hp.choices))}}}" if hp.choices else ""
        lines.append(f"      {hp.name:<26} {hp.kind:<5} default {hp.default!r}{choices}{tuned}  — {hp.help}")
    return lines


def render() -> str:
    out = ["models:"]
    for e in MODELS:
        out.append(f"  {e.name:<12} {e.summary}  [tasks: {', '.join(e.meta['tasks'])}]")
        out.append(f"      reference: {e.meta['reference']}")
        out += _hp_lines(e.meta["hparams"])
    out.append("datasets:")
    for e in DATASETS:
        out.append(f"  {e.name:<24} {e.summary}  [task: {e.meta['task']}]")
        out += _hp_lines(dataset_args(e.name).values())
    out.append("optimizers (default search space marked 'search'):")
    for e in OPTIMIZERS:
        out.append(f"  {e.name:<12} {e.summary}")
        out += _hp_lines(e.meta["hparams"], e.meta["space"])
    out.append("schedules:")
    for e in SCHEDULES:
        out.append(f"  {e.name:<12} {e.summary}")
        out += _hp_lines(e.meta["hparams"])
    out.append("regularizers (list them per arm: regularizers = [\"l2\", \"dropout\"]):")
    for e in REGULARIZERS:
        out.append(f"  {e.name:<16} changes {e.meta['changes']:<8} {e.summary}")
        out.append(f"      how: {e.meta['how']}")
        for name, value in e.meta["borrows"].items():
            space = f"  search {e.meta['space'][name].describe()}" if name in e.meta["space"] else ""
            out.append(f"      {name:<26} (switched on; default when listed {value!r}){space}")
        out += _hp_lines(e.meta["hparams"], e.meta["space"])
    out.append("training loop:")
    out += _hp_lines(TRAINING_HPARAMS)
    out.append("samplers: " + ", ".join(f"{e.name} ({e.summary})" for e in SAMPLERS))
    out.append("pruners: " + ", ".join(f"{e.name} ({e.summary})" for e in PRUNERS))
    return "\n".join(out)
