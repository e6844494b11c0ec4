"""`bench perf`: per-epoch and per-step cost of each MNIST-1D model, `fit` beside a plain PyTorch loop.

For linear, mlp, cnn (1-D) and gru on mnist1d with studies/mnist1d.toml's batch size (128) and SGD:
`fit`'s training time (evaluation excluded: `RunResult.train_time_s`) per epoch and per optimizer
step, and the same training written as a bare loop (bench.perf.plain_loop_seconds, which also
evaluates once per epoch, so its figure includes evaluation and the ratio is conservative for `fit`).
Medians over the repeats, the two measured alternately in one process, so a machine's load or speed
moves both. Absolute times are this machine's; the ratio is what carries across machines.
"""

from __future__ import annotations

import statistics

from bench.spec.config import RunConfig

MODELS = ("linear", "mlp", "cnn", "gru")
PARAMS = {"mlp": {"hidden_sizes": "128-64"}, "cnn": {"cnn_channels": "16-32"}, "gru": {"gru_hidden": 64}}


def workload_config(model: str, epochs: int) -> RunConfig:
    return RunConfig.build(model=model, dataset="mnist1d", optimizer="sgd", epochs=epochs, accelerator="cpu",
                           params={"lr": 0.05, "batch_size": 128, **PARAMS.get(model, {})})


def mnist1d_costs(repeats: int, epochs: int = 3) -> dict:
    from bench.perf import plain_loop_seconds
    from bench.train import fit

    out = {}
    for model in MODELS:
        config = workload_config(model, epochs)
        fit(config), plain_loop_seconds(config)  # warm-up: dataset cache, first kernels
        fits, plains, steps = [], [], 0
        for _ in range(repeats):
            t_plain, steps = plain_loop_seconds(config)
            plains.append(t_plain)
            result = fit(config)
            assert result.steps == steps, (result.steps, steps)
            fits.append(result.train_time_s)
        t_fit, t_plain = statistics.median(fits), statistics.median(plains)
        out[model] = {"epochs": epochs, "steps": steps, "fit_train_s": t_fit, "plain_s": t_plain,
                      "fit_ms_per_step": t_fit / steps * 1e3, "plain_ms_per_step": t_plain / steps * 1e3,
                      "fit_s_per_epoch": t_fit / epochs, "ratio": t_fit / t_plain, "repeats": repeats}
    return out


def render(costs: dict) -> list[str]:
    lines = ["", "## MNIST-1D: cost per epoch and per step (SGD, batch 128)", "",
             "| model | steps/epoch | fit: s per epoch (training) | fit: ms per step | plain loop: ms per step "
             "| fit ÷ plain |", "|---|---|---|---|---|---|"]
    for model, c in costs.items():
        lines.append(f"| {model} | {c['steps'] // c['epochs']} | {c['fit_s_per_epoch']:.3f} | "
                     f"{c['fit_ms_per_step']:.3f} | {c['plain_ms_per_step']:.3f} | {c['ratio']:.2f} |")
    return lines
