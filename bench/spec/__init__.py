"""A study file, resolved in stages: schema -> arms -> run configs (one module per stage).

  bench/spec/schema.py   the TOML's shape and the names in it (pydantic) -> StudySpec
  bench/spec/arms.py     factorial expansion, arms with their spaces, the checks that need them
  bench/spec/config.py   RunConfig: one run, every hyper-parameter resolved, frozen and hashed

`load(path)` validates everything a study can get wrong *before* any store is touched: unknown
keys, wrong types, unknown registry names, import paths that do not import, hyper-parameters no
component owns, empty or ill-typed search spaces and impossible budgets all raise SpecError with a
one-line message naming the field, e.g.
`studies/x.toml: arms[2].optimizer: unknown 'adamx' (known: adagrad, adam, bgd, sgd)`.
It imports no torch, Lightning, MLflow or Optuna (unless the study names an import path or a
plug-in, whose own module is imported to read its signature).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bench import studyfile
from bench.registry import RegistryError
from bench.routing import OPTIMIZER_KEY, TRAINING_HPARAMS
from bench.spec.arms import Arm, FieldError, arms, expand, validate
from bench.spec.config import RunConfig, check_task, default_objective, direction_of, error_line
from bench.spec.schema import ArmSpec, StudySpec
from bench.studyfile import SpecError

__all__ = ["OPTIMIZER_KEY", "TRAINING_HPARAMS", "Arm", "ArmSpec", "RunConfig", "SpecError", "StudySpec", "arms",
           "check_task", "default_objective", "direction_of", "expand", "load", "parse"]


def parse(data: dict[str, Any], source: str = "<study>") -> StudySpec:
    """Validate a study file's data (schema, then arms); raises SpecError (one line)."""
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as err:
        loc, msg = error_line(err)
        raise SpecError(f"{source}: {loc}: {msg}" if loc else f"{source}: {msg}") from None
    try:
        validate(spec)
    except (FieldError, RegistryError) as err:
        raise SpecError(f"{source}: {err}") from None
    return spec


def load(path: str | Path) -> StudySpec:
    """Read and validate a TOML study file; raises SpecError with a one-line message."""
    return parse(studyfile.read(path), str(path))
