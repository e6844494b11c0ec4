"""Write `results/<study>/`: summary.csv, report.md and figures/ from a StudyResult."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pandas as pd

from bench.report.collect import StudyResult, params_json
from bench.report.figures import learning_curves
from bench.report.stats import mean_ci


def summary_table(result: StudyResult) -> pd.DataFrame:
    rows = []
    for a in result.arms:
        mean, low, high = mean_ci(a.test_values)
        rows.append({
            "arm": a.arm.name, "model": a.arm.model, "dataset": a.arm.dataset,
            "optimizer": a.arm.optimizer, "schedule": a.arm.schedule,
            "regularizers": "+".join(a.arm.regularizers) or "none", "sampler": a.arm.sampler, "pruner": a.arm.pruner,
            "trials_complete": a.trials_complete, "trials_pruned": a.trials_pruned,
            "trials_failed": a.trials_failed, "best_trial": a.best_trial,
            f"best_{result.objective}": a.best_val, "best_params": params_json(a.best_params),
            "test_metric": result.test_metric, "test_mean": mean, "test_ci95_low": low,
            "test_ci95_high": high, "eval_seeds": len(a.test_values), "diverged_evals": a.diverged_evals,
            "epochs": a.epochs, "steps": a.steps, "samples": a.samples, "wall_time_s": a.wall_time_s,
            "parent_run_id": a.parent_run_id, "eval_run_ids": " ".join(a.eval_run_ids),
        })
    df = pd.DataFrame(rows)
    ascending = result.direction == "minimize"
    return df.sort_values("test_mean", ascending=ascending, na_position="last").reset_index(drop=True)


def _fmt(x: float, digits: int = 4) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def markdown(result: StudyResult, table: pd.DataFrame, figure: Path | None, out_dir: Path) -> str:
    spec = result.spec
    t = spec.tuning
    lines = [
        f"# Study `{spec.name}`", "",
        spec.description, "",
        f"Objective: **{result.objective}** ({result.direction}), selected on the validation split; "
        f"the best configuration of each arm is re-run with {spec.eval.seeds} seeds and scored on the "
        f"held-out test split ({result.test_metric}). Each arm: {t.n_trials} trials of "
        f"{spec.epochs} epochs, sampler `{_arm_setting(result, 'sampler')}` (seed {t.seed}), "
        f"pruner `{_arm_setting(result, 'pruner')}`.", "",
        "## Ranking", "",
        f"| rank | arm | {result.test_metric} mean [95% CI] | best {result.objective} | epochs | "
        "optimizer steps | samples | wall time (s) | trials done / pruned / failed | diverged evals |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, row in table.iterrows():
        lines.append(
            f"| {i + 1} | {row['arm']} | {_fmt(row['test_mean'])} [{_fmt(row['test_ci95_low'])}, "
            f"{_fmt(row['test_ci95_high'])}] (n={row['eval_seeds']}) | {_fmt(row[f'best_{result.objective}'])} | "
            f"{_fmt(row['epochs'], 3)} | {_fmt(row['steps'], 5)} | {_fmt(row['samples'], 6)} | "
            f"{_fmt(row['wall_time_s'], 3)} | {row['trials_complete']} / {row['trials_pruned']} / "
            f"{row['trials_failed']} | {row['diverged_evals']} |"
        )
    lines += ["", "CI: two-sided Student-t interval over the eval seeds (n-1 degrees of freedom).", "",
              "## Best hyper-parameters", "",
              "| arm | best trial | parameters | MLflow parent run |", "|---|---|---|---|"]
    for _, row in table.iterrows():
        lines.append(f"| {row['arm']} | {row['best_trial']} | `{row['best_params']}` | `{row['parent_run_id']}` |")
    if figure is not None:
        lines += ["", "## Learning curves", "", f"![learning curves]({figure.relative_to(out_dir).as_posix()})"]
    lines += factor_sections(result)
    prov = result.provenance
    versions = ", ".join(f"{k.removeprefix('version.')} {v}" for k, v in sorted(prov.items())
                         if k.startswith("version."))
    lines += [
        "", "## Provenance", "",
        f"- generated: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- git: {prov.get('git_sha', '?')} (dirty: {prov.get('git_dirty', '?')})",
        f"- device: {prov.get('device', '?')}; host: {prov.get('host', '?')}; Python {prov.get('python', '?')}",
        f"- versions: {versions}",
        "- MLflow eval run ids per arm: see `summary.csv` (`eval_run_ids`).",
    ]
    return "\n".join(lines) + "\n"


def _arm_setting(result: StudyResult, key: str) -> str:
    """The arms' sampler or pruner: one name, or 'per arm (a, b)' when arms differ."""
    names = list(dict.fromkeys(getattr(a.arm, key) for a in result.arms))
    return names[0] if len(names) == 1 else f"per arm: {', '.join(names)}"


def factor_sections(result: StudyResult) -> list[str]:
    """Regularizers used (and what each changes), per-arm parameter importance, and budget curves
    when arms differ in sampler. Each section appears only when it has something to say."""
    from bench.optim import REGULARIZERS

    lines: list[str] = []
    used = list(dict.fromkeys(r for a in result.arms for r in a.arm.regularizers))
    if used:
        lines += ["", "## Regularizers", "", "| regularizer | changes | how |", "|---|---|---|"]
        for name in used:
            meta = REGULARIZERS.get(name).meta
            how = meta["how"].replace("|", "\\|")  # a bare | would end the table cell
            lines.append(f"| {name} | **{meta['changes']}** | {how} |")
    if any(a.importances for a in result.arms):
        lines += ["", "## Hyper-parameter importance", "",
                  "fANOVA over each arm's completed tuning trials (share of the objective's variance; "
                  "few trials make these rough).", "", "| arm | importance |", "|---|---|"]
        for a in result.arms:
            ranked = sorted(a.importances.items(), key=lambda kv: -kv[1])
            lines.append(f"| {a.arm.name} | {', '.join(f'{k} {v:.2f}' for k, v in ranked) or '–'} |")
    if len({a.arm.sampler for a in result.arms}) > 1:
        n = max((len(a.best_so_far) for a in result.arms), default=0)
        marks = sorted({k for k in (1, n // 4, n // 2, 3 * n // 4, n) if k >= 1})
        lines += ["", "## Budget curves", "", f"Best {result.objective} after k trials (pruned trials count).", "",
                  "| arm | sampler | " + " | ".join(f"k={k}" for k in marks) + " |",
                  "|---|---|" + "---|" * len(marks)]
        for a in result.arms:
            cells = [_fmt(a.best_so_far[k - 1]) if k <= len(a.best_so_far) else "–" for k in marks]
            lines.append(f"| {a.arm.name} | {a.arm.sampler} | " + " | ".join(cells) + " |")
    return lines


def write_report(result: StudyResult, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    table = summary_table(result)
    table.to_csv(out_dir / "summary.csv", index=False)
    figure = learning_curves(result, out_dir / "figures" / "learning_curves.png")
    path = out_dir / "report.md"
    path.write_text(markdown(result, table, figure, out_dir))
    return path
