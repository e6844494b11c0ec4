"""Store URLs and the checks made before a command writes anything (no MLflow/Optuna import here).

- **PostgreSQL driver.** SQLAlchemy 2.1 reads a bare `postgresql://` as psycopg 3, but the suite
  installs psycopg2 (`psycopg2-binary`): `postgresql://` and `postgres://` are used as
  `postgresql+psycopg2://` for the Optuna storage, the study lock and MLflow tracking URIs.
- **Credentials** never appear in a message: `redact` (one URL) and `redact_text` (any text).
- **Refused connections** are found in seconds (`check_reachable`: one TCP connect per network
  store), before MLflow's or SQLAlchemy's own retries start.
- **Tracking-server retries** are bounded by explicit MLflow settings (`HTTP_RETRY`, defaults for
  the environment variables of the same names) and each retry prints one line (`show_retries`).
- **One SQLite file for both stores** is refused (`check_distinct`): both schemas would be created
  in it and Optuna then refuses the file.
- **Schema creation** of a local store runs under a file lock (`setup_lock`): two processes
  creating or migrating one fresh SQLite file at once collide ("duplicate column name: step",
  "table alembic_version already exists").
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEFAULT_STORAGE = "optuna.journal"  # Optuna's embedded default: a journal file in the working directory
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "http": 80, "https": 443}
CONNECT_TIMEOUT_S = 5  # a store that does not accept a TCP connection in this time is unreachable
# MLflow tracking-server requests (read by MLflow on each request; a user's own values win).
# Worst case per request: (1 + 3 retries) x 20 s + backoff 2 + 4 s (+ jitter) ~ 1.5 min; a refused
# connection is found by check_reachable before any of this.
HTTP_RETRY = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
_CREDENTIALS = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^/\s:@]*:)[^/\s@]*@")


class StoreError(Exception):
    """A store URL that cannot work; the message is one line without credentials."""


def redact(url: str) -> str:
    """Hide credentials: postgresql://user:secret@host/db -> postgresql://user:***@host/db."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def redact_text(text: str) -> str:
    """Every `scheme://user:password@` in a message becomes `scheme://user:***@`."""
    return _CREDENTIALS.sub(r"\1***@", text)


def normalize(url: str) -> str:
    """The PostgreSQL driver that is installed (psycopg2) for either spelling of the URL."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg2://{rest}"
    return url


def tracking_uri(explicit: str | None = None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else SQLite in the working directory."""
    return normalize(explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI)


def sqlite_file(url: str) -> Path | None:
    """The file of a `sqlite:///F` URL (None for other URLs and in-memory databases)."""
    if not url.startswith("sqlite"):
        return None
    path = url.split(":///", 1)[1].split("?", 1)[0] if ":///" in url else ""
    return Path(path) if path and path != ":memory:" else None


def _local_file(storage: str) -> Path | None:
    """The file behind an Optuna storage URL: a SQLite file or a journal file."""
    if "://" in storage:
        return sqlite_file(storage)
    return Path(storage.removeprefix("journal:"))


def check_distinct(storage: str, tracking_uri: str) -> None:
    """Optuna and MLflow must not share one file (both schemas would land in it)."""
    optuna_file, mlflow_file = _local_file(storage), sqlite_file(tracking_uri)
    if optuna_file is None or mlflow_file is None:
        return
    if os.path.realpath(optuna_file) == os.path.realpath(mlflow_file):
        raise StoreError(f"--storage and --tracking-uri are the same file ({mlflow_file}): Optuna and MLflow need "
                         "one each, e.g. --storage optuna.journal --tracking-uri sqlite:///mlflow.db")


def check_reachable(url: str, what: str) -> None:
    """One TCP connect to a network store (database or tracking server), in at most CONNECT_TIMEOUT_S."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return  # files, or a socket path (postgresql:///db?host=/run/postgresql): the driver decides
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
        with socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except ValueError as err:  # a port that is not a number
        raise StoreError(f"{what} {redact(url)}: {err}") from None
    except socket.gaierror:
        raise StoreError(f"{what} {redact(url)}: unknown host {parts.hostname}") from None
    except TimeoutError:
        raise StoreError(f"{what} {redact(url)}: no answer from {parts.hostname}:{port} in "
                         f"{CONNECT_TIMEOUT_S} s") from None
    except OSError as err:
        reason = (err.strerror or str(err)).lower()
        raise StoreError(f"{what} {redact(url)}: {reason} ({parts.hostname}:{port})") from None


def check(storage: str | None, tracking_uri: str) -> None:
    """Everything about the store URLs that can be checked before anything is written."""
    storage = storage or DEFAULT_STORAGE
    check_distinct(storage, tracking_uri)
    check_reachable(storage, "Optuna storage")
    check_reachable(tracking_uri, "MLflow tracking URI")


def prepare(study_name: str, storage: str | None, tracking_uri: str) -> None:
    """Check the store URLs, then create both stores (each schema under its setup lock) and the
    study's MLflow experiment, before any worker starts or anything is trained."""
    check(storage, tracking_uri)
    import sqlalchemy
    from mlflow.exceptions import MlflowException

    from bench.tracking import Tracker
    from bench.tuning.storage import open_storage

    try:
        Tracker(tracking_uri).experiment_id(study_name)
    except (MlflowException, sqlalchemy.exc.SQLAlchemyError) as err:
        raise StoreError(f"MLflow tracking URI {redact(tracking_uri)}: {describe_error(err)}") from None
    open_storage(storage)  # its errors are StoreErrors already


@contextlib.contextmanager
def setup_lock(path: Path | str | None) -> Iterator[None]:
    """Exclusive lock on `<path>.bench-setup-lock` while a local store's schema is created (no-op
    without a path). Not the study lock's file: the two are taken at different times, never nested."""
    if path is None:
        yield
        return
    lock = Path(f"{path}.bench-setup-lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def describe_error(err: BaseException) -> str:
    """First line of an error, redacted (SQLAlchemy's and MLflow's messages quote whole URLs)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = re.sub(r"^\([\w.]+\) ", "", text)  # SQLAlchemy's "(psycopg2.OperationalError) " prefix
    return redact_text(text)[:400]


class _RetryLine(logging.Handler):
    """One stderr line per retry of an MLflow request (urllib3 logs them at DEBUG only)."""

    def emit(self, record: logging.LogRecord) -> None:
        if not str(record.msg).startswith("Incremented Retry") or len(record.args or ()) < 2:
            return
        url, retry = record.args[0], record.args[1]
        history = getattr(retry, "history", ()) or ()
        last = history[-1] if history else None
        cause = (type(last.error).__name__ if last is not None and last.error is not None
                 else f"HTTP {last.status}" if last is not None and last.status else "no answer")
        limit = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "?")
        path = urlsplit(str(url)).path
        print(f"MLflow tracking server: {cause} on {path}; retry {len(history)} of {limit}", file=sys.stderr)


def show_retries() -> None:
    """Explicit retry bounds for MLflow's HTTP requests, and a visible line per retry."""
    for key, value in HTTP_RETRY.items():
        os.environ.setdefault(key, value)
    logger = logging.getLogger("urllib3.util.retry")
    if not any(isinstance(h, _RetryLine) for h in logger.handlers):
        logger.addHandler(_RetryLine(logging.DEBUG))
        logger.setLevel(logging.DEBUG)
