"""`bench run STUDY --launcher slurm --workers N`: N workers submitted as one sbatch job array.

Every array task runs the ordinary worker (`bench run ... --worker-of N`) against the shared
stores, which coordinate the work exactly as for local workers; the submitting command follows
the study by reading the same stores (and `squeue`), then writes the report.

Why an sbatch array and not submitit: the workers are `bench run` processes that share their
state through the stores, so there is no function to pickle and no result to collect. An array
is one submission with one job id (`123`, tasks `123_0` ...), each task can be cancelled alone,
and the batch script is plain text that the README documents line by line. submitit would add a
dependency and a job folder of pickles and logs that must be on a filesystem every node mounts,
and it follows job states through `sacct`, which fails on clusters without accounting storage.
Preemption would be ours anyway: submitit ignores SIGTERM and checkpoints on its own USR2.

Preemption (see bench.launch.preempt): a worker that gets SIGTERM or the configured signal stops
taking work, gives its run in flight `grace` seconds, fails it as `preempted` (retried with the
same parameters) and, unless the study is done or a user cancelled the job, requeues its job.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.launch import options
from bench.launch.options import UsageError

LOG_DIR = "slurm-logs"  # <cwd>/slurm-logs/<study>/<array job>_<task>.out (not in results/: that is attached to MLflow)
POLL_S = 2.0
JOBS_TAG = "slurm_jobs"  # MLflow experiment tag: the array jobs submitted for the study (bench status)


# --- before the heavy imports: refusals in one line --------------------------------------------
def check_environment(args: argparse.Namespace) -> dict[str, str | int]:
    """`--slurm` values, shareable stores, sbatch on PATH; UsageError otherwise."""
    given = options.parse(args.slurm)
    if args.workers < 1:
        raise UsageError(f"--workers {args.workers}: must be >= 1")
    check_stores(args.storage, args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"), args.shared_fs)
    if shutil.which("sbatch") is None:
        raise UsageError("--launcher slurm: sbatch not found on PATH (run this on a Slurm login node, or run the "
                         "workers here with --workers N)")
    return given


def check_stores(storage: str | None, tracking: str | None, shared_fs: bool) -> None:
    """Jobs on other nodes must reach both stores: an RDB server for Optuna and an MLflow server.
    Files on this machine (journal, SQLite) are refused unless `--shared-fs` says every node sees them."""
    if shared_fs:
        return
    hint = "or add --shared-fs if it is on a filesystem that every node mounts"
    url = storage or "optuna.journal"
    if url.split(":", 1)[0].split("+", 1)[0] not in ("postgresql", "postgres", "mysql"):
        raise UsageError(f"--launcher slurm: the Optuna storage {url} is a file on this machine that jobs on other "
                         f"nodes cannot see: use --storage postgresql://... (or mysql://...), {hint}")
    tracking = tracking or "sqlite:///mlflow.db"
    scheme = tracking.split(":", 1)[0].split("+", 1)[0] if "://" in tracking else "file"
    if scheme not in ("http", "https", "databricks"):
        what = "a file on this machine" if scheme in ("sqlite", "file") else \
            f"a {scheme} database without a server (its artifacts stay on this machine)"
        raise UsageError(f"--launcher slurm: the MLflow store is {what}, which jobs on other nodes cannot use: use "
                         f"--tracking-uri http://<mlflow server>, {hint}")


def _absolute(url: str | None, default: str) -> str:
    """File stores named relative to this directory, made absolute for jobs (--shared-fs)."""
    url = url or default
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(url.removeprefix("sqlite:///")).resolve())
    if "://" not in url:
        prefix = "journal:" if url.startswith("journal:") else ""
        return prefix + str(Path(url.removeprefix("journal:")).resolve())
    return url


# --- the batch script --------------------------------------------------------------------------
def resources(executions: list[dict[str, Any]], opts: dict[str, str | int]) -> list[str]:
    """sbatch resource options for the most demanding arm. Single node: one task (the worker),
    whose multi-device trials start their ranks with torchrun inside the allocation. Several
    nodes: one task per device on each node, which `srun` starts for a multi-node trial."""
    devices = max(e["devices"] for e in executions)
    nodes = max(e["num_nodes"] for e in executions)
    gpu = any(e["accelerator"] in ("gpu", "cuda") for e in executions)
    lines = [f"--nodes={nodes}"]
    if nodes > 1:
        lines += [f"--ntasks-per-node={devices}", f"--cpus-per-task={opts.get('cpus-per-task', 1)}"]
    else:
        lines += ["--ntasks=1", f"--cpus-per-task={opts.get('cpus-per-task', devices)}"]
    if "gpus-per-node" in opts or gpu:
        lines.append(f"--gpus-per-node={opts.get('gpus-per-node', devices)}")
    lines += [f"--{key}={opts[key]}" for key in ("partition", "time", "mem", "account", "qos") if key in opts]
    return lines


def signal_option(value: str) -> tuple[str, int]:
    """'USR1@120' -> ('USR1', 120); the lead time defaults to 90 s."""
    name, _, lead = value.removeprefix("B:").partition("@")
    return name.removeprefix("SIG"), int(lead or 90)


def batch_script(*, study: str, name: str, workers: int, opts: dict[str, str | int],
                 executions: list[dict[str, Any]], quick: bool, results_dir: str, workdir: Path,
                 python: str, root: Path) -> str:
    sig, lead = signal_option(str(opts["signal"]))
    log_dir = workdir / LOG_DIR / name
    worker = [python, "-m", "bench.cli", "run", study, "--slurm-worker", "--worker-of", str(workers), "--quiet",
              "--results-dir", results_dir, "--slurm", f"signal={sig}@{lead}", "--slurm", f"grace={opts['grace']}",
              *(["--quick"] if quick else [])]
    sbatch = [f"--job-name=bench-{name}", f"--array=0-{workers - 1}", f"--output={log_dir}/%A_%a.out",
              "--open-mode=append",  # a requeued task appends to its log
              f"--chdir={workdir}", "--export=ALL", "--requeue",
              f"--signal=B:{sig}@{lead}",  # to the worker itself (exec'd below), `lead` s before the time limit
              *resources(executions, opts)]
    return "\n".join([
        "#!/bin/bash",
        f"# bench: {workers} workers of study {name} on the shared stores (bench run --launcher slurm)",
        *(f"#SBATCH {line}" for line in sbatch),
        f"export PYTHONPATH={shlex.quote(str(root))}${{PYTHONPATH:+:$PYTHONPATH}}",
        "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}",
        # store URLs come from the environment, so credentials never enter the script Slurm keeps
        "exec " + " ".join(shlex.quote(part) for part in worker) + ' --storage "$BENCH_STORAGE" '
        '--tracking-uri "$MLFLOW_TRACKING_URI"',
        "",
    ])


def submit(script: str, env: dict[str, str]) -> str:
    """sbatch the script (read from stdin); returns the array job id."""
    proc = subprocess.run(["sbatch", "--parsable"], input=script, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()] or [f"exit code {proc.returncode}"]
        raise UsageError(f"--launcher slurm: sbatch refused the job: {lines[-1].strip()}")
    return proc.stdout.strip().split(";", 1)[0]


def job_states(jobs: list[str]) -> dict[str, str] | None:
    """{task id: state} of the jobs still queued or running (squeue); None when squeue fails."""
    if not jobs:
        return {}
    try:
        proc = subprocess.run(["squeue", "--noheader", "--array", "--jobs", ",".join(jobs), "--format", "%i %T"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        # jobs that ended long ago are forgotten by the controller: none is left
        return {} if "Invalid job id" in proc.stderr else None
    return dict(line.split(None, 1) for line in proc.stdout.splitlines() if line.strip())


# --- the submitting command --------------------------------------------------------------------
def launch(args: argparse.Namespace) -> tuple[int, Any, str]:
    """Submit the workers, then (unless --detach) follow the study until it is done and every
    job has ended. Returns (exit code, spec, tracking URI); the caller writes the report."""
    given = check_environment(args)
    from bench import spec as spec_mod
    from bench import stores
    from bench.studyfile import check_writable
    from bench.tracking import Tracker, redact, tracking_uri
    from bench.tuning.study import arms

    spec = spec_mod.load(args.study)
    spec = spec.quick_variant() if args.quick else spec
    check_writable(Path(args.results_dir) / spec.name, f"--results-dir {args.results_dir}")
    opts = {**options.DEFAULTS, **spec.slurm, **given}
    sig, lead = signal_option(str(opts["signal"]))
    if int(opts["grace"]) >= lead:
        raise UsageError(f"--slurm grace={opts['grace']}: must be shorter than the signal's lead time ({sig}@{lead})")
    uri = tracking_uri(args.tracking_uri)
    storage = args.storage
    if args.shared_fs:
        storage, uri = _absolute(storage, "optuna.journal"), _absolute(uri, "sqlite:///mlflow.db")
        args.storage, args.tracking_uri = storage, uri
    stores.prepare(spec.name, storage, uri)  # reachable, schemas created once, before any job starts
    tracker = Tracker(uri)
    experiment = tracker.experiment_id(spec.name)

    workdir = Path.cwd()
    (workdir / LOG_DIR / spec.name).mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parents[2]  # the checkout (or site-packages) holding `bench`
    script = batch_script(study=str(Path(args.study).resolve()), name=spec.name, workers=args.workers, opts=opts,
                          executions=[a.execution for a in arms(spec)], quick=args.quick,
                          results_dir=str(Path(args.results_dir).resolve()), workdir=workdir,
                          python=sys.executable, root=root)
    env = {**os.environ, "BENCH_STORAGE": storage or "optuna.journal", "MLFLOW_TRACKING_URI": uri}
    job = submit(script, env)
    previous = tracker.client.get_experiment(experiment).tags.get(JOBS_TAG, "")
    tracker.client.set_experiment_tag(experiment, JOBS_TAG, ",".join(filter(None, [previous, job])))
    print(f"submitted Slurm job array {job}: workers {job}_0 ... {job}_{args.workers - 1} "
          f"(logs: {LOG_DIR}/{spec.name}/{job}_<task>.out)")
    flags = [args.study, *(["--quick"] if args.quick else []), *(["--storage", redact(storage)] if storage else []),
             "--tracking-uri", redact(uri), *(["--results-dir", args.results_dir] if args.results_dir != "results"
                                              else [])]
    follow_cmd = shlex.join(["bench", "status", *flags])
    if args.detach:
        print(f"follow:   {follow_cmd}")
        print(f"report:   {shlex.join(['bench', 'report', *flags])}   (once bench status says done)")
        print(f"cancel:   scancel {job}")
        return 0, spec, uri
    return follow(spec, uri, storage, job, quiet=args.quiet, follow_cmd=follow_cmd), spec, uri


def follow(spec: Any, uri: str, storage: str | None, job: str, *, quiet: bool, follow_cmd: str) -> int:
    """Live progress from the stores until every arm is done and no job of `job` is left."""
    from types import SimpleNamespace

    from bench import interrupt
    from bench.progress import StudyProgress
    from bench.status import study_status

    budgets = {a.name: a.n_trials + a.seeds for a in study_status(spec, storage, uri)}
    shown: dict[str, tuple] = {}
    with StudyProgress(budgets, quiet=quiet) as progress:
        try:
            while True:
                statuses = study_status(spec, storage, uri)
                for a in statuses:  # the local run's progress events, from what the stores say
                    key = (a.finished, a.pruned, a.failed, a.best, a.evals_done, a.done)
                    if shown.get(a.name) == key:
                        continue
                    shown[a.name] = key
                    if a.done:
                        progress("arm_done", {"arm": a.name, "outcome": SimpleNamespace(
                            best_value=a.best, pruned=a.pruned, failed=a.failed)})
                    elif a.finished >= a.n_trials:
                        progress("eval_start", {"arm": a.name, "seed": min(a.evals_done + 1, a.seeds),
                                                "total": a.seeds})
                    elif a.finished or a.failed:
                        progress("trial_end", {"arm": a.name, "done": a.finished, "total": a.n_trials,
                                               "pruned": a.pruned, "failed": a.failed, "best": a.best})
                jobs = job_states([job])
                if jobs == {}:  # every task has ended (None: squeue did not answer this time)
                    if all(a.done for a in statuses):
                        return 0
                    print(f"bench run: the Slurm jobs of {job} ended before the study was done (logs: {LOG_DIR}/"
                          f"{spec.name}/); the same command submits new workers that continue it", file=sys.stderr)
                    return 1
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            print(f"\nbench run: stopped following; the jobs keep running (scancel {job} stops them). "
                  f"Follow them with: {follow_cmd}", file=sys.stderr)
            return interrupt.exit_code()  # 130 for Ctrl-C, 143 for SIGTERM


# --- inside a job ------------------------------------------------------------------------------
def install_stop(args: argparse.Namespace) -> Any:
    """The worker's stop handler, installed first thing (imports take seconds, and a signal that
    arrives meanwhile must still stop the worker cleanly and requeue its job)."""
    from bench.launch.preempt import StopOnSignal
    from bench.tuning.coordination import WORKER_ID, slurm_job

    opts = {**options.DEFAULTS, **options.parse(args.slurm)}
    configured = signal.Signals[options.signal_name(str(opts["signal"]))]
    label = f"bench worker {WORKER_ID} (Slurm job {slurm_job()}): "
    return StopOnSignal(tuple({signal.SIGTERM, configured}), float(opts["grace"]), label=label).install()


def worker_main(args: argparse.Namespace, dispatch: Any) -> int:
    """`bench run ... --slurm-worker` (one array task): the ordinary worker, stopped by SIGTERM or
    the configured signal, and then requeued unless the study is done or a user cancelled the job."""
    from bench.launch.preempt import Preempted

    args.stop = install_stop(args)
    try:
        return dispatch(args)  # -> cli.cmd_run -> work()
    except Preempted as err:
        from bench import spec as spec_mod
        from bench.status import study_status
        from bench.tracking import tracking_uri
        from bench.tuning.coordination import slurm_job

        spec = spec_mod.load(args.study)
        spec = spec.quick_variant() if args.quick else spec
        if all(a.done for a in study_status(spec, args.storage, tracking_uri(args.tracking_uri))):
            print(f"{args.stop.label}stopped ({err}); the study is done", file=sys.stderr, flush=True)
        else:
            print(f"{args.stop.label}stopped ({err}); {requeue(slurm_job())}", file=sys.stderr, flush=True)
        return 0


def work(spec: Any, uri: str, args: argparse.Namespace) -> int:
    """The worker itself, taking work until the study is done or `args.stop` says stop."""
    import torch

    from bench.tuning.study import StudyRunner

    torch.set_num_threads(int(os.environ.get("SLURM_CPUS_PER_TASK", "1")))  # the job's CPUs, not the node's
    StudyRunner(spec, tracking_uri=uri, storage_url=args.storage, study_file=args.study,
                workers=args.worker_of, stop=args.stop.check).run()
    return 0


def requeue(job: str) -> str:
    """Put this job back in the queue, unless a user cancelled it; returns what happened."""
    show = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True)
    fields = dict(word.split("=", 1) for word in show.stdout.split() if "=" in word)
    state, reason = fields.get("JobState", "?"), fields.get("Reason", "?")
    if state in ("CANCELLED", "COMPLETING") and reason == "None":  # scancel (time limit: Reason=TimeLimit)
        return "cancelled, not requeued"
    # Requeueing sends SIGTERM to this job's processes: ignore it (inherited by scontrol) until done.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if done.returncode != 0:
        return f"not requeued: {(done.stderr or done.stdout).strip()}"
    return "requeued"  # Slurm holds it for AuthInfo's cred_expire (default 120 s) before it may start again
