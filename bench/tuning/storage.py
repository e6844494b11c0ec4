"""Optuna storage from a URL; the embedded default is a journal file in the working directory.

- `optuna.journal` (default) or any path / `journal:PATH`: JournalStorage on a file, safe for
  several processes on one machine (Optuna's recommendation over SQLite for that case). Its
  file lock is InterruptSafeJournalLock: a Ctrl-C never removes another process's lock.
- `sqlite:///...`, `postgresql://...`, `mysql://...`: RDBStorage (PostgreSQL for many machines).
  `postgresql://` uses psycopg2 (bench.stores.normalize); a SQLite file's schema is created under
  a file lock, so that two commands starting on a fresh file do not race.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from bench import interrupt
from bench.stores import DEFAULT_STORAGE as DEFAULT_STORAGE  # re-exported
from bench.stores import StoreError, describe_error, normalize, redact, setup_lock, sqlite_file

if TYPE_CHECKING:
    from bench.spec import Arm, StudySpec

HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 60  # a RUNNING trial without a heartbeat for this long belongs to a dead worker
RDB_SCHEMES = ("sqlite", "postgresql", "mysql")


def optuna_study_name(spec: StudySpec, arm: Arm) -> str:
    """The Optuna study of one arm."""
    return f"{spec.name}/{arm.name}"


def is_rdb(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0] in RDB_SCHEMES + ("postgres",)


def open_storage(url: str | None) -> optuna.storages.BaseStorage:
    url = normalize(url or DEFAULT_STORAGE)
    if is_rdb(url):
        import sqlalchemy  # not for a journal file (the default): `bench report` reads it without

        engine_kwargs: dict = {"pool_pre_ping": True}
        if url.startswith("postgresql"):
            engine_kwargs["connect_args"] = {"connect_timeout": 10}  # an unroutable host: seconds, not minutes
        try:
            with setup_lock(sqlite_file(url)), warnings.catch_warnings():
                # heartbeat_interval / grace_period are "experimental" arguments: not the user's concern
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                                  heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=GRACE_PERIOD_S)
        except ImportError as err:  # Optuna's "Failed to import DB access module": name the module
            raise StoreError(f"Optuna storage {redact(url)}: {describe_error(err.__cause__ or err)}") from None
        except sqlalchemy.exc.SQLAlchemyError as err:  # refused, no such database, no access
            raise StoreError(f"Optuna storage {redact(url)}: {describe_error(err)}") from None
    path = Path(url.removeprefix("journal:"))
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=InterruptSafeJournalLock(str(path))))


class InterruptSafeJournalLock(JournalFileSymlinkLock):
    """Optuna's journal lock (the same `<journal>.lock` symlink, so that it excludes every other
    Optuna process too), safe against Ctrl-C and SIGTERM (bench.interrupt).

    With Optuna's own lock an interrupt can land at three bad instants: at an attempt to lock
    (its clean-up then removes the lock file, another process's), right after the lock is taken
    (the lock is left behind: every process waits out its 30 s grace period), or as the lock is
    released (its clean-up unlinks a file already gone: FileNotFoundError replaces the interrupt,
    and a worker fails its trial as broken and goes on with the study). In 4,000 appends with a
    SIGINT at a random instant (tests/test_journal_lock.py) that was 62 interrupts replaced by an
    error and 18 locks left behind; with this lock, none.
    Here an interrupt while waiting leaves the file alone and is raised at once; one that lands
    while the lock is held is raised right after release(): none of the three can happen.
    """

    def __init__(self, filepath: str, grace_period: int | None = 30) -> None:
        super().__init__(filepath, grace_period)
        self._deferral: contextlib.ExitStack | None = None

    def acquire(self) -> bool:
        sleep_s, seen = 0.001, (None, time.monotonic())  # (lock file's mtime, when it last changed)
        while True:
            with contextlib.ExitStack() as deferral:
                deferral.enter_context(interrupt.deferred())  # the lock taken and the deferral kept, or neither
                try:
                    os.symlink(self._lock_target_file, self._lock_file)
                except FileExistsError:
                    pass  # another process's: the deferral ends, an interrupt is raised while we wait
                else:
                    self._deferral = deferral.pop_all()
                    return True
            try:
                mtime = os.stat(self._lock_file).st_mtime
            except FileNotFoundError:
                continue  # released meanwhile
            if mtime != seen[0]:
                seen = (mtime, time.monotonic())
            elif self.grace_period is not None and time.monotonic() - seen[1] > self.grace_period:
                with contextlib.suppress(RuntimeError):  # a holder that died: Optuna's stale-lock rule
                    super().release()
                continue
            time.sleep(sleep_s)
            sleep_s = min(sleep_s * 2, 1.0)

    def release(self) -> None:
        deferral, self._deferral = self._deferral, None
        try:
            super().release()
        finally:
            if deferral is not None:
                deferral.close()  # raises the interrupt that came while the lock was held
