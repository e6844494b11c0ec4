"""`bench` command line: run | status | report | train | list | data | perf | ui. Thin: parse, call, print."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import os
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from bench import interrupt, stores

EXIT_USAGE = 2


def _store_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", help="Optuna storage: optuna.journal (default), journal:PATH, sqlite:///F, postgresql://...")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--results-dir", default="results", help="reports go to RESULTS_DIR/<study>/ (default results)")
    p.add_argument("--quick", action="store_true",
                   help="use the study file's [quick] budgets (stored as <study>-quick)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="bench", description="Optimizer benchmark studies: Optuna -> Lightning -> MLflow.")
    sub = ap.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="tune every arm, evaluate the best configs on K seeds, write the report")
    run.add_argument("study", help="study file (TOML)")
    _store_flags(run)
    run.add_argument("--quiet", action="store_true", help="no live progress display (CI logs)")
    run.add_argument("--workers", type=int, default=1,
                     help="worker processes on this machine sharing the stores (other machines may join with "
                          "the same command and a shared --storage/--tracking-uri)")
    run.add_argument("--worker-of", type=int, default=0, help=argparse.SUPPRESS)  # set by --workers: one worker
    run.add_argument("--launcher", choices=["local", "slurm"], default="local",
                     help="local: worker processes here (default); slurm: --workers N Slurm jobs (an sbatch array)")
    run.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                     help="sbatch option for --launcher slurm, over the study's [slurm] table: partition, time, "
                          "cpus-per-task, gpus-per-node, mem, account, qos; signal=SIG@SECONDS (default TERM@90) "
                          "and grace=SECONDS (default 20) for preemption")
    run.add_argument("--detach", action="store_true",
                     help="--launcher slurm: return after submitting; prints the job ids and how to follow the study")
    run.add_argument("--shared-fs", action="store_true",
                     help="--launcher slurm: the file stores (journal, SQLite) are on a filesystem every node mounts")
    run.add_argument("--slurm-worker", action="store_true", help=argparse.SUPPRESS)  # set in the batch script
    _data_dir_flag(run)

    st = sub.add_parser("status", help="where a study stands: trials, eval seeds, best values, running workers")
    st.add_argument("study")
    _store_flags(st)

    rep = sub.add_parser("report", help="rebuild the report from MLflow + Optuna only")
    rep.add_argument("study")
    _store_flags(rep)

    tr = sub.add_parser("train", help="one training run, logged to MLflow")
    tr.add_argument("--model", required=True)
    tr.add_argument("--dataset", required=True)
    tr.add_argument("--optimizer", required=True)
    tr.add_argument("--schedule", default="constant")
    budget = tr.add_mutually_exclusive_group()  # one budget (default: 10 epochs)
    budget.add_argument("--epochs", type=int, help="budget in epochs (default 10)")
    budget.add_argument("--steps", type=int, help="budget in optimizer steps")
    budget.add_argument("--samples", type=int, help="budget in training examples seen")
    budget.add_argument("--seconds", type=float, help="budget in training seconds (evaluation excluded)")
    tr.add_argument("--eval-every", type=float, help="evaluation cadence in the budget's unit (default: every "
                    "epoch; 20 points over a steps/samples/seconds budget)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--data-seed", type=int, default=0)
    tr.add_argument("--accelerator", default="auto")
    tr.add_argument("--devices", type=int, default=1, help="> 1: trains in its own process group")
    tr.add_argument("--num-nodes", type=int, default=1)
    tr.add_argument("--strategy", default="auto", choices=["auto", "ddp", "ddp_spawn", "fsdp", "deepspeed"])
    tr.add_argument("--precision", default="32-true")
    tr.add_argument("--progress-bar", action="store_true", help="show Lightning's own progress bar (off by default)")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="hyper-parameter (TOML value syntax: --set lr=0.1 --set hidden_sizes='\"64\"')")
    tr.add_argument("--tracking-uri")
    tr.add_argument("--experiment", default="bench-train", help="MLflow experiment (default bench-train)")
    _data_dir_flag(tr)

    sub.add_parser("list", help="registered models, datasets, optimizers, schedules, samplers, pruners")

    data = sub.add_parser("data", help="dataset files: fetch them (needs internet) or show where they go")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    fetch = data_sub.add_parser("fetch", help="download a dataset's files with torchvision (mnist, fashion_mnist, "
                                              "cifar10, cifar100), or generate and cache mnist1d")
    fetch.add_argument("name")
    _data_dir_flag(fetch)
    where = data_sub.add_parser("status", help="the data folder and, per dataset that needs files, which are there")
    _data_dir_flag(where)

    ui = sub.add_parser("ui", help="MLflow UI + Optuna dashboard on the study's stores (Ctrl-C stops both)")
    ui.add_argument("--tracking-uri", help="MLflow store (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    ui.add_argument("--storage", help="Optuna storage (default optuna.journal)")
    ui.add_argument("--host", default="127.0.0.1", help="bind address of both servers (default 127.0.0.1)")
    ui.add_argument("--mlflow-port", type=int, default=5000)
    ui.add_argument("--dashboard-port", type=int, default=8080)
    ui.add_argument("--log-dir", help="write the servers' logs here (default: discard)")

    perf = sub.add_parser("perf", help="overhead benchmarks, written to results/perf/")
    perf.add_argument("--out", default="results/perf")
    perf.add_argument("--repeats", type=int, default=5)
    return ap


def _data_dir_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="dataset files (default $BENCH_DATA_DIR, else $XDG_CACHE_HOME/bench/data or "
                                      "~/.cache/bench/data)")


def parse_set(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = raw  # bare words are strings: --set activation=tanh
    return out


def cmd_run(args: argparse.Namespace) -> int:
    from bench import spec as spec_mod
    from bench import studyfile
    from bench.data.store import check_datasets

    if args.launcher == "slurm" and not args.slurm_worker:
        from bench.launch import slurm

        code, spec, uri = slurm.launch(args)
        return code if code or args.detach else _report(spec, uri, args)
    # Validating a study imports no torch, Lightning, MLflow or Optuna: a bad file is rejected in
    # well under 2 s, before the heavy imports below.
    spec = spec_mod.load(args.study)
    spec = spec.quick_variant() if args.quick else spec
    check_datasets(arm.dataset for arm in spec_mod.arms(spec))  # files on disk, before anything is written
    # an unusable results folder is found now, not after the whole study
    studyfile.check_writable(Path(args.results_dir) / spec.name, f"--results-dir {args.results_dir}")
    from bench.progress import StudyProgress
    from bench.tracking import tracking_uri
    from bench.tuning.coordination import WORKER_ID
    from bench.tuning.study import StudyRunner, arms

    uri = tracking_uri(args.tracking_uri)
    started_ms = int(time.time() * 1000)
    if not args.worker_of:  # a launcher prepared the stores for its workers
        stores.prepare(spec.name, args.storage, uri)
    if args.slurm_worker:  # one task of a Slurm job array
        from bench.launch import slurm

        return slurm.work(spec, uri, args)
    if args.workers > 1:
        code = _run_workers(args, spec.name, uri, started_ms)
        return code if code or interrupt.received() else _report(spec, uri, args)
    if args.worker_of:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.worker_of))  # no oversubscription
    budgets = {a.name: spec.tuning.n_trials + spec.eval.seeds for a in arms(spec)}
    try:
        with StudyProgress(budgets, quiet=args.quiet or bool(args.worker_of)) as progress:
            StudyRunner(spec, tracking_uri=uri, storage_url=args.storage, progress=progress,
                        study_file=args.study, workers=max(args.workers, args.worker_of, 1)).run()
    except KeyboardInterrupt:  # the runs in flight are KILLED, their trials queued again
        if not args.worker_of:  # (a worker's launcher reports for all of them)
            _report_interrupt(uri, spec.name, {WORKER_ID}, started_ms)
        return interrupt.exit_code()
    return 0 if args.worker_of else _report(spec, uri, args)


def _report_interrupt(uri: str, study_name: str, workers: set[str], started_ms: int) -> None:
    from bench.tracking import Tracker

    print(interrupt.message(Tracker(uri).interrupted_runs(study_name, workers, started_ms)), file=sys.stderr)


STOP_GRACE_S = 30.0  # after a signal, a worker still running after this long is killed (reaped on rerun)


def _run_workers(args: argparse.Namespace, study_name: str, uri: str, started_ms: int) -> int:
    """Start `--workers` processes of `bench run` on the same stores; each takes free trial slots
    and eval seeds until the study is done. A signal to the launcher (its pid or its process
    group) is passed on to every worker, which stops as a single process does."""
    import subprocess

    from bench.tuning.coordination import worker_id

    cmd = [sys.executable, "-m", "bench.cli", "run", args.study, "--quiet", "--worker-of", str(args.workers),
           "--results-dir", args.results_dir]
    for flag, value in (("--storage", args.storage), ("--tracking-uri", args.tracking_uri)):
        if value:
            cmd += [flag, value]
    if args.quick:
        cmd.append("--quick")
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    procs: list[subprocess.Popen] = []
    with interrupt.forwarding(procs):
        for _ in range(args.workers):
            if not interrupt.received():
                # own process group: a Ctrl-C on the terminal reaches them once, through forwarding
                procs.append(subprocess.Popen(cmd, env=env, process_group=0))
        print(f"{len(procs)} workers started (pids {' '.join(str(p.pid) for p in procs)}, {threads} thread(s) each)",
              file=sys.stderr)
        while any(p.poll() is None for p in procs):  # poll all: a dead worker is reaped at once
            if interrupt.received() and interrupt.seconds_since() > STOP_GRACE_S:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.2)
    codes = [p.returncode for p in procs]
    if interrupt.received():
        _report_interrupt(uri, study_name, {worker_id(p.pid) for p in procs}, started_ms)
        return interrupt.exit_code()
    if any(codes):
        print(f"bench run: workers exited with codes {codes}", file=sys.stderr)
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench import spec as spec_mod
    from bench.studyfile import check_writable

    spec = spec_mod.load(args.study)
    spec = spec.quick_variant() if args.quick else spec
    check_writable(Path(args.results_dir) / spec.name, f"--results-dir {args.results_dir}")
    uri = stores.tracking_uri(args.tracking_uri)
    stores.check(args.storage, uri)
    return _report(spec, uri, args)


def cmd_status(args: argparse.Namespace) -> int:
    from bench import spec as spec_mod
    from bench import status
    from bench.tracking import tracking_uri

    spec = spec_mod.load(args.study)
    return status.main(spec.quick_variant() if args.quick else spec, args.storage, tracking_uri(args.tracking_uri))


def _report(spec: Any, uri: str, args: argparse.Namespace) -> int:
    # Imports none of torch, Lightning or (unless there is something to write to a SQLite store)
    # MLflow: a report takes seconds, and importing them alone took longer (bench.report.runs).
    from bench.report.collect import collect
    from bench.report.publish import attach_report, log_results
    from bench.report.render import summary_table, write_report

    result = collect(spec, tracking_uri=uri, storage_url=args.storage)
    path = write_report(result, Path(args.results_dir) / spec.name)
    attach_report(result, uri, path.parent)
    table = summary_table(result)
    log_results(result, table, uri)  # the ranking on the arms' parent runs, equal to summary.csv
    cols = ["arm", "test_mean", "test_ci95_low", "test_ci95_high", f"best_{result.objective}", "steps", "wall_time_s",
            "target_wall_time_s"]
    if table["task"].nunique() > 1:
        cols.insert(1, "task")
    print(f"{result.test_metric} ({result.direction}), mean [95% CI] over eval seeds:")
    print(table[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    print(f"report: {path}  (HTML: {path.with_suffix('.html')})")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from bench.tracking import tracking_uri
    from bench.ui import serve

    return serve(tracking_uri(args.tracking_uri), args.storage, host=args.host, mlflow_port=args.mlflow_port,
                 dashboard_port=args.dashboard_port, log_dir=Path(args.log_dir) if args.log_dir else None)


def cmd_train(args: argparse.Namespace) -> int:
    from bench.data.store import check_datasets
    from bench.spec import RunConfig, check_task, default_objective, direction_of

    check_task(args.model, args.dataset)  # like every other bad input: refused before a run is written
    check_datasets([args.dataset])
    objective = default_objective(args.model, args.dataset)
    config = RunConfig.build(model=args.model, dataset=args.dataset, optimizer=args.optimizer,
                             schedule=args.schedule, params=parse_set(args.set), epochs=args.epochs,
                             steps=args.steps, samples=args.samples, seconds=args.seconds, eval_every=args.eval_every,
                             seed=args.seed, data_seed=args.data_seed, objective=objective,
                             evaluate_test=True, accelerator=args.accelerator, progress_bar=args.progress_bar,
                             devices=args.devices, num_nodes=args.num_nodes, strategy=args.strategy,
                             precision=args.precision)
    from bench.tracking import Tracker, dataset_inputs, tracking_uri
    from bench.tuning.executor import execute

    tracker = Tracker(tracking_uri(args.tracking_uri))
    exp = tracker.experiment_id(args.experiment)
    logger = tracker.start_run(exp, f"{args.model}-{args.optimizer}-seed{args.seed}", {
        "phase": "train", "model": args.model, "dataset": args.dataset, "optimizer": args.optimizer,
        "schedule": args.schedule, "seed": str(args.seed), "config_hash": config.hash(), **config.source_tags()})
    logger.log_params({**config.params, **config.budget.params()})
    logger.log_dict(config.model_dump(), "config.json")
    logger.log_inputs(dataset_inputs(config.dataset, config.data_seed, config.data_args, ("train", "val", "test")))
    try:
        result = execute(config, logger, context={"tracking_uri": tracker.uri, "run_id": logger.run_id})
    except BaseException as err:
        logger.set_tags({"error": f"{type(err).__name__}: {err}"[:500]})
        logger.finish("KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    logger.log_metrics({k: v for k, v in result.final.items() if k.startswith("test/")}, step=len(result.history))
    logger.set_tags({"status": result.status, "steps": result.steps, "samples": result.samples,
                     "epochs_run": result.epochs_run, "train_time_s": result.train_time_s,
                     "budget": result.extra["budget"], "device": result.device, "stop_reason": result.reason})
    logger.finish("FINISHED")
    print(f"run {logger.run_id} ({result.status}{': ' + result.reason if result.reason else ''}; "
          f"{direction_of(objective)} {objective})")
    for key, value in result.final.items():
        print(f"  {key:<14} {value:.6g}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from bench.data import DATASETS
    from bench.data.store import data_dir, fetch, missing_files, present

    root = data_dir()
    if args.data_command == "status":
        print(f"data folder: {root}")
        for info in DATASETS:
            if info.files:
                missing = missing_files(info.files, root)
                state = "present" if not missing else f"{len(missing)} of {len(info.files)} files missing"
                print(f"  {info.name:<14} {state}")
                for f in info.files:
                    print(f"      {'ok     ' if present(root / f) else 'missing'} {root / f}")
        return 0
    DATASETS.get(args.name)  # an unknown name: one line, exit 2
    try:
        folder = fetch(args.name, root)
    except OSError as err:  # no network, a mirror down, a folder that cannot be written
        print(f"bench data fetch {args.name}: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(f"{args.name}: files in {folder}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from bench.listing import render

    print(render())
    return 0


def cmd_perf(args: argparse.Namespace) -> int:
    from bench.perf import main

    return main(Path(args.out), repeats=args.repeats)


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # this process is the command: it ends when main returns
        # Without this, interpreter exit spends ~2 s collecting torch's and Lightning's objects
        # (after Ctrl-C, most of the time to return). Frozen objects are skipped by that last collection.
        atexit.register(gc.freeze)
    args = parser().parse_args(argv)
    from bench.data.store import DataFilesMissing, set_data_dir
    from bench.launch.options import UsageError
    from bench.studyfile import OutputDirError, SpecError

    if getattr(args, "data_dir", None):
        set_data_dir(args.data_dir)  # inherited by the workers this command starts

    try:  # nothing heavy is imported before a bad study file or folder is refused
        if args.command == "run" and args.launcher == "slurm" and not args.slurm_worker:
            from bench.launch.slurm import check_environment

            check_environment(args)  # bad --slurm values, local stores, no sbatch: refused at once
        if args.command == "run" and args.slurm_worker:
            from bench.launch.slurm import worker_main

            return worker_main(args, _dispatch)  # its stop handler comes before the imports
        return _dispatch(args)
    except SpecError as err:
        print(err, file=sys.stderr)
        return EXIT_USAGE
    except (OutputDirError, UsageError, DataFilesMissing) as err:
        print(f"bench {args.command}: {err}", file=sys.stderr)
        return EXIT_USAGE


def _dispatch(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from bench.registry import UnknownNameError
    from bench.studyfile import SpecError

    handlers = {"run": cmd_run, "status": cmd_status, "report": cmd_report, "train": cmd_train, "list": cmd_list,
                "data": cmd_data, "perf": cmd_perf, "ui": cmd_ui}
    # run / train: SIGTERM stops them as Ctrl-C does (runs in flight KILLED), see bench.interrupt; a
    # Slurm worker handles SIGTERM itself (a grace period, then requeue: bench.launch.preempt)
    own = args.command in ("run", "train") and not getattr(args, "slurm_worker", False)
    signals = interrupt.handling() if own else contextlib.nullcontext()
    try:
        with signals:
            return handlers[args.command](args)
    except KeyboardInterrupt:  # before any run started (cmd_run reports the runs it stopped)
        print(interrupt.message(0) if args.command == "run" else f"bench {args.command}: interrupted",
              file=sys.stderr)
        return interrupt.exit_code()
    except stores.StoreError as err:
        print(f"bench {args.command}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except SpecError:
        raise  # main prints it as it is
    except (UnknownNameError, KeyError, ValueError, LookupError) as err:
        if args.command not in ("train", "report", "data"):
            raise
        print(f"bench {args.command}: {_one_line(err, ValidationError)}", file=sys.stderr)
        return EXIT_USAGE


def _one_line(err: Exception, validation_error: type) -> str:
    """A bad `bench train` / `bench report` argument as one line: pydantic's first error as
    `field: message`, a KeyError's own text without the quotes repr() adds."""
    if isinstance(err, validation_error):
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
        if first["type"] in bounds:  # pydantic says "Input should be greater than or equal to 1"
            msg = f"must be {bounds[first['type']]} {next(iter(first['ctx'].values()))}"
        else:
            msg = first["msg"].removeprefix("Value error, ")
        return f"{where}: {msg}" if where else msg
    if type(err) is KeyError and err.args:
        return str(err.args[0])
    return str(err)


if __name__ == "__main__":
    sys.exit(main())
