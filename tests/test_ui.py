"""`bench ui` in a real browser: MLflow UI and Optuna dashboard on a finished quick study, read by
headless Chromium after their JavaScript ran (`--virtual-time-budget --dump-dom`), screenshots
saved; Ctrl-C must stop both servers and every process they started. The arm-level views (the
`ranking` view of the parent runs, their compare view) are driven through the DevTools protocol,
which can wait for a column to render, scroll a table and close MLflow's assistant panel.

Needs Debian's `chromium` (CI: apt-get install chromium). Under CI (env CI set) a missing browser
fails the test; elsewhere it is skipped with the reason. BENCH_UI_SCREENSHOTS=DIR keeps a copy
of the screenshots. The README's arm-level screenshots come from a real quickstart:
`python -m tests.test_ui DIR` (DIR holds its mlflow.db and optuna.journal) writes them to
docs/screenshots/.
"""

from __future__ import annotations

import base64
import bisect
import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from tests.conftest import REPO
from tests.test_report import ARMS

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


class DevTools:
    """Headless Chromium driven over `--remote-debugging-pipe`: DevTools protocol messages, JSON
    terminated by NUL, written to the browser's fd 3 and read from its fd 4 (no extra packages)."""

    def __init__(self, exe: str, profile: Path, width: int, height: int) -> None:
        commands, self._out = os.pipe()
        self._in, events = os.pipe()

        def browser_fds() -> None:  # in the child, before exec
            os.dup2(commands, 3)
            os.dup2(events, 4)

        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
             "--disable-dev-shm-usage", "--hide-scrollbars", f"--window-size={width},{height}",
             f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            pass_fds=(3, 4), preexec_fn=browser_fds, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(commands)
        os.close(events)
        self._buffer, self._id = b"", 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:  # events and other replies are skipped
            while b"\0" not in self._buffer:
                chunk = os.read(self._in, 1 << 16)
                if not chunk:
                    raise RuntimeError("chromium closed its DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def js(self, expression: str):
        out = self.call("Runtime.evaluate", self.session, expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in out:
            raise RuntimeError(out["exceptionDetails"].get("exception", {}).get("description", expression[:200]))
        return out["result"].get("value")

    def open(self, url: str, text: str, timeout_s: float = 90) -> str:
        """Load `url` and wait until the page shows `text`; returns the page's visible text."""
        self.call("Page.navigate", self.session, url=url)
        return self.wait_for(text, timeout_s)

    def wait_for(self, text: str, timeout_s: float = 10) -> str:
        deadline, page = time.time() + timeout_s, ""
        while time.time() < deadline:
            time.sleep(0.5)
            page = self.js("document.body ? document.body.innerText : ''") or ""
            if text in page:
                return page
        raise AssertionError(f"no {text!r} on the page after {timeout_s} s: {page[:1500]}")

    def screenshot(self, path: Path) -> Path:
        self.call("Page.captureScreenshot", self.session, format="png")  # a first frame settles layout
        time.sleep(0.5)
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", self.session, format="png")["data"]))
        return path

    def close(self) -> None:
        try:
            self.call("Browser.close")
            self.proc.wait(30)
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(30)
        os.close(self._in)
        os.close(self._out)


# Page helpers: an element by its whole text; scrolling the compare view's metrics table, which
# is two virtualized grids in a fixed box (names, values: the values grid first, the names after it
# has rendered, else they snap back).
PAGE_HELPERS = """
window.byText = t => [...document.querySelectorAll('*')].filter(e => e.textContent.trim() === t).pop();
window.scrollRows = (section, rows) => {
  const box = byText(section).closest('.du-bois-light-collapse-item');
  const grids = [...box.querySelectorAll('.ReactVirtualized__Grid')];
  const height = grids[0].firstChild.firstChild.offsetHeight;
  grids.reverse().forEach(g => { g.scrollTop = rows * height; });
  return grids.length;
};
true
"""
# MLflow's UI opens its assistant panel (a third of the width) on a first visit; these keep it closed
CLOSE_ASSISTANT = ("localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
                   "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false')")


def arm_views(browser: str, profile: Path, mlflow: str, client: MlflowClient, experiment_id: str,
              shots: Path) -> None:
    """The `ranking` view lists the parent runs, best test mean first, with the ranking column
    visible; the compare view of the four parent runs shows their best parameters and scores."""
    parents = client.search_runs([experiment_id], "tags.phase = 'arm'",
                                 order_by=["metrics.`result/test_acc_mean` DESC"])
    names = [r.info.run_name for r in parents]
    ranking_url = f"{mlflow}/#/experiments/{experiment_id}/runs?viewStateShareKey=ranking"
    tools = DevTools(browser, profile, 2300, 600)
    try:
        tools.open(f"{mlflow}/#/experiments", "Experiments")
        tools.js(CLOSE_ASSISTANT)
        tools.call("Page.reload", tools.session)  # the app reads them when it starts
        tools.wait_for("Experiments")
        page = tools.open(ranking_url, "result/test_acc_ci95_low")  # a column header: the table has rendered
        assert "You're viewing a shared view" in page and "4 matching runs" in page, page[:2000]
        for column in ("result/rank", "result/test_acc_mean", "result/test_acc_ci95_low", "result/best_val_acc"):
            assert column in page  # the column header is rendered, not only offered under "Columns"
        for run in parents:  # and its values: JavaScript and Python print floats alike
            assert repr(run.data.metrics["result/test_acc_mean"]) in page, run.info.run_name
        shown = tools.js(f"""[...document.querySelectorAll('a')].filter(a => {json.dumps(names)}.includes(
            a.textContent.trim())).sort((a, b) => a.getBoundingClientRect().top - b.getBoundingClientRect().top)
            .map(a => a.textContent.trim())""")
        assert shown == names  # top to bottom: the ranking
        tools.screenshot(shots / "mlflow-ranking.png")
        tools.close()

        tools = DevTools(browser, profile, 1600, 1560)
        ids = urllib.parse.quote(json.dumps([r.info.run_id for r in parents]))
        url = f"{mlflow}/#/compare-runs?runs={ids}&experiments={urllib.parse.quote(json.dumps([experiment_id]))}"
        page = tools.open(url, "result/best_val_acc")
        assert "Comparing 4 Runs" in page and all(name in page for name in names), page[:2000]
        assert "best.lr" in page and all(r.data.params["best.lr"] in page for r in parents)  # what tuning chose
        # scroll the metrics table (rows by name, as the UI sorts them) to the test scores
        metrics = sorted({k for r in parents for k in r.data.metrics})
        # from the time-to-target rows on (absent when no arm reached the target: then the test scores)
        first = bisect.bisect_left(metrics, "result/target")
        tools.js(PAGE_HELPERS)
        tools.js("byText('Run details').scrollIntoView({block: 'start'})")
        for _ in range(2):  # the names grid follows once the values grid has rendered
            assert tools.js(f"scrollRows('Metrics', {first})") == 2
            tools.call("Page.captureScreenshot", tools.session, format="png")
        page = tools.wait_for("result/test_acc_mean")
        assert "result/test_acc_ci95_low" in page
        tools.screenshot(shots / "mlflow-compare-arms.png")
    finally:
        tools.close()


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


def start_ui(stores, mport: int, dport: int, log_dir: Path, **popen) -> subprocess.Popen:
    """`bench ui` on the stores, its output on a pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "ui", "--tracking-uri", stores.tracking_uri, "--storage", stores.storage,
         "--mlflow-port", str(mport), "--dashboard-port", str(dport), "--log-dir", str(log_dir)],
        cwd=stores.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)}, **popen)


def ready_lines(proc: subprocess.Popen, timeout_s: float = 150) -> list[str]:
    """What it prints until "Ctrl-C stops both." (or it exits, or the time is up)."""
    deadline, lines = time.time() + timeout_s, []
    while time.time() < deadline and not any("Ctrl-C" in ln for ln in lines):
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
    return lines


def test_bench_ui_lists_the_study_in_both_uis_and_stops_cleanly(quick_study, tmp_path):
    browser = Browser(find_browser(), tmp_path / "profile")
    stores = quick_study
    shots = tmp_path / "screenshots"
    shots.mkdir()
    mport, dport = free_port(), free_port()
    proc = start_ui(stores, mport, dport, tmp_path / "logs")
    tree: set[int] = set()
    try:
        lines = ready_lines(proc)
        assert any(f"http://localhost:{mport}/" in ln for ln in lines), "".join(lines)
        assert any(f"http://localhost:{dport}/" in ln for ln in lines), "".join(lines)
        later: list[str] = []  # what it prints from here on, read as it comes (a full pipe would block it)
        threading.Thread(target=lambda: later.extend(iter(proc.stdout.readline, "")), daemon=True).start()
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

        arm_views(find_browser(), tmp_path / "devtools", mlflow, client, exp.experiment_id, shots)

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
        try:
            rc = proc.wait(60)
        except subprocess.TimeoutExpired:
            states = {pid: Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
                      for pid in {proc.pid, *tree} if alive(pid)}
            proc.kill()
            logs = {p.name: p.read_text()[-1500:] for p in (tmp_path / "logs").glob("*.log")}
            pytest.fail(f"bench ui still running 60 s after SIGINT; process states {states}; it printed "
                        f"{''.join(later)[-3000:]!r}; logs {logs}")
    assert rc == 0
    time.sleep(0.5)
    left = [pid for pid in tree if alive(pid)]
    assert not left, f"orphan processes after Ctrl-C: {left}"


def main(study_dir: Path, experiment: str = "quickstart", out: Path = REPO / "docs" / "screenshots") -> None:
    """The README's arm-level screenshots from a finished study's stores in `study_dir`."""
    import tempfile

    from bench.ui import Server, mlflow_command, wait_ready

    uri = f"sqlite:///{study_dir.resolve()}/mlflow.db"
    port = free_port()
    proc = subprocess.Popen(mlflow_command(uri, "127.0.0.1", port), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_ready(Server("mlflow", f"http://127.0.0.1:{port}/", proc), 120), "mlflow server did not start"
        client = MlflowClient(uri)
        with tempfile.TemporaryDirectory() as profile:
            arm_views(find_browser(), Path(profile), f"http://127.0.0.1:{port}", client,
                      client.get_experiment_by_name(experiment).experiment_id, out)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    print(f"screenshots in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:3])


def test_bench_ui_started_with_sigint_ignored_still_stops_on_sigint(quick_study, tmp_path):
    # A background job of a non-interactive shell starts with SIGINT ignored, and Python then
    # installs no KeyboardInterrupt for it: before, `bench ui` ran on after `kill -INT`.
    proc = start_ui(quick_study, free_port(), free_port(), tmp_path / "logs",
                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        lines = ready_lines(proc)
        assert any("Ctrl-C stops both." in ln for ln in lines), "".join(lines)
        tree = process_tree(proc.pid)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.5)
    assert not [pid for pid in tree if alive(pid)]  # both servers stopped with it
