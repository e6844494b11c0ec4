"""`bench perf`, batched runs (bench/batched.py), measured side by side in one process:

1. K = 5 evaluation seeds of the digits MLP (the quickstart's SGD trial, test split scored):
   `fit_batched` ÷ five sequential `fit` calls, wall time; rounds alternate, medians.
2. B = 8 tuning trials (8 learning rates, log-spaced; one parameter group per member): the same.
3. The quickstart study end to end (`bench run studies/quickstart.toml`, fresh stores each):
   eval seeds one after another (eval.batched = false: the suite before batching) vs batched eval
   seeds (the default) vs batched eval seeds + tuning.batch = 4. Each run is a subprocess.
On a CUDA machine the same two ratios are measured on the CNN (digits images, no batch norm) and
the Transformer (sequences); `tests/test_batched.py::test_gpu_*` checks their equality there.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.batched import fit_batched
from bench.spec import RunConfig
from bench.train import fit

TARGET_SEEDS_RATIO = 0.35
WORKLOADS = {  # name -> (model, dataset, params): the CPU case, and the GPU cases
    "digits MLP": ("mlp", "digits", {"hidden_sizes": "128-64", "batch_size": 64}),
    "digits-images CNN": ("cnn", "digits_images", {"batch_norm": False, "batch_size": 64}),
    "sequences Transformer": ("transformer", "sequences", {"batch_size": 64}),
}


def _configs(workload: str, lrs: list[float], seeds: list[int], epochs: int, accelerator: str) -> list[RunConfig]:
    model, dataset, params = WORKLOADS[workload]
    return [RunConfig.build(model=model, dataset=dataset, optimizer="sgd", params={**params, "lr": lr},
                            epochs=epochs, seed=seed, accelerator=accelerator, evaluate_test=True)
            for lr, seed in zip(lrs, seeds)]


def side_by_side(configs: list[RunConfig], repeats: int) -> dict:
    """Wall time of the configs trained one after another ÷ as one batched model (alternating)."""
    fit(configs[0]), fit_batched(configs, [None] * len(configs))  # warm-up: imports, dataset cache
    sequential, batched = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for config in configs:
            fit(config)
        sequential.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fit_batched(configs, [None] * len(configs))
        batched.append(time.perf_counter() - t0)
    seq, bat = statistics.median(sequential), statistics.median(batched)
    return {"members": len(configs), "sequential_s": seq, "batched_s": bat, "ratio": bat / seq,
            "repeats": repeats, "epochs": configs[0].epochs}


def batched_costs(repeats: int = 3, epochs: int = 15, workloads: tuple[str, ...] = ("digits MLP",),
                  accelerator: str = "cpu") -> dict:
    out = {}
    for name in workloads:
        seeds = _configs(name, [0.1] * 5, [1000 + k for k in range(5)], epochs, accelerator)
        trials = _configs(name, [0.01 * 2 ** (k / 1.4) for k in range(8)], [0] * 8, epochs, accelerator)
        out[name] = {"seeds": side_by_side(seeds, repeats), "trials": side_by_side(trials, repeats)}
    out["target_seeds_ratio"] = TARGET_SEEDS_RATIO
    out["threads"] = torch.get_num_threads()
    out["device"] = accelerator
    return out


QUICKSTART_SETTINGS = {
    "sequential eval seeds (eval.batched = false)": "[eval]\nseeds = 5\nbatched = false\n",
    "batched eval seeds (default)": "[eval]\nseeds = 5\n",
    "batched eval seeds + tuning.batch = 4": "[eval]\nseeds = 5\n",
}


def quickstart_wall_times(study: Path, quick: bool = False) -> dict:
    """`bench run` of the quickstart under each setting, fresh stores each (subprocesses)."""
    text = study.read_text()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, eval_block) in enumerate(QUICKSTART_SETTINGS.items()):
            root = Path(tmp) / f"s{i}"
            root.mkdir()
            variant = text.replace("[eval]\nseeds = 5\n", eval_block)
            if "tuning.batch" in label:
                variant = variant.replace("[tuning]\n", "[tuning]\nbatch = 4\n")
            (root / "study.toml").write_text(variant)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "bench.cli", "run", "study.toml", "--quiet",
                            *(["--quick"] if quick else [])], cwd=root, check=True, capture_output=True)
            rows[label] = time.perf_counter() - t0
    base = rows[next(iter(rows))]
    return {"wall_s": rows, "ratio_to_sequential": {k: v / base for k, v in rows.items()}, "quick": quick}


def render(r: dict) -> list[str]:
    lines = ["", f"## Batched runs (bench/batched.py; {r['device']}, {r['threads']} torch threads)", "",
             "| workload | case | sequential | batched | batched ÷ sequential | target |", "|---|---|---|---|---|---|"]
    for name, cases in r.items():
        if not isinstance(cases, dict) or "seeds" not in cases:
            continue
        for case, label in (("seeds", "K = 5 eval seeds"), ("trials", "B = 8 tuning trials")):
            c = cases[case]
            target = f"≤ {r['target_seeds_ratio']}" if case == "seeds" and name == "digits MLP" else "(measured)"
            if case == "seeds" and name == "digits MLP":
                target += " (met)" if c["ratio"] <= r["target_seeds_ratio"] else " (NOT met)"
            lines.append(f"| {name}, {c['epochs']} epochs | {label} | {c['sequential_s']:.2f} s | "
                         f"{c['batched_s']:.2f} s | {c['ratio']:.3f} | {target} |")
    if "quickstart" in r:
        q = r["quickstart"]
        lines += ["", "| quickstart `bench run`" + (" --quick" if q["quick"] else "") + " | wall time | ÷ sequential |",
                  "|---|---|---|"]
        for label, wall in q["wall_s"].items():
            lines.append(f"| {label} | {wall:.1f} s | {q['ratio_to_sequential'][label]:.3f} |")
    return lines
