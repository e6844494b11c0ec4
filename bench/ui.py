"""`bench ui`: the MLflow UI and the Optuna dashboard on a study's stores, side by side.

Two child processes, each in its own process group (session), so that stopping them reaches
every process they started (`mlflow server` runs uvicorn as a grandchild):

- `mlflow server --backend-store-uri URI` (default sqlite:///mlflow.db; artifacts served from the
  mlartifacts/ folder beside a SQLite store, else ./mlartifacts),
- `optuna_dashboard.run_server(storage, host, port)` on the storage that `bench run` uses
  (`bench.tuning.storage.open_storage`: journal file, SQLite or PostgreSQL; the Python API takes
  a JournalStorage object, which the dashboard's CLI only reaches through a file path).

Both bind to 127.0.0.1 by default. Ctrl-C (or SIGTERM) stops both groups: SIGTERM, then SIGKILL
after a grace period, and the command returns only when no process of either group is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bench.tracking import artifact_root
from bench.tuning.storage import DEFAULT_STORAGE, is_rdb

GRACE_S = 10.0


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


def mlflow_command(tracking_uri: str, host: str, port: int) -> list[str]:
    root = artifact_root(tracking_uri)
    artifacts = urlsplit(root).path if root else str(Path("mlartifacts").resolve())
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri, "--host", host,
            "--port", str(port), "--workers", "1", "--artifacts-destination", artifacts]


def dashboard_command(storage: str, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "bench.ui", "dashboard", storage, host, str(port)]


def check_stores(tracking_uri: str, storage: str) -> str | None:
    """A one-line problem when a local store does not exist (the servers would create empty ones)."""
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).exists():
        return f"no MLflow store at {tracking_uri}: run a study first or pass --tracking-uri"
    if not is_rdb(storage) and not Path(storage.removeprefix("journal:")).exists():
        return f"no Optuna storage at {storage}: run a study first or pass --storage"
    return None


def _start(cmd: list[str], log: Path | None) -> subprocess.Popen:
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_ready(server: Server, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and server.alive:
        try:
            with urllib.request.urlopen(server.url, timeout=2) as resp:
                if resp.status < 500:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.3)
    return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop(servers: list[Server], grace_s: float = GRACE_S) -> None:
    """SIGTERM every group, wait, SIGKILL what is left; reap the leaders."""
    groups = [s.proc.pid for s in servers]  # start_new_session: pgid == leader pid
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        for s in servers:
            s.proc.poll()  # reap the leader so that the group check below can succeed
        if not any(_group_alive(g) for g in groups):
            break
        time.sleep(0.1)
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for s in servers:
        s.proc.wait()


def serve(tracking_uri: str, storage: str | None, *, host: str = "127.0.0.1", mlflow_port: int = 5000,
          dashboard_port: int = 8080, log_dir: Path | None = None, ready_timeout_s: float = 90.0,
          echo: Callable[[str], None] = lambda s: print(s, flush=True),
          until: Callable[[], bool] | None = None) -> int:
    """Start both servers, print their URLs, block until Ctrl-C / SIGTERM (or `until()` is true,
    or a server dies), then stop both. Returns the exit code."""
    storage = storage or DEFAULT_STORAGE
    if problem := check_stores(tracking_uri, storage):
        echo(f"bench ui: {problem}")
        return 2
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
    servers: list[Server] = []
    # both stop it, also where it was started with SIGINT ignored (a background job of a
    # non-interactive shell), as they stop `bench run`
    previous = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        servers.append(Server("MLflow UI", f"http://{shown}:{mlflow_port}/",
                              _start(mlflow_command(tracking_uri, host, mlflow_port),
                                     log_dir / "mlflow.log" if log_dir else None)))
        servers.append(Server("Optuna dashboard", f"http://{shown}:{dashboard_port}/",
                              _start(dashboard_command(storage, host, dashboard_port),
                                     log_dir / "optuna-dashboard.log" if log_dir else None)))
        for s in servers:
            if not wait_ready(s, ready_timeout_s):
                echo(f"bench ui: {s.name} did not start (exit code {s.proc.poll()}); "
                     f"{'see ' + str(log_dir) if log_dir else 'is the port free?'}")
                return 1
        for s in servers:
            echo(f"{s.name:<17} {s.url}")
        echo("Ctrl-C stops both.")
        while all(s.alive for s in servers):
            if until is not None and until():
                return 0
            time.sleep(0.5)
        dead = next(s for s in servers if not s.alive)
        echo(f"bench ui: {dead.name} exited with code {dead.proc.returncode}; stopping the other")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop(servers)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _dashboard_main(storage: str, host: str, port: str) -> None:
    """Child process: the dashboard on the storage `bench run` opens (JournalStorage object)."""
    import optuna_dashboard

    from bench.tuning.storage import open_storage

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    optuna_dashboard.run_server(open_storage(storage), host=host, port=int(port))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "dashboard":
        _dashboard_main(*sys.argv[2:])
    else:
        sys.exit("usage: python -m bench.ui dashboard STORAGE HOST PORT (use `bench ui`)")
