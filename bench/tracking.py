"""MLflow lineage: experiment = study, parent run = arm, child runs = trials and eval seeds.

Writes go through MlflowClient (no global fluent state, safe across threads and processes),
except a run's own writes on a SQLite store (see _SqlRuns). Per-epoch metrics are buffered and
written with `log_batch` at most every few seconds and at the end of the run: one `log_metric` on
SQLite costs milliseconds, per-step logging made a 1 s trial take 11-15 s. SQLite stores are
opened in WAL mode with synchronous=NORMAL, which makes each commit cheap and lets readers (the
UI, `bench report`) work while a study writes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import platform
import re
import subprocess
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy
from mlflow import MlflowClient
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT
from mlflow.utils.uri import append_to_uri_path
from mlflow.utils.validation import _validate_batch_log_data, _validate_dataset_inputs

from bench.stores import DEFAULT_TRACKING_URI as DEFAULT_TRACKING_URI  # re-exported
from bench.stores import normalize, setup_lock, show_retries, sqlite_file
from bench.stores import redact as redact  # re-exported: callers take it from here
from bench.stores import tracking_uri as tracking_uri  # re-exported (bench.stores imports no MLflow)

INTERRUPTED = "interrupted"  # error tag of runs (fail_reason of trials) stopped by Ctrl-C or SIGTERM
_BATCH = 500  # MLflow accepts at most 1000 metrics / 100 params / 100 tags per log_batch
_PARAM_BATCH = 100
_FLOAT_MAX = 1.7976931348623157e308  # what MLflow stores for +-inf (SQL has no infinity)

# "Creating initial MLflow database tables..." and "Updating database tables" on a fresh SQLite
# store: nothing a user can act on (errors and warnings still show).
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)


@sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL: concurrent readers + one writer; NORMAL: durable across process crashes, ~10x
    # cheaper commits than FULL. Applies to every SQLite engine (MLflow's and Optuna's).
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()


def artifact_root(uri: str) -> str | None:
    """Artifacts of a SQLite store live beside it in mlartifacts/; servers choose their own."""
    match = re.match(r"sqlite:///(.+)", uri)
    if not match:
        return None
    return (Path(match.group(1)).resolve().parent / "mlartifacts").as_uri()


@functools.lru_cache(maxsize=1)
def provenance() -> dict[str, str]:
    """Git sha + dirty flag of the suite's checkout, package versions, Python and host."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
            return out.stdout.strip() if out.returncode == 0 else ""
        except (OSError, subprocess.TimeoutExpired):
            return ""

    tags = {
        "git_sha": git("rev-parse", "HEAD") or "unknown",
        "git_dirty": str(bool(git("status", "--porcelain", "--untracked-files=no"))).lower(),
        "python": platform.python_version(),
        "host": f"{platform.system()} {platform.machine()} ({os.cpu_count()} cpus)",
    }
    for pkg in ("bench", "torch", "pytorch-lightning", "mlflow", "optuna", "numpy", "scikit-learn"):
        try:
            tags[f"version.{pkg}"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            tags[f"version.{pkg}"] = "not installed"
    return tags


def study_file_tags(path: str | None) -> dict[str, str]:
    """The study file as runs and reports name it: relative to the working directory (an absolute
    path only tells which machine ran it), with the sha256 of its content at run time."""
    if not path:
        return {"study_file": ""}
    file = Path(path)
    return {"study_file": os.path.relpath(file.resolve(), Path.cwd()),
            "study_file_sha256": hashlib.sha256(file.read_bytes()).hexdigest()}


def dataset_inputs(dataset: str, data_seed: int, data_args: dict[str, Any],
                   splits: Sequence[str]) -> list[DatasetInput]:
    """MLflow dataset inputs of the splits a run uses, each tagged `mlflow.data.context` = its split
    (train / val / test). Built once per process per (dataset, data seed, data args, split)."""
    args = json.dumps(data_args, sort_keys=True, default=str)
    return [_dataset_input(dataset, data_seed, args, split) for split in splits]


@functools.lru_cache(maxsize=64)
def _dataset_input(dataset: str, data_seed: int, args_json: str, split: str) -> DatasetInput:
    import mlflow.data
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    from bench.data import load_dataset

    args = json.loads(args_json)
    part = load_dataset(dataset, data_seed, **args).split(split)  # the process's cached bundle, as fit sees it
    x, y = part.x.cpu().numpy(), part.y.cpu().numpy()
    if args.get("path"):  # a user file: its location
        with warnings.catch_warnings():  # MLflow registers its local source twice ('' and file://) and says so
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(Path(args["path"]).resolve().as_uri())
    else:  # built in or generated: how to make it again
        source = CodeDatasetSource({"dataset": dataset, "data_seed": str(data_seed), "data_args": args_json})
    data = mlflow.data.from_numpy(x, targets=y, source=source, name=dataset, digest=split_digest(x, y))
    return DatasetInput(data._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, split)])


def split_digest(*arrays: Any) -> str:
    """Hash of every byte (and the dtype and shape) of a split's arrays. MLflow's own numpy digest
    reads only the first 10 000 elements, which would not tell two large splits apart."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:8]  # MLflow's digest length


class _Writer:
    """One background thread per process doing MLflow writes in submission order.

    A trial's closing write (all buffered metrics, params and tags in one log_batch, then the
    status) costs a few ms on SQLite (~25 ms through the client API); handing it to this thread
    lets the next trial start training meanwhile. `drain()` waits for everything submitted and re-raises the
    first error, so no run is left RUNNING by a normal exit.
    """

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    def submit(self, fn: Callable[[], None]) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-writer")
        self._pending.append(self._pool.submit(fn))

    def drain(self) -> None:
        pending, self._pending = self._pending, []
        errors = [f.exception() for f in pending]
        if first := next((e for e in errors if e is not None), None):
            raise first


WRITER = _Writer()


class _SqlRuns:
    """A run's own writes (create, log_batch, set_terminated) as a few plain SQL statements.

    Through MlflowClient's ORM store, tracking a 15-epoch trial (run, ~30 tags, a few params,
    120 metrics, status) costs ~25 ms of CPU; as a few executemany statements, ~5 ms. That work
    competes with training for the cores and the GIL (the writer thread only hides waiting): on
    2 cores it made a 0.2 s trial ~20% slower, now ~4%. The rows are the ones MLflow's store
    writes, from its own table definitions and with its checks (and truncation) of keys and
    values. A run's dataset inputs go in the same transaction as its batch (the `datasets`,
    `inputs` and `input_tags` rows of MlflowClient.log_inputs; ~0.5 ms of CPU per run). Reads,
    searches, artifacts and every other write still go through MlflowClient.
    SQLite stores only: a tracking server keeps the client API.
    """

    def __init__(self, uri: str) -> None:
        from mlflow.store.tracking.dbmodels.models import (
            SqlDataset,
            SqlInput,
            SqlInputTag,
            SqlLatestMetric,
            SqlMetric,
            SqlParam,
            SqlRun,
            SqlTag,
        )

        self.engine = sqlalchemy.create_engine(uri)  # tables exist: the Tracker's client made them
        self.runs, self.tags, self.params, self.metrics, self.latest = (
            model.__table__ for model in (SqlRun, SqlTag, SqlParam, SqlMetric, SqlLatestMetric))
        self.datasets, self.inputs, self.input_tags = (m.__table__ for m in (SqlDataset, SqlInput, SqlInputTag))
        self._dataset_uuids: dict[tuple[int, str, str], str] = {}  # (experiment, name, digest) -> row in the store
        self._no_inputs_yet: set[str] = set()  # runs created here: their first inputs need no look-up

    def create_run(self, run_id: str, experiment_id: str, name: str, artifact_uri: str,
                   tags: dict[str, str]) -> None:
        _, _, valid = _validate_batch_log_data([], [], [RunTag(k, v) for k, v in tags.items()])
        with self.engine.begin() as conn:
            conn.execute(self.runs.insert(), {
                "run_uuid": run_id, "name": name, "experiment_id": int(experiment_id), "artifact_uri": artifact_uri,
                "status": "RUNNING", "start_time": _now_ms(), "lifecycle_stage": "active",
                "user_id": tags.get("mlflow.user", "unknown"), "source_type": "UNKNOWN", "source_name": "",
                "entry_point_name": "", "source_version": ""})
            conn.execute(self.tags.insert(), [{"run_uuid": run_id, "key": t.key, "value": t.value} for t in valid])
        self._no_inputs_yet.add(run_id)

    def log_batch(self, run_id: str, metrics: list[Metric], params: list[Param], tags: list[RunTag],
                  inputs: tuple[str, list[DatasetInput]] | None = None) -> None:
        """What MlflowClient.log_batch does: metrics appended and latest_metrics kept current,
        tags upserted, params written once (a param logged again must keep its value); and what
        log_inputs does for `inputs` = (experiment id, dataset inputs), in the same transaction."""
        if inputs:
            _validate_dataset_inputs(inputs[1])
        # MLflow's checks (and truncation of long values); a metric key is checked once per batch
        # (values are floats already: RunLogger.log_metrics made them), 120 checks cost ~1 ms.
        _, params, tags = _validate_batch_log_data(list({m.key: m for m in metrics}.values()), params, tags)
        rows = {}  # identical metrics are one row, as in MLflow
        for m in metrics:
            is_nan = math.isnan(m.value)
            value = 0.0 if is_nan else max(-_FLOAT_MAX, min(_FLOAT_MAX, m.value))
            row = {"run_uuid": run_id, "key": m.key, "value": value, "timestamp": m.timestamp, "step": m.step,
                   "is_nan": is_nan}
            rows[tuple(row.values())] = row
        with self.engine.begin() as conn:
            if inputs:
                self._log_inputs(conn, run_id, *inputs)
            if rows:
                conn.execute(self.metrics.insert(), list(rows.values()))
                self._update_latest(conn, run_id, rows.values())
            if tags:
                new_tags = {t.key: {"run_uuid": run_id, "key": t.key, "value": t.value} for t in tags}
                conn.execute(self.tags.delete().where(self.tags.c.run_uuid == run_id, self.tags.c.key.in_(new_tags)))
                conn.execute(self.tags.insert(), list(new_tags.values()))
            if params:
                keys = [p.key for p in params]
                logged = dict(conn.execute(sqlalchemy.select(self.params.c.key, self.params.c.value).where(
                    self.params.c.run_uuid == run_id, self.params.c.key.in_(keys))).all())
                if changed := [p.key for p in params if logged.get(p.key, p.value) != p.value]:
                    raise ValueError(f"run {run_id}: params {changed} were logged before with other values")
                if new := [{"run_uuid": run_id, "key": p.key, "value": p.value} for p in params if p.key not in logged]:
                    conn.execute(self.params.insert(), new)

    def _log_inputs(self, conn: sqlalchemy.Connection, run_id: str, experiment_id: str,
                    inputs: list[DatasetInput]) -> None:
        """What MlflowClient.log_inputs writes: one `datasets` row per (experiment, name, digest),
        shared by the experiment's runs, and per run one `inputs` edge to it with its `input_tags`.
        A dataset already logged to the run is skipped, as in MLflow."""
        unique: dict[tuple[str, str], DatasetInput] = {}
        for i in inputs:
            unique.setdefault((i.dataset.name, i.dataset.digest), i)  # the first one wins, as in MLflow
        uuids = {key: self._dataset_uuid(conn, int(experiment_id), i.dataset) for key, i in unique.items()}
        edges, logged = self.inputs, set()
        if run_id not in self._no_inputs_yet:
            logged = set(conn.execute(sqlalchemy.select(edges.c.source_id).where(
                edges.c.destination_type == "RUN", edges.c.destination_id == run_id,
                edges.c.source_type == "DATASET")).scalars())
        self._no_inputs_yet.discard(run_id)
        rows, tags = [], []
        for key, i in unique.items():
            if uuids[key] in logged:
                continue
            input_uuid = uuid.uuid4().hex
            rows.append({"input_uuid": input_uuid, "source_type": "DATASET", "source_id": uuids[key],
                         "destination_type": "RUN", "destination_id": run_id, "step": 0})
            tags.extend({"input_uuid": input_uuid, "name": t.key, "value": t.value} for t in i.tags)
        if rows:
            conn.execute(edges.insert(), rows)
        if tags:
            conn.execute(self.input_tags.insert(), tags)

    def _dataset_uuid(self, conn: sqlalchemy.Connection, experiment_id: int, dataset: Any) -> str:
        """The experiment's row for this dataset, created when missing; looked up once per process."""
        key = (experiment_id, dataset.name, dataset.digest)
        if key not in self._dataset_uuids:
            from sqlalchemy.dialects.sqlite import insert

            table = self.datasets
            conn.execute(insert(table).on_conflict_do_nothing(), {  # another worker may have made it meanwhile
                "dataset_uuid": uuid.uuid4().hex, "experiment_id": experiment_id, "name": dataset.name,
                "digest": dataset.digest, "dataset_source_type": dataset.source_type,
                "dataset_source": dataset.source, "dataset_schema": dataset.schema,
                "dataset_profile": dataset.profile})
            self._dataset_uuids[key] = conn.execute(sqlalchemy.select(table.c.dataset_uuid).where(
                table.c.experiment_id == experiment_id, table.c.name == dataset.name,
                table.c.digest == dataset.digest)).scalar_one()
        return self._dataset_uuids[key]

    def _update_latest(self, conn: sqlalchemy.Connection, run_id: str, rows: Any) -> None:
        """latest_metrics holds each key's row with the highest (step, timestamp, value), as in MLflow."""
        order = lambda r: (r["step"], r["timestamp"], r["value"])
        latest: dict[str, dict] = {}
        for row in rows:
            if row["key"] not in latest or order(row) > order(latest[row["key"]]):
                latest[row["key"]] = row
        table, replaced = self.latest, []
        query = sqlalchemy.select(table).where(table.c.run_uuid == run_id, table.c.key.in_(list(latest)))
        for old in conn.execute(query).mappings():
            if order(old) >= order(latest[old["key"]]):
                del latest[old["key"]]
            else:
                replaced.append(old["key"])
        if replaced:
            conn.execute(table.delete().where(table.c.run_uuid == run_id, table.c.key.in_(replaced)))
        if latest:
            conn.execute(table.insert(), list(latest.values()))

    def set_terminated(self, run_id: str, status: str = "FINISHED") -> None:
        with self.engine.begin() as conn:
            conn.execute(self.runs.update().where(self.runs.c.run_uuid == run_id).values(
                status=status, end_time=_now_ms()))


def _now_ms() -> int:
    return int(time.time() * 1000)


class Tracker:
    """Experiments and runs of one MLflow store."""

    def __init__(self, uri: str) -> None:
        self.uri = uri = normalize(uri)
        if uri.startswith(("http://", "https://")):
            show_retries()
        if uri.startswith("sqlite:"):  # imported outside the lock below (seconds): only the schema step waits
            import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
        # The client creates a fresh SQLite store's schema when it is made: one process at a time
        with setup_lock(sqlite_file(uri)):
            self.client = MlflowClient(tracking_uri=uri)
        self.sql = _SqlRuns(uri) if uri.startswith("sqlite:") else None
        self._artifact_locations: dict[str, str] = {}

    def experiment_id(self, name: str, *, create: bool = True) -> str | None:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        if not create:
            return None
        root = artifact_root(self.uri)
        location = f"{root}/{name}" if root else None
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException as err:  # another process created it in the meantime
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return self.client.get_experiment_by_name(name).experiment_id

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        """An experiment tag that other workers may be setting at the same moment. MLflow's server
        inserts a new tag without a lock, so the loser of that race gets a unique-key error (seen
        with 4 workers on PostgreSQL behind an MLflow server); the value being stored is what counts."""
        if self.client.get_experiment(experiment_id).tags.get(key) == value:
            return  # set already (every worker after the first)
        try:
            self.client.set_experiment_tag(experiment_id, key, value)
        except MlflowException:
            if self.client.get_experiment(experiment_id).tags.get(key) != value:
                self.client.set_experiment_tag(experiment_id, key, value)  # it exists now: an update

    def find_runs(self, experiment_id: str, tags: dict[str, str], status: str | None = None) -> list:
        """Runs whose tags equal `tags` (and with the given status), oldest first."""
        clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
        if status:
            clauses.append(f"attributes.status = '{status}'")
        runs, token = [], None
        while True:
            page = self.client.search_runs(
                [experiment_id], " and ".join(clauses), max_results=1000, page_token=token,
                order_by=["attributes.start_time ASC"],
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def interrupted_runs(self, study_name: str, workers: set[str], since_ms: int) -> int:
        """Runs of these worker processes (`worker` tag) that an interrupt marked KILLED since `since_ms`."""
        experiment_id = self.experiment_id(study_name, create=False)
        if experiment_id is None:
            return 0
        runs = self.find_runs(experiment_id, {"study": study_name, "error": INTERRUPTED}, status="KILLED")
        return sum(r.data.tags.get("worker") in workers and (r.info.end_time or 0) >= since_ms for r in runs)

    def start_run(
        self, experiment_id: str, name: str, tags: dict[str, str], parent_id: str | None = None
    ) -> RunLogger:
        all_tags = {k: str(v) for k, v in {**provenance(), **tags}.items()}  # REST stores take strings only
        if parent_id:
            all_tags["mlflow.parentRunId"] = parent_id
        if self.sql is None:
            run = self.client.create_run(experiment_id, run_name=name, tags=all_tags)
            return RunLogger(self.client, run.info.run_id, run.info.artifact_uri, experiment_id=experiment_id)
        run_id = uuid.uuid4().hex  # as MLflow's store makes them; the row exists when this returns
        if experiment_id not in self._artifact_locations:
            self._artifact_locations[experiment_id] = self.client.get_experiment(experiment_id).artifact_location
        artifact_uri = append_to_uri_path(self._artifact_locations[experiment_id], run_id, "artifacts")
        self.sql.create_run(run_id, experiment_id, name, artifact_uri, {**all_tags, "mlflow.runName": name})
        return RunLogger(self.client, run_id, artifact_uri, sql=self.sql, experiment_id=experiment_id)

    def resume_run(self, run_id: str) -> RunLogger:
        self.client.update_run(run_id, status="RUNNING")
        info = self.client.get_run(run_id).info
        return RunLogger(self.client, run_id, info.artifact_uri, sql=self.sql, experiment_id=info.experiment_id)


class RunLogger:
    """One MLflow run with buffered metrics; also usable as a `train.fit` reporter."""

    def __init__(self, client: MlflowClient, run_id: str, artifact_uri: str = "", flush_every_s: float = 5.0,
                 sql: _SqlRuns | None = None, experiment_id: str = "") -> None:
        self.client, self.run_id, self.artifact_uri = client, run_id, artifact_uri
        self.sql = sql  # when set, the run's batches and status go through it instead of the client
        self.experiment_id = experiment_id  # where the SQL path files the run's datasets
        self.flush_every_s = flush_every_s
        self._metrics: list[Metric] = []
        self._params: list[Param] = []
        self._tags: list[RunTag] = []
        self._inputs: list[DatasetInput] = []
        self._last_flush = time.monotonic()
        self.ended = False

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        self.log_metrics(metrics, step=epoch)
        if time.monotonic() - self._last_flush > self.flush_every_s:
            self.flush()

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        self._metrics.extend(Metric(k, float(v), now, step) for k, v in metrics.items())

    def log_params(self, params: dict[str, Any]) -> None:
        self._params.extend(Param(k, str(v)) for k, v in params.items())

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._tags.extend(RunTag(k, str(v)) for k, v in tags.items())

    def log_inputs(self, inputs: list[DatasetInput]) -> None:
        """Dataset inputs (see `dataset_inputs`), written with the run's next batch."""
        self._inputs.extend(inputs)

    def log_dict(self, data: Any, path: str) -> None:
        """JSON artifact. Local artifact stores get a direct file write (~0.1 ms instead of ~8 ms
        through the artifact repository, which matters once per trial)."""
        if self.artifact_uri.startswith("file://"):
            target = Path(urlsplit(self.artifact_uri).path) / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(data, indent=2, default=str))
        else:
            self.client.log_dict(self.run_id, data, path)

    def flush(self) -> None:
        metrics, params, tags, inputs = self._metrics, self._params, self._tags, self._inputs
        self._metrics, self._params, self._tags, self._inputs = [], [], [], []
        if inputs and self.sql is None:
            self.client.log_inputs(self.run_id, datasets=inputs)
        pending = (self.experiment_id, inputs) if inputs and self.sql else None  # SQL: in the first batch's transaction
        while metrics or params or tags or pending:
            if self.sql is None:
                self.client.log_batch(self.run_id, metrics=metrics[:_BATCH], params=params[:_PARAM_BATCH],
                                      tags=tags[:_PARAM_BATCH])
            else:
                self.sql.log_batch(self.run_id, metrics[:_BATCH], params[:_PARAM_BATCH], tags[:_PARAM_BATCH],
                                   inputs=pending)
            metrics, params, tags, pending = metrics[_BATCH:], params[_PARAM_BATCH:], tags[_PARAM_BATCH:], None
        self._last_flush = time.monotonic()

    def finish(self, status: str = "FINISHED", *, background: bool = False) -> None:
        """Flush and end the run (FINISHED, FAILED or KILLED); safe to call twice.

        background=True hands the closing writes to the process's writer thread (see _Writer);
        the caller must `WRITER.drain()` before it relies on the run being closed.
        """
        if self.ended:
            return
        self.ended = True
        if background:
            closing = RunLogger(self.client, self.run_id, self.artifact_uri, sql=self.sql,
                                experiment_id=self.experiment_id)
            closing._metrics, closing._params, closing._tags, closing._inputs = (
                self._metrics, self._params, self._tags, self._inputs)
            self._metrics, self._params, self._tags, self._inputs = [], [], [], []
            WRITER.submit(lambda: closing._close(status))
        else:
            self._close(status)

    def _close(self, status: str) -> None:
        try:
            self.flush()
        finally:
            (self.sql or self.client).set_terminated(self.run_id, status=status)


def flat_error(err: BaseException) -> str:
    """One line for an error tag: type and first line of the message, bounded."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}"[:500]
