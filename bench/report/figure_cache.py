"""Figures reused by a report of unchanged results.

Every figure is a function of what `collect` read from the stores and of the code that draws it.
`bench run` writes the report once its study is done; a later `bench report` on the same stores,
with nothing changed, finds the figures it would draw already in `figures/`, drawn from a
fingerprint-identical input, and reuses them instead of drawing 20 figures again (the bulk of a
report's time; without drawing, matplotlib is not even imported). Any change (a trial, a run, a
tag, the study file, bench, matplotlib or Optuna) changes the fingerprint, and every figure is
drawn again.

The fingerprint is a SHA-256 over the pickled results (each arm's Optuna study as its trials and
user attributes; not its MLflow parent run, which no figure shows and the report writes to), the
report's code (bench/report/*.py) and the versions of bench, matplotlib, Optuna and NumPy. A
missing figure file means drawing them all again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.report.collect import StudyResult

MANIFEST = ".drawn.json"  # in figures/: the fingerprint, and what each figure job returned
DRAWING_PACKAGES = ("bench", "matplotlib", "optuna", "numpy")
DRAWING_CODE = sorted(Path(__file__).parent.glob("*.py"))  # figures.py and what it draws from


def fingerprint(result: StudyResult, extra: Any = None) -> str | None:
    """SHA-256 of everything the figures are drawn from; None when something cannot be pickled
    (then the figures are simply drawn)."""
    digest = hashlib.sha256()
    try:
        for name in DRAWING_PACKAGES:
            digest.update(f"{name}={_version(name)};".encode())
        for source in DRAWING_CODE:  # an edited checkout draws with other code
            digest.update(source.read_bytes())
        digest.update(pickle.dumps((result.spec.model_dump(mode="json"), result.objective, result.test_metric,
                                    result.direction, extra), protocol=5))
        for arm in result.arms:
            trials = arm.study.get_trials(deepcopy=False) if arm.study is not None else []
            attrs = arm.study.user_attrs if arm.study is not None else {}
            # the Arm by its fields (its cached registry look-ups pickle differently in each process);
            # not the parent run, which no figure shows and the report itself writes to (publish.py)
            drawn_from = dataclasses.replace(arm, study=None, arm=None, parent_tags={}, parent_run_id="",
                                             parent_artifact_uri="")
            digest.update(pickle.dumps((repr(arm.arm), drawn_from, trials, attrs), protocol=5))
    except (pickle.PicklingError, TypeError, AttributeError, OSError):
        return None
    return digest.hexdigest()


def load(fig_dir: Path, key: str | None) -> dict | None:
    """The `figures` mapping (bench.report.render) of the figures now in `fig_dir`, if they were
    drawn from input `key` and are all there; else None."""
    if key is None:
        return None
    try:
        manifest = json.loads((fig_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("fingerprint") != key:
        return None
    figures = _decode(manifest.get("figures", {}), fig_dir)
    return figures if all(path.is_file() for path in _paths(figures)) else None


def save(fig_dir: Path, key: str | None, figures: dict) -> None:
    if key is None:
        return
    fig_dir.mkdir(parents=True, exist_ok=True)
    (fig_dir / MANIFEST).write_text(json.dumps({"fingerprint": key, "figures": _encode(figures, fig_dir)}, indent=1))


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


# `figures` holds paths (figures/...), notes, and dicts and lists of them.
def _encode(value: Any, fig_dir: Path) -> Any:
    if isinstance(value, Path):
        return {"path": value.relative_to(fig_dir).as_posix()}
    if isinstance(value, dict):
        return {"dict": {k: _encode(v, fig_dir) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return [_encode(v, fig_dir) for v in value]
    return value


def _decode(value: Any, fig_dir: Path) -> Any:
    if isinstance(value, dict) and "path" in value:
        return fig_dir / value["path"]
    if isinstance(value, dict):
        return {k: _decode(v, fig_dir) for k, v in value.get("dict", {}).items()}
    if isinstance(value, list):
        return [_decode(v, fig_dir) for v in value]
    return value


def _paths(value: Any) -> list[Path]:
    if isinstance(value, Path):
        return [value]
    if isinstance(value, dict):
        return [p for v in value.values() for p in _paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in _paths(v)]
    return []
