"""Optuna storage from a URL; the embedded default is a journal file in the working directory.

- `optuna.journal` (default) or any path / `journal:PATH`: JournalStorage on a file, safe for
  several processes on one machine (Optuna's recommendation over SQLite for that case).
- `sqlite:///...`, `postgresql://...`, `mysql://...`: RDBStorage (PostgreSQL for many machines).
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend

DEFAULT_STORAGE = "optuna.journal"
HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 60  # a RUNNING trial without a heartbeat for this long belongs to a dead worker
RDB_SCHEMES = ("sqlite", "postgresql", "mysql")


def is_rdb(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0] in RDB_SCHEMES


def open_storage(url: str | None) -> optuna.storages.BaseStorage:
    url = url or DEFAULT_STORAGE
    if is_rdb(url):
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True},
                                          heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=GRACE_PERIOD_S)
    path = Path(url.removeprefix("journal:"))
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
