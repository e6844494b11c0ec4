"""The MLflow runs of a report, read in a few queries per experiment instead of a search per arm
and a history request per run and metric.

A SQLite tracking store (the default, `sqlite:///mlflow.db`) is read with Python's own `sqlite3`:
importing MLflow's client with its SQLAlchemy store costs ~4 s of CPU, more than everything else
`bench report` does for the quickstart. The rows are the ones MlflowClient returns (active runs
oldest first, each key's latest value, NaN for `is_nan` rows, histories ordered by step). Any
other store (a tracking server, PostgreSQL) is read through MlflowClient. Nothing here writes:
`publish` writes through MlflowClient, and only what changed.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.stores import sqlite_file

_CHUNK = 500  # run ids per IN (...) query (old SQLite builds allow 999 parameters)


@dataclass
class Run:
    run_id: str
    status: str
    start_time: int
    artifact_uri: str
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # latest value per key, as run.data.metrics

    def has_tags(self, tags: dict[str, str]) -> bool:
        return all(self.tags.get(k) == v for k, v in tags.items())


class SqliteRuns:
    """Read-only queries on MLflow's tables (experiments, runs, tags, params, metrics, latest_metrics)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # mode=ro: a missing file stays missing (no empty store is created by a report); autocommit,
        # so that `runs` can hold one read transaction over its queries
        self.db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None) \
            if path.is_file() else None

    def experiment(self, name: str) -> tuple[str, dict[str, str]] | None:
        """(id, tags) of the experiment, None when there is none."""
        row = self.db.execute("SELECT experiment_id FROM experiments WHERE name = ?", (name,)).fetchone() \
            if self.db else None
        if row is None:
            return None
        tags = dict(self.db.execute("SELECT key, value FROM experiment_tags WHERE experiment_id = ?", row))
        return str(row[0]), tags

    def runs(self, experiment_id: str) -> list[Run]:
        """Every active run of the experiment with its tags, params and latest metrics, oldest first."""
        where = "FROM runs WHERE experiment_id = ? AND lifecycle_stage = 'active'"
        exp = (int(experiment_id),)
        self.db.execute("BEGIN")  # one snapshot for the four queries: a study may be writing meanwhile
        try:
            runs = {row[0]: Run(*row) for row in self.db.execute(
                f"SELECT run_uuid, status, start_time, artifact_uri {where} ORDER BY start_time, run_uuid", exp)}
            for table in ("tags", "params"):
                for run_id, key, value in self.db.execute(
                        f"SELECT run_uuid, key, value FROM {table} WHERE run_uuid IN (SELECT run_uuid {where})", exp):
                    getattr(runs[run_id], table)[key] = value
            for run_id, key, value, is_nan in self.db.execute(
                    "SELECT run_uuid, key, value, is_nan FROM latest_metrics "
                    f"WHERE run_uuid IN (SELECT run_uuid {where})", exp):
                runs[run_id].metrics[key] = math.nan if is_nan else value
        finally:
            self.db.execute("COMMIT")
        return list(runs.values())

    def histories(self, run_ids: Sequence[str], keys: Sequence[str]) -> dict[tuple[str, str], list[float]]:
        """(run, key) -> every logged value, by step (MLflow's order, timestamp then value, within a step)."""
        out: dict[tuple[str, str], list[float]] = {}
        keys = list(keys)
        for chunk in _chunks(list(run_ids)):
            query = (f"SELECT run_uuid, key, value, is_nan FROM metrics WHERE run_uuid IN ({_marks(chunk)}) "
                     f"AND key IN ({_marks(keys)}) ORDER BY run_uuid, key, step, timestamp, value")
            for run_id, key, value, is_nan in self.db.execute(query, [*chunk, *keys]):
                out.setdefault((run_id, key), []).append(math.nan if is_nan else value)
        return out

    def close(self) -> None:
        if self.db:
            self.db.close()


class ClientRuns:
    """The same reads through MlflowClient, for every store that is not a SQLite file."""

    def __init__(self, uri: str) -> None:
        from bench.tracking import Tracker

        self.tracker = Tracker(uri)

    def experiment(self, name: str) -> tuple[str, dict[str, str]] | None:
        exp = self.tracker.client.get_experiment_by_name(name)
        return None if exp is None else (exp.experiment_id, dict(exp.tags))

    def runs(self, experiment_id: str) -> list[Run]:
        return [Run(r.info.run_id, r.info.status, r.info.start_time, r.info.artifact_uri, dict(r.data.tags),
                    dict(r.data.params), dict(r.data.metrics)) for r in self.tracker.find_runs(experiment_id, {})]

    def histories(self, run_ids: Sequence[str], keys: Sequence[str]) -> dict[tuple[str, str], list[float]]:
        out = {}
        for run_id in run_ids:
            for key in keys:
                if history := self.tracker.client.get_metric_history(run_id, key):
                    out[run_id, key] = [m.value for m in sorted(history, key=lambda m: m.step)]
        return out

    def close(self) -> None:
        pass


def open_runs(tracking_uri: str) -> SqliteRuns | ClientRuns:
    path = sqlite_file(tracking_uri)
    return SqliteRuns(path) if path is not None else ClientRuns(tracking_uri)


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i:i + _CHUNK]


def _marks(items: Sequence[Any]) -> str:
    return ",".join("?" * len(items))
