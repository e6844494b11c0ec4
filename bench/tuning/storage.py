"""Optuna storage from a URL; the embedded default is a journal file in the working directory.

- `optuna.journal` (default) or any path / `journal:PATH`: JournalStorage on a file, safe for
  several processes on one machine (Optuna's recommendation over SQLite for that case).
- `sqlite:///...`, `postgresql://...`, `mysql://...`: RDBStorage (PostgreSQL for many machines).
  `postgresql://` uses psycopg2 (bench.stores.normalize); a SQLite file's schema is created under
  a file lock, so that two commands starting on a fresh file do not race.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.storages.journal import JournalFileBackend

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
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
