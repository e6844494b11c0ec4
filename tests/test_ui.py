"""`bench ui` in a real browser: MLflow UI and Optuna dashboard on a finished quick study, read by
headless Chromium after their JavaScript ran (`--virtual-time-budget --dump-dom`), screenshots
saved; Ctrl-C must stop both servers and every process they started.

Needs Debian's `chromium` (CI: apt-get install chromium). Under CI (env CI set) a missing browser
fails the test; elsewhere it is skipped with the reason. BENCH_UI_SCREENSHOTS=DIR keeps a copy
of the screenshots.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from tests.conftest import REPO
from tests.test_report import ARMS, quick_study  # noqa: F401 - session fixture shared with the report tests

pytestmark = pytest.mark.slow
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> str:
    found = os.environ.get("CHROMIUM") or next((p for b in BROWSERS if (p := shutil.which(b))), None)
    if found:
        return found
    msg = "no headless Chromium on PATH (CI must `apt-get install chromium`; or set CHROMIUM=/path)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(reason=f"{msg}; CI fails instead")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    def __init__(self, exe: str, profile: Path) -> None:
        self.base = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--no-first-run", "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1400,900",
                     f"--user-data-dir={profile}", "--virtual-time-budget=15000"]

    def dom(self, url: str) -> str:
        out = subprocess.run([*self.base, "--dump-dom", url], capture_output=True, text=True, timeout=120)
        return out.stdout

    def text(self, url: str) -> str:
        """Visible text of the page after its JavaScript ran."""
        s = re.sub(r"<script.*?</script>|<style.*?</style>", " ", self.dom(url), flags=re.S)
        return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", s)))

    def screenshot(self, url: str, path: Path) -> Path:
        subprocess.run([*self.base, f"--screenshot={path}", url], capture_output=True, timeout=120)
        return path


def process_tree(root: int) -> set[int]:
    """Every process whose parent chain or process group leads to `root` (Linux /proc)."""
    info = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            info[int(entry.name)] = (int(fields[1]), int(fields[2]))  # ppid, pgid
    tree = {root}
    for _ in range(6):
        tree |= {pid for pid, (ppid, pgid) in info.items() if ppid in tree or pgid in tree}
    return tree - {root}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_bench_ui_lists_the_study_in_both_uis_and_stops_cleanly(quick_study, tmp_path):  # noqa: F811
    browser = Browser(find_browser(), tmp_path / "profile")
    stores = quick_study
    shots = tmp_path / "screenshots"
    shots.mkdir()
    mport, dport = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "ui", "--tracking-uri", stores.tracking_uri, "--storage", stores.storage,
         "--mlflow-port", str(mport), "--dashboard-port", str(dport), "--log-dir", str(tmp_path / "logs")],
        cwd=stores.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    tree: set[int] = set()
    try:
        lines = []
        deadline = time.time() + 150
        while time.time() < deadline and not any("Ctrl-C" in ln for ln in lines):
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line)
        assert any(f"http://localhost:{mport}/" in ln for ln in lines), "".join(lines)
        assert any(f"http://localhost:{dport}/" in ln for ln in lines), "".join(lines)
        tree = process_tree(proc.pid)
        assert len(tree) >= 3  # mlflow server + its uvicorn + the dashboard

        client = MlflowClient(stores.tracking_uri)
        exp = client.get_experiment_by_name("quickstart-quick")
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        mlflow = f"http://127.0.0.1:{mport}"
        page = browser.text(f"{mlflow}/#/experiments/{exp.experiment_id}/runs")
        assert "quickstart-quick" in page and f"{len(runs)} matching runs" in page, page[:2000]
        assert all(re.search(rf"\b{arm}\b", page) for arm in ARMS)  # the parent runs, named by arm
        browser.screenshot(f"{mlflow}/#/experiments/{exp.experiment_id}/runs", shots / "mlflow-runs.png")
        # the compare view of the eval runs and of the tuning trials lists them by name, no typing needed
        for phase, pattern in (("eval", r"/seed-\d"), ("tune", r"/trial-\d{3}")):
            chosen = [r for r in runs if r.data.tags.get("phase") == phase]
            ids = urllib.parse.quote(json.dumps([r.info.run_id for r in chosen]))
            experiments = urllib.parse.quote(json.dumps([exp.experiment_id]))
            url = f"{mlflow}/#/compare-runs?runs={ids}&experiments={experiments}"
            page = browser.text(url)
            assert f"Comparing {len(chosen)} Runs" in page, page[:2000]
            names = {r.info.run_name for r in chosen}
            assert all(name in page for name in names) and all(re.search(pattern, n) for n in names)
            if phase == "eval":
                browser.screenshot(url, shots / "mlflow-compare-eval.png")

        dashboard = f"http://127.0.0.1:{dport}"
        page = browser.text(f"{dashboard}/dashboard")
        assert all(f"quickstart-quick/{arm}" in page for arm in ARMS), page[:2000]
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(stores.storage))
        study = optuna.load_study(study_name="quickstart-quick/adam", storage=storage)
        sid = storage.get_study_id_from_name(study.study_name)
        page = browser.text(f"{dashboard}/dashboard/studies/{sid}")
        assert f"Best Trial (number={study.best_trial.number})" in page and repr(study.best_value)[:8] in page
        browser.screenshot(f"{dashboard}/dashboard/studies/{sid}", shots / "optuna-dashboard-study.png")
        page = browser.text(f"{dashboard}/dashboard/studies/{sid}/trials")
        assert all(f"Trial {t.number}" in page for t in study.trials)
        assert study.trials[0].user_attrs["mlflow_run_id"] in page  # the link back to MLflow
        for shot in shots.iterdir():
            assert shot.stat().st_size > 10_000, shot
        if os.environ.get("BENCH_UI_SCREENSHOTS"):
            shutil.copytree(shots, os.environ["BENCH_UI_SCREENSHOTS"], dirs_exist_ok=True)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        rc = proc.wait(60)
    assert rc == 0
    time.sleep(0.5)
    left = [pid for pid in tree if alive(pid)]
    assert not left, f"orphan processes after Ctrl-C: {left}"
