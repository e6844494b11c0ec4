"""`bench run --launcher slurm` and `bench status` on a real single-node Slurm cluster (started by
tests/services.py), with PostgreSQL + an `mlflow server` as the shared stores; and the launcher's
refusals, batch script and preemption handling, which need no cluster."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from bench import spec as spec_mod
from bench.cli import main
from bench.launch import slurm as launcher
from bench.launch.preempt import Preempted, StopOnSignal
from bench.tuning.storage import open_storage
from bench.tuning.study import arms
from tests.conftest import REPO, STUDIES
from tests.services import SECRET
from tests.test_workers import study_file

QUICKSTART = str(STUDIES / "quickstart.toml")


def note(line: str) -> None:
    """Wall times and counts for the record: appended to $BENCH_TEST_NOTES when set (pytest captures output)."""
    if os.environ.get("BENCH_TEST_NOTES"):
        with open(os.environ["BENCH_TEST_NOTES"], "a") as out:
            out.write(line + "\n")


def timing(what: str, seconds: float) -> None:
    note(f"[timing] {what}: {seconds:.1f} s")


# --- no cluster needed ---------------------------------------------------------------------------
def test_local_stores_a_bad_option_and_a_missing_sbatch_are_refused_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pg, server = f"postgresql://bench:{SECRET}@db/optuna", "http://tracking:5000"
    cases = [
        ([], "the Optuna storage optuna.journal is a file on this machine"),
        (["--storage", "sqlite:///o.db", "--tracking-uri", server], "the Optuna storage sqlite:///o.db is a file"),
        (["--storage", pg], "the MLflow store is a file on this machine"),
        (["--storage", pg, "--tracking-uri", pg.replace("optuna", "mlflow")],
         "the MLflow store is a postgresql database without a server"),
        (["--storage", pg, "--tracking-uri", server, "--slurm", "time=soon"], "--slurm time: 'soon' is not minutes"),
        (["--storage", pg, "--tracking-uri", server, "--slurm", "gpus=2"], "--slurm unknown key 'gpus'"),
        (["--storage", pg, "--tracking-uri", server, "--slurm", "partition=a;b"], "is not a partition name"),
        (["--storage", pg, "--tracking-uri", server, "--workers", "0"], "--workers 0: must be >= 1"),
    ]
    for flags, message in cases:
        start = time.monotonic()
        assert main(["run", QUICKSTART, "--launcher", "slurm", *flags]) == 2
        err = capsys.readouterr().err
        assert time.monotonic() - start < 2  # before torch, Lightning and the stores
        assert err.count("\n") == 1 and message in err and SECRET not in err, err
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    assert main(["run", QUICKSTART, "--launcher", "slurm", "--shared-fs"]) == 2
    assert capsys.readouterr().err == ("bench run: --launcher slurm: sbatch not found on PATH (run this on a Slurm "
                                       "login node, or run the workers here with --workers N)\n")
    assert not list(tmp_path.iterdir())  # nothing was created


def test_the_study_files_slurm_table_is_checked_and_the_command_line_wins(tmp_path):
    path = tmp_path / "s.toml"
    base = 'name = "s"\nmodel = "linear"\ndataset = "digits"\n[[arms]]\noptimizer = "sgd"\n'
    path.write_text(base + '[slurm]\ntime = "1:00:00"\ncpus-per-task = 4\npartition = "cpu"\n')
    spec = spec_mod.load(path)
    assert spec.slurm == {"time": "1:00:00", "cpus-per-task": 4, "partition": "cpu"}
    opts = {**launcher.options.DEFAULTS, **spec.slurm, **launcher.options.parse(["time=30", "qos=high"])}
    lines = launcher.resources([a.execution for a in arms(spec)], opts)
    assert lines == ["--nodes=1", "--ntasks=1", "--cpus-per-task=4", "--partition=cpu", "--time=30", "--qos=high"]
    for table, message in (('timelimit = "1"', "slurm: unknown key 'timelimit'"),
                           ('mem = "lots"', "slurm.mem: 'lots' is not a size"),
                           ('signal = "KILL@60"', "slurm.signal: SIGKILL cannot be handled")):
        path.write_text(base + f"[slurm]\n{table}\n")
        with pytest.raises(spec_mod.SpecError, match=re.escape(message)):
            spec_mod.load(path)


def test_the_batch_script_requests_what_the_arms_need(tmp_path):
    def script(executions, **opts):
        return launcher.batch_script(study="/w/s.toml", name="s", workers=3, opts={**launcher.options.DEFAULTS, **opts},
                                     executions=executions, quick=True, results_dir="/w/results", workdir=Path("/w"),
                                     python="/venv/bin/python", root=Path("/src"))

    cpu = {"accelerator": "auto", "devices": 1, "num_nodes": 1}
    text = script([cpu])
    sbatch = [line.removeprefix("#SBATCH ") for line in text.splitlines() if line.startswith("#SBATCH")]
    assert sbatch == ["--job-name=bench-s", "--array=0-2", "--output=/w/slurm-logs/s/%A_%a.out", "--open-mode=append",
                      "--chdir=/w", "--export=ALL", "--requeue", "--signal=B:TERM@90", "--nodes=1", "--ntasks=1",
                      "--cpus-per-task=1"]
    assert text.splitlines()[-1] == (
        "exec /venv/bin/python -m bench.cli run /w/s.toml --slurm-worker --worker-of 3 --quiet --results-dir "
        '/w/results --slurm signal=TERM@90 --slurm grace=20 --quick --storage "$BENCH_STORAGE" --tracking-uri '
        '"$MLFLOW_TRACKING_URI"')
    gpus = {"accelerator": "gpu", "devices": 4, "num_nodes": 1}
    assert "--ntasks=1\n#SBATCH --cpus-per-task=4\n#SBATCH --gpus-per-node=4\n" in script([cpu, gpus])
    nodes = {"accelerator": "gpu", "devices": 8, "num_nodes": 2}
    text = script([cpu, nodes], **{"cpus-per-task": 6, "signal": "USR1@300", "time": "2-00:00:00"})
    assert ("#SBATCH --signal=B:USR1@300\n#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=8\n#SBATCH --cpus-per-task=6\n"
            "#SBATCH --gpus-per-node=8\n#SBATCH --time=2-00:00:00\n") in text


def test_a_signal_stops_new_work_and_the_run_in_flight_gets_its_grace_period():
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        stop = StopOnSignal((signal.SIGUSR1,), grace_s=0.5).install()
        stop.check()  # no signal yet: nothing happens
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.1)  # a run that ends within the grace period ends normally ...
        with pytest.raises(Preempted, match="stopped before taking new work"):
            stop.check()  # ... and no new work is taken
        stop = StopOnSignal((signal.SIGUSR1,), grace_s=0.5).install()
        os.kill(os.getpid(), signal.SIGUSR1)
        start = time.monotonic()
        with pytest.raises(Preempted, match="did not finish within the 0.5 s grace period"):
            time.sleep(30)  # a run that outlasts it is interrupted, even inside a blocking call
        assert 0.4 < time.monotonic() - start < 5
        os.kill(os.getpid(), signal.SIGUSR1)  # once stopped, further signals change nothing
        time.sleep(0.1)
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_fit_keeps_the_processs_own_sigterm_handler():
    """Lightning's SIGTERM handler would end fit at the next batch, taking the grace period away."""
    from bench.spec import RunConfig
    from bench.train import fit

    seen = []
    previous = signal.signal(signal.SIGTERM, lambda *_: seen.append(time.monotonic()))
    try:
        config = RunConfig.build(model="mlp", dataset="digits", optimizer="sgd", epochs=6, params={"batch_size": 32})

        def reporter(epoch, metrics):
            if epoch == 2:
                os.kill(os.getpid(), signal.SIGTERM)

        result = fit(config, reporter=reporter)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert len(seen) == 1 and result.epochs == 6 and result.status == "completed"


def test_a_stop_once_no_work_is_left_lets_the_worker_finish_the_study(tmp_path, monkeypatch):
    """A stop request stops a worker before it takes (or waits for) more work; when none is left, as
    when the signal comes while the study's last run ends within its grace period, the worker closes
    the study as usual: its arm runs FINISHED, not KILLED with a study done that no requeue will
    ever close."""
    from bench.tuning import study as study_mod
    from bench.tuning.study import StudyRunner

    path = study_file(tmp_path, "stop", n_trials=1, epochs=1, seeds=2)
    spec = spec_mod.load(path)
    tracking, storage = f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "optuna.journal")
    execute, fit_batched, evals, stop_after = study_mod.execute, study_mod.fit_batched, [], []

    def counting(config, reporter=None, *, context=None):
        result = execute(config, reporter, context=context)
        evals.extend([config.optimizer] if config.evaluate_test else [])
        return result

    def stop():
        if len(evals) in stop_after:
            raise Preempted("stopped before taking new work")

    def counting_batched(configs, reporters):
        results = fit_batched(configs, reporters)
        evals.extend(config.optimizer for config in configs if config.evaluate_test)
        return results

    monkeypatch.setattr(study_mod, "execute", counting)
    monkeypatch.setattr(study_mod, "fit_batched", counting_batched)  # eval seeds train batched
    stop_after[:] = [2]  # after the first arm's eval seeds: the second arm's are left to do
    with pytest.raises(Preempted):
        StudyRunner(spec, tracking_uri=tracking, storage_url=storage, stop=stop).run()
    assert evals == ["sgd", "sgd"]
    stop_after[:] = [4]  # the rerun's second run is the study's last: the stop comes as it ends
    outcomes = StudyRunner(spec, tracking_uri=tracking, storage_url=storage, stop=stop).run()
    assert evals == ["sgd", "sgd", "adam", "adam"] and [len(o.eval_run_ids) for o in outcomes] == [2, 2]
    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name("stop").experiment_id])
    assert sorted((r.data.tags["phase"], r.info.status) for r in runs if r.data.tags["phase"] in ("arm", "eval")) == [
        *[("arm", "FINISHED")] * 2, *[("eval", "FINISHED")] * 4]


# --- on the cluster ---------------------------------------------------------------------------------
def _trials(storage, name: str, arm: str):
    return optuna.load_study(study_name=f"{name}/{arm}", storage=storage).trials


def check_exact(spec, storage, tracking_uri: str, *, preempted_only: bool = True) -> dict[str, Counter]:
    """Budgets exact and nothing left RUNNING in either store; returns the trial states per arm."""
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(spec.name).experiment_id], max_results=5000)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    states = {}
    for arm in arms(spec):
        trials = _trials(storage, spec.name, arm.name)
        count = Counter(t.state for t in trials)
        states[arm.name] = count
        assert count[TrialState.COMPLETE] + count[TrialState.PRUNED] == spec.tuning.n_trials
        assert count[TrialState.RUNNING] == count[TrialState.WAITING] == 0
        if preempted_only:
            assert all(t.user_attrs["fail_reason"] == "preempted" for t in trials if t.state == TrialState.FAIL)
        evals = [r for r in runs if r.data.tags.get("arm") == arm.name and r.data.tags.get("phase") == "eval"
                 and r.info.status == "FINISHED"]
        assert sorted(int(r.data.tags["seed"]) for r in evals) == [1000 + k for k in range(spec.eval.seeds)]
    parents = [r for r in runs if r.data.tags.get("phase") == "arm"]
    assert len(parents) == len(states) and all(r.info.status == "FINISHED" for r in parents)
    return states


def _numbers(results: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The report's numbers, without what differs between runs of the same study (time, run ids)."""
    summary = pd.read_csv(results / "summary.csv")
    summary = summary.drop(columns=[c for c in summary if c.endswith("time_s") or c.endswith(("run_id", "run_ids"))])
    return summary, pd.read_csv(results / "pairwise.csv")



@pytest.mark.slow
def test_quickstart_on_three_slurm_workers_matches_the_local_run(slurm, postgres, mlflow_server, quick_study, stores,
                                                                  monkeypatch, capfd):
    monkeypatch.chdir(stores.root)
    spec = spec_mod.load(QUICKSTART).quick_variant()
    storage_url = postgres.url("optuna")
    start = time.monotonic()
    assert main(["run", QUICKSTART, "--quick", "--launcher", "slurm", "--workers", "3", "--storage", storage_url,
                 "--tracking-uri", mlflow_server.url, "--results-dir", str(stores.results)]) == 0
    timing("quickstart --quick, --launcher slurm --workers 3", time.monotonic() - start)
    out, err = capfd.readouterr()
    job = re.search(r"submitted Slurm job array (\d+)", out).group(1)
    assert SECRET not in out + err and "Traceback" not in err
    assert re.search(r"^report: .*quickstart-quick/report.md", out, re.M)
    storage = open_storage(storage_url)
    states = check_exact(spec, storage, mlflow_server.url)
    assert all(s[TrialState.FAIL] == 0 for s in states.values())
    holders = {t.user_attrs["slurm_job"] for a in arms(spec) for t in _trials(storage, spec.name, a.name)}
    assert holders <= {f"{job}_{k}" for k in range(3)} and len(holders) >= 2  # the jobs shared the work
    # the same numbers as the same study run here (the session's local quickstart, one process)
    on_slurm, here = _numbers(stores.results / spec.name), _numbers(quick_study.results / spec.name)
    pd.testing.assert_frame_equal(on_slurm[0], here[0], check_exact=True)
    pd.testing.assert_frame_equal(on_slurm[1], here[1], check_exact=True)
    slurm.wait_idle()


def _wait_for(predicate, timeout: float, what: str, report=lambda: ""):
    """predicate()'s first true value; past the timeout an AssertionError that ends with report()."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} ({timeout:g} s)\n{report()}")


def _slurm_report(slurm, logs: Path, job: str = "") -> str:
    """What a failure message needs: the job logs, `scontrol show job` and slurmctld's last lines."""
    parts = [f"--- {log.name}\n{log.read_text()[-6000:]}" for log in sorted(logs.glob("*.out"))]
    show = subprocess.run(["scontrol", "show", "job", *([job] if job else [])], capture_output=True, text=True)
    ctld = (slurm.root / "log" / "slurmctld.log").read_text().splitlines()
    return "\n".join([*(parts or [f"--- no job log in {logs}"]), f"--- scontrol show job {job}",
                      (show.stdout or show.stderr).strip(), "--- slurmctld.log (last lines)", *ctld[-30:]])


def _run_time_s(job: str) -> int:
    """How long the job has been running (scontrol's RunTime=[D-]HH:MM:SS), in seconds."""
    show = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, check=True).stdout
    days, _, clock = re.search(r"\bRunTime=(\S+)", show).group(1).rpartition("-")
    hours, minutes, seconds = (int(part) for part in clock.split(":"))
    return int(days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds


def _running_trial(storage, name: str, arm: str):
    """The arm's trial started last among those running (the one with the most of its run ahead)."""
    try:
        trials = _trials(storage, name, arm)
    except KeyError:
        return None
    running = [t for t in trials if t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs]
    return max(running, key=lambda t: t.datetime_start) if running else None


def _submit(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.cli", "run", *args], cwd=cwd, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


@pytest.mark.slow
def test_a_cancelled_worker_job_fails_its_trial_and_another_worker_retries_it(slurm, postgres, mlflow_server,
                                                                              stores):
    # every run trains 3 s (a seconds budget, whatever the machine's speed): the trial seen running
    # is still running when scancel reaches it
    path = study_file(stores.root, "scancel", n_trials=3, seconds=3, model="mlp", seeds=2)
    spec = spec_mod.load(path)
    storage_url = postgres.url("optuna")
    start = time.monotonic()
    proc = _submit([path, "--launcher", "slurm", "--workers", "2", "--quiet", "--slurm", "grace=0",
                    "--storage", storage_url, "--tracking-uri", mlflow_server.url,
                    "--results-dir", str(stores.results)], stores.root)
    storage = open_storage(storage_url)
    logs = stores.root / "slurm-logs" / "scancel"
    victim = _wait_for(lambda: _running_trial(storage, "scancel", "sgd"), 180, "a running trial",
                       lambda: _slurm_report(slurm, logs))
    subprocess.run(["scancel", victim.user_attrs["slurm_job"]], check=True)
    out, err = proc.communicate(timeout=600)
    timing("scancel test (2 workers, one cancelled)", time.monotonic() - start)
    assert proc.returncode == 0, err
    assert "arm sgd: done" in err and "arm adam: done" in err  # the progress, read from the stores
    dead = _trials(storage, "scancel", "sgd")[victim.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["fail_reason"] == "preempted", (
        f"{dead.state} {dead.user_attrs}\n{_slurm_report(slurm, logs, victim.user_attrs['slurm_job'])}")
    retry = [t for t in _trials(storage, "scancel", "sgd") if t.user_attrs.get("retry_of") == victim.number]
    assert len(retry) == 1 and retry[0].params == dead.params and retry[0].state == TrialState.COMPLETE
    assert retry[0].user_attrs["slurm_job"] != victim.user_attrs["slurm_job"]  # another worker took it over
    run = MlflowClient(mlflow_server.url).get_run(victim.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["error"] == "preempted"
    states = check_exact(spec, storage, mlflow_server.url)
    assert states["sgd"][TrialState.FAIL] == 1 and states["adam"][TrialState.FAIL] == 0
    log = (logs / f"{victim.user_attrs['slurm_job']}.out").read_text()
    assert "SIGTERM received" in log and "cancelled, not requeued" in log, log
    note(f"[counts] scancel: {dict(states['sgd'])} / {dict(states['adam'])}")
    slurm.wait_idle()


@pytest.mark.slow
def test_a_job_past_its_time_limit_is_requeued_and_the_study_finishes_exactly(slurm, postgres, mlflow_server,
                                                                              stores):
    # Every run trains 5 s (a seconds budget takes as long on a fast machine as on a slow one), so the
    # 9 runs left after the first trial outlast Slurm's reaction to the new limit below (at most 30 s)
    path = study_file(stores.root, "timelimit", n_trials=3, seconds=5, model="mlp", seeds=2)
    spec = spec_mod.load(path)
    storage_url = postgres.url("optuna")
    logs = stores.root / "slurm-logs" / "timelimit"
    start = time.monotonic()
    proc = _submit([path, "--launcher", "slurm", "--workers", "1", "--quiet", "--slurm", "grace=2",
                    "--storage", storage_url, "--tracking-uri", mlflow_server.url,
                    "--results-dir", str(stores.results)], stores.root)  # the default signal: TERM@90
    storage = open_storage(storage_url)

    def finished():
        try:
            return sum(t.state == TrialState.COMPLETE for t in _trials(storage, "timelimit", "sgd"))
        except KeyError:
            return 0

    _wait_for(finished, 300, "a finished trial", lambda: _slurm_report(slurm, logs))
    job = _job_of("timelimit", storage)
    log = logs / f"{job}.out"

    def report() -> str:
        return _slurm_report(slurm, logs, job)

    # Mid-study, the job gets a time limit (whole minutes, as Slurm counts them) 60 to 120 s away.
    # slurmctld checks time limits every 30 s (PERIODIC_TIMEOUT, fixed) and sends the warning signal
    # at the first check that finds the limit less than its lead (90 s) + 30 s away: the next one,
    # at most 30 s from now, while the limit is still at least 30 s away (no time-out kill).
    ran = _run_time_s(job)
    minutes = -(-ran // 60) + 1
    subprocess.run(["scontrol", "update", f"JobId={job}", f"TimeLimit={minutes}"], check=True)
    cut = time.monotonic()
    # the worker stops taking work (a run in flight past its grace period fails as preempted) and
    # requeues its job; the study or the job ending first fails here at once, with the job's log and state
    _wait_for(lambda: "stopped (" in log.read_text() or launcher.job_states([job]) == {}, 120,
              "the warning signal and the requeue", report)
    assert "; requeued" in log.read_text(), report()
    requeued = time.monotonic() - cut
    # Slurm holds a requeued job for cred_expire (10 s here): the requeued run starts without a limit
    # and must finish the study, not leave it to yet another run
    subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=UNLIMITED"], check=True)
    try:
        out, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"bench run did not end within 600 s of the requeue\n{report()}") from None
    timing("time-limit test (1 worker, limit cut mid-study)", time.monotonic() - start)
    assert proc.returncode == 0, err
    text = log.read_text()
    assert text.count("SIGTERM received") == 1 and text.count("; requeued") == 1, report()
    assert text.index("SIGTERM received") < text.index("; requeued")
    assert "DUE TO TIME LIMIT" not in text, report()  # the warning came first: the worker stopped in time
    states = check_exact(spec, storage, mlflow_server.url)
    show = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert "Restarts=1" in show and "JobState=COMPLETED" in show, report()
    note(f"[counts] time limit: cut to {minutes} min after {ran} s, requeued {requeued:.0f} s later; 1 requeue; "
         f"{dict(states['sgd'])} / {dict(states['adam'])}")
    slurm.wait_idle()


def _job_of(name: str, storage) -> str:
    """The Slurm job holding the study's trials (one worker)."""
    return {t.user_attrs["slurm_job"] for t in _trials(storage, name, "sgd") if "slurm_job" in t.user_attrs}.pop()


@pytest.mark.slow
def test_detach_then_status_then_report_on_shared_file_stores(slurm, stores, monkeypatch, capfd):
    monkeypatch.chdir(stores.root)
    # every run trains 2 s (a seconds budget, whatever the machine's speed): the status calls below
    # find trials running
    path = study_file(stores.root, "detached", n_trials=3, seconds=2, model="mlp", seeds=2)
    start = time.monotonic()
    assert stores.run("run", path, "--launcher", "slurm", "--workers", "2", "--detach", "--shared-fs") == 0
    out = capfd.readouterr().out
    job = re.search(r"submitted Slurm job array (\d+): workers \1_0 \.\.\. \1_1", out).group(1)
    follow = re.search(r"^follow: +(bench status .*)$", out, re.M).group(1)
    assert follow == (f"bench status {path} --storage {stores.storage} --tracking-uri {stores.tracking_uri} "
                      f"--results-dir {stores.results}")
    assert f"scancel {job}" in out and re.search(r"^report: +bench report ", out, re.M)
    seen_running, last = False, ""
    deadline = time.time() + 300
    while time.time() < deadline:
        assert main(follow.split()[1:]) == 0
        last = capfd.readouterr().out
        seen_running |= bool(re.search(rf"trial \d+: slurm {job}_[01] \(", last))
        # done, and this very status saw no job left (a job still COMPLETING is listed as such)
        if last.rstrip().endswith("done") and f"Slurm jobs {job}: none queued or running" in last:
            break
        time.sleep(1)
    timing("detach + status until done (2 workers)", time.monotonic() - start)
    lines = last.splitlines()
    assert lines[0].startswith("study detached: 2 arms, 3 trials and 2 eval seeds each")
    assert re.fullmatch(r"arm +trials +pruned +failed +running +eval seeds +best val/acc +running on", lines[1])
    for arm, line in zip(("sgd", "adam"), lines[2:4]):
        assert re.fullmatch(rf"{arm} +3/3 +0 +0 +0 +2/2 +0\.\d+", line), line
    assert lines[4] == f"Slurm jobs {job}: none queued or running" and lines[5] == "done"
    assert seen_running, last  # while it ran, status named the Slurm job holding a trial
    assert stores.run("report", path) == 0
    assert (stores.results / "detached" / "report.md").exists()
    spec = spec_mod.load(path)
    check_exact(spec, open_storage(stores.storage), stores.tracking_uri)


def test_a_multi_node_trial_inside_a_slurm_job_starts_its_ranks_with_srun(monkeypatch, tmp_path):
    from bench.spec import RunConfig
    from bench.tuning.executor import CONTEXT_VAR, command

    config = RunConfig.build(model="mlp", dataset="digits", optimizer="sgd", devices=4, num_nodes=2, strategy="ddp")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert command(config, tmp_path / "c.json")[:4] == [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    assert command(config, tmp_path / "c.json") == [
        "srun", "--nodes=2", "--ntasks-per-node=4", "--kill-on-bad-exit=1", sys.executable, "-m", "bench.worker",
        f"env:{CONTEXT_VAR}"]
    one_node = config.model_copy(update={"num_nodes": 1})
    assert "--standalone" in command(one_node, tmp_path / "c.json")  # inside the job's allocation


@pytest.mark.slow
def test_status_of_a_local_study_and_of_stores_that_do_not_exist(stores, capfd):
    path = study_file(stores.root, "local", n_trials=2, epochs=1, seeds=2)
    assert stores.run("status", path) == 2
    assert capfd.readouterr().err == f"bench status: --storage {stores.storage}: no Optuna storage there\n"
    assert stores.run("run", path, "--quiet") == 0
    capfd.readouterr()
    assert stores.run("status", path) == 0
    lines = capfd.readouterr().out.splitlines()
    assert lines[0] == (f"study local: 2 arms, 2 trials and 2 eval seeds each (Optuna {stores.storage}, MLflow "
                        f"{stores.tracking_uri})")
    assert [line.split()[:6] for line in lines[2:4]] == [["sgd", "2/2", "0", "0", "0", "2/2"],
                                                         ["adam", "2/2", "0", "0", "0", "2/2"]]
    assert lines[-1] == "done" and len(lines) == 5  # no Slurm jobs line for a local study


def test_the_readmes_batch_script_is_the_one_submitted():
    text = (REPO / "README.md").read_text()
    block = re.search(r"\* \*\*What is submitted\.\*\*.*?```bash\n(.*?)```", text, flags=re.S).group(1)
    documented = "\n".join(line.removeprefix("  ") for line in block.splitlines()).rstrip()
    assert documented == launcher.batch_script(
        study="/home/me/bench/studies/quickstart.toml", name="quickstart", workers=8,
        opts={**launcher.options.DEFAULTS, "partition": "cpu", "time": "2:00:00"},
        executions=[{"accelerator": "auto", "devices": 1, "num_nodes": 1}], quick=False,
        results_dir="/home/me/bench/results", workdir=Path("/home/me/bench"),
        python="/home/me/bench/.venv/bin/python", root=Path("/home/me/bench")).rstrip()
