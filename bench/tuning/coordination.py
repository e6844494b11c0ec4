"""Coordination of several worker processes (one machine or many) on one study.

Trial slots and evaluation seeds are claimed under a study-wide lock, so budgets are exact:
`n_trials` finished trials per arm and one FINISHED eval run per seed, none lost, none duplicated.

- Journal file storage (one machine): an fcntl lock on `<journal>.lock`.
- SQLite RDB storage (one machine): an fcntl lock on `<db>.lock`.
- PostgreSQL (many machines): a session-level advisory lock (`pg_advisory_lock`).

A worker is identified as `host:pid`; a RUNNING trial whose worker is on this host and no longer
alive is an orphan. Across machines, RDB heartbeats (Optuna's `record_heartbeat` /
`fail_stale_trials`) find trials whose worker went silent.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages._heartbeat import is_heartbeat_enabled

from bench import interrupt
from bench.stores import normalize
from bench.tuning.storage import DEFAULT_STORAGE, HEARTBEAT_INTERVAL_S, is_rdb


def worker_id(pid: int) -> str:
    """How a worker process names itself in the stores (tags and trial attributes)."""
    return f"{socket.gethostname()}:{pid}"


WORKER_ID = worker_id(os.getpid())


def slurm_job() -> str:
    """This process's Slurm job as scancel/squeue name it ("123_4" for an array task), else ""."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID", "")


# Who holds a trial or an eval run: Optuna user attrs and MLflow tags (bench status shows them).
WORKER_ATTRS = {"worker": WORKER_ID, **({"slurm_job": slurm_job()} if slurm_job() else {})}


def worker_alive(worker: str | None) -> bool:
    """False only when we can tell: same host and the pid is gone."""
    if not worker or ":" not in worker:
        return False
    host, pid = worker.rsplit(":", 1)
    if host != socket.gethostname():
        return True  # other machines: heartbeats decide
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    try:  # a killed worker that its parent has not reaped yet is a zombie: dead all the same
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class StudyLock:
    """Mutual exclusion between the workers of one study (see module docstring)."""

    def __init__(self, storage_url: str | None, study_name: str) -> None:
        url = normalize(storage_url or DEFAULT_STORAGE)
        self.url, self.study_name = url, study_name
        self._engine = None
        if url.startswith("postgresql"):
            self._engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
            digest = hashlib.sha256(study_name.encode()).digest()
            self._key = int.from_bytes(digest[:8], "big", signed=True)
        else:
            path = url.split("///", 1)[1] if is_rdb(url) else url.removeprefix("journal:")
            # not "<path>.lock": Optuna's journal backend creates and deletes that file as its own lock
            self._path = Path(f"{path}.bench-lock")

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        # What is done under the lock are short store updates (a trial asked for and marked as
        # ours, a seed claimed): an interrupt waits for their end, so none is left half done.
        with interrupt.deferred(), self._held():
            yield

    @contextlib.contextmanager
    def _held(self) -> Iterator[None]:
        if self._engine is not None:
            with self._engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self._key})
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def heartbeats_on(storage: optuna.storages.BaseStorage) -> bool:
    """True for RDB storages opened with a heartbeat interval (the study's storage is Optuna's
    caching wrapper around it, which forwards heartbeats)."""
    return is_heartbeat_enabled(storage)


class Heartbeat:
    """Records an RDB heartbeat for a running trial every HEARTBEAT_INTERVAL_S (no-op otherwise)."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_id: int) -> None:
        self._stop = threading.Event()
        self._thread = None
        if heartbeats_on(storage):
            storage.record_heartbeat(trial_id)
            self._thread = threading.Thread(target=self._beat, args=(storage, trial_id), daemon=True)
            self._thread.start()

    def _beat(self, storage: optuna.storages.BaseStorage, trial_id: int) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL_S):
            with contextlib.suppress(Exception):  # a missed beat is retried; the trial goes on
                storage.record_heartbeat(trial_id)

    def __enter__(self) -> Heartbeat:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
