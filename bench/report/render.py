"""Write `results/<study>/`: report.md, report.html (self-contained: figures inlined as base64,
no network), summary.csv, pairwise.csv and figures/ (PNG) from a StudyResult.

The HTML is converted from the Markdown text, so both show the same numbers, and both are built
from the same tables as summary.csv / pairwise.csv (which the tests compare with MLflow).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.report import figure_cache
from bench.report.collect import OPTUNA_FIGURES, StudyResult, params_json
from bench.report.stats import ALPHA, mean_ci
from bench.report.tables import PROFILE_TAUS, Analysis, analyse, final_validation, pairwise_frame, task_targets

if TYPE_CHECKING:  # pandas (~0.5 s) is imported while the figures are drawn (write_report)
    import pandas as pd


def summary_table(result: StudyResult, analysis: Analysis | None = None) -> pd.DataFrame:
    """One row per arm (all tasks), best test mean first; the numbers of every report table."""
    import pandas as pd

    analysis = analysis or analyse(result)
    rows = []
    for a in result.arms:
        mean, low, high = mean_ci(a.test_values)
        tt = analysis.to_target.get(a.arm.name, {})
        rows.append({
            "arm": a.arm.name, "task": a.task, "model": a.arm.model, "dataset": a.arm.dataset,
            "optimizer": a.arm.optimizer, "schedule": a.arm.schedule,
            "regularizers": "+".join(a.arm.regularizers) or "none", "sampler": a.arm.sampler, "pruner": a.arm.pruner,
            "trials_complete": a.trials_complete, "trials_pruned": a.trials_pruned,
            "trials_failed": a.trials_failed, "trials_diverged": a.trials_diverged, "best_trial": a.best_trial,
            f"best_{result.objective}": a.best_val, "best_params": params_json(a.best_params),
            "test_metric": result.test_metric, "test_mean": mean,
            "test_std": float(np.std(a.test_values, ddof=1)) if len(a.test_values) > 1 else math.nan,
            "test_ci95_low": low, "test_ci95_high": high, "eval_seeds": len(a.test_values),
            "diverged_evals": a.diverged_evals,
            "budget": a.arm.budget.kind, "budget_value": a.arm.budget.value, "eval_every": a.arm.budget.eval_every,
            "epochs": a.epochs, "steps": a.steps, "samples": a.samples, "train_time_s": a.train_time_s,
            "wall_time_s": a.wall_time_s,
            f"final_{result.objective}": final_validation(a, result.objective),
            "target": analysis.targets[a.task].value if a.task in analysis.targets else math.nan,
            "target_source": analysis.targets[a.task].source if a.task in analysis.targets else "",
            **{f"target_{k}": tt.get(k, math.nan) for k in ("epochs", "steps", "samples", "train_time_s",
                                                            "wall_time_s")},
            "method": analysis.methods.get(a.arm.name, a.arm.name),
            "parent_run_id": a.parent_run_id, "eval_run_ids": " ".join(a.eval_run_ids),
        })
    df = pd.DataFrame(rows)
    ascending = result.direction == "minimize"
    df = df.sort_values("test_mean", ascending=ascending, na_position="last", kind="stable").reset_index(drop=True)
    # rank within the task, as the report's ranking (ties keep the study file's order); none without a result
    df.insert(1, "rank", (df.groupby("task").cumcount() + 1).where(df["test_mean"].notna()).astype("Int64"))
    return df


def _fmt(x: float, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "not reached"
    return f"{x:.{digits}g}"


def _fmt_params(params: dict) -> str:
    return ", ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in sorted(params.items())) or "–"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def _rel(path: Path | None, out_dir: Path) -> str:
    return path.relative_to(out_dir).as_posix() if path is not None else ""


def markdown(result: StudyResult, table: pd.DataFrame, analysis: Analysis, figures: dict, out_dir: Path) -> str:
    spec = result.spec
    t = spec.tuning
    by_arm = {a.arm.name: a for a in result.arms}
    rows = table.set_index("arm")
    multi = len(analysis.tasks) > 1
    lines = [
        f"# Study `{spec.name}`", "",
        spec.description, "",
        f"Objective: **{result.objective}** ({result.direction}), selected on the validation split; "
        f"the best configuration of each arm is re-run with {spec.eval.seeds} seeds and scored on the "
        f"held-out test split ({result.test_metric}). Each arm: {t.n_trials} trials of "
        f"{_budgets(result)}, sampler `{_arm_setting(result, 'sampler')}` (seed {t.seed}), "
        f"pruner `{_arm_setting(result, 'pruner')}`.", "",
    ]
    for task, target in analysis.targets.items():
        lines += [f"**Target** ({task}), for time-to-target, {target.source}: {target.how}", ""]
    lines += ["## Ranking", ""]
    for task, arms in analysis.tasks.items():
        if multi:
            lines += [f"### {task}", ""]
        lines += [
            f"| rank | arm | {result.test_metric} mean [95% CI] | best {result.objective} | best hyper-parameters | "
            "trials done / pruned / failed | diverged trials | diverged evals |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for i, a in enumerate(arms):
            r = rows.loc[a.arm.name]
            lines.append(
                f"| {i + 1} | {a.arm.name} | {_fmt(r['test_mean'])} [{_fmt(r['test_ci95_low'])}, "
                f"{_fmt(r['test_ci95_high'])}] (n={r['eval_seeds']}) | {_fmt(r[f'best_{result.objective}'])} | "
                f"{_md_cell(_fmt_params(a.best_params))} | {r['trials_complete']} / {r['trials_pruned']} / "
                f"{r['trials_failed']} | {r['trials_diverged']} | {r['diverged_evals']} |")
        lines.append("")
    lines += ["CI: two-sided Student-t interval over the eval seeds (n-1 degrees of freedom). Diverged trials: "
              "tuning trials stopped because the loss became non-finite (counted as pruned).", "",
              "## Cost to the end and to the target", "",
              "Means over the eval seeds. *To the end*: the whole budget. *To target*: the first evaluation point "
              "at which the arm's mean validation curve reaches the task's target (above), with the epochs, "
              "optimizer steps, samples, training time (evaluation excluded) and wall time spent by then "
              "(AlgoPerf's time-to-result; times are this machine's).", ""]
    for task, arms in analysis.tasks.items():
        if multi:
            lines += [f"### {task}", ""]
        lines += ["| arm | budget | epochs | optimizer steps | samples | train time (s) | wall time (s) | "
                  "epochs to target | steps to target | samples to target | train time to target (s) | "
                  "wall time to target (s) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for a in arms:
            r = rows.loc[a.arm.name]
            lines.append(
                f"| {a.arm.name} | {a.arm.budget.value:g} {a.arm.budget.kind} | {_fmt(r['epochs'], 3)} | "
                f"{_fmt(r['steps'], 6)} | {_fmt(r['samples'], 7)} | {_fmt(r['train_time_s'], 3)} | "
                f"{_fmt(r['wall_time_s'], 3)} | {_fmt(r['target_epochs'], 3)} | {_fmt(r['target_steps'], 6)} | "
                f"{_fmt(r['target_samples'], 7)} | {_fmt(r['target_train_time_s'], 3)} | "
                f"{_fmt(r['target_wall_time_s'], 3)} |")
        lines.append("")
    lines += budget_section(result, rows)
    lines += pairwise_section(result, analysis)
    if figures.get("learning_curves"):
        lines += ["## Learning curves", "",
                  "Validation objective of each arm's selected configuration at its evaluation points: mean over "
                  "the eval seeds, band = min..max over seeds, against epochs, optimizer steps (log), training "
                  "samples (log) and training time (evaluation excluded): one axis per panel, so full-batch and "
                  "mini-batch arms meet on each; dashed: the target.", "",
                  f"![learning curves]({_rel(figures['learning_curves'], out_dir)})", ""]
    if figures.get("lr_curves"):
        lines += ["## Learning rate applied", "",
                  "The `lr` logged by the eval runs at the end of each epoch (mean over seeds): the schedule as "
                  "it was applied, not as configured.", "",
                  f"![learning rate]({_rel(figures['lr_curves'], out_dir)})", ""]
    lines += tuning_section(result, figures, out_dir)
    lines += sensitivity_section(result, figures, out_dir)
    lines += factor_sections(result)
    lines += strategy_section(result)
    if multi:
        lines += cross_model_section(analysis, figures, out_dir)
    lines += ["", "## Best hyper-parameters", "",
              "| arm | best trial | parameters | MLflow parent run |", "|---|---|---|---|"]
    for _, row in table.iterrows():
        lines.append(f"| {row['arm']} | {_fmt_int(row['best_trial'])} | `{row['best_params']}` | "
                     f"`{row['parent_run_id']}` |")
    lines += provenance_section(result, by_arm)
    return "\n".join(lines) + "\n"


def _budgets(result: StudyResult) -> str:
    """'15 epochs, evaluated every epoch' when the arms share one budget, else 'per-arm budgets'."""
    budgets = list(dict.fromkeys(a.arm.budget for a in result.arms))
    if len(budgets) == 1:
        return budgets[0].describe()
    groups: dict = {}
    for a in result.arms:
        groups.setdefault(a.arm.budget, []).append(a.arm.name)
    return "per-arm budgets (" + "; ".join(f"{b.describe()}: {', '.join(names)}" for b, names in groups.items()) + ")"


def budget_section(result: StudyResult, rows: pd.DataFrame) -> list[str]:
    """When arms differ in budget kind: optimizer x budget kind -> test mean [CI] and the training
    time to the target, one table per task, so each budget's answer reads side by side."""
    kinds = list(dict.fromkeys(a.arm.budget.kind for a in result.arms))
    if len(kinds) < 2:
        return []
    lines = ["## Budgets side by side", "",
             f"{result.test_metric} mean [95% CI] over the eval seeds, and the training time (s) to the target, "
             "of each optimizer under each budget kind (equal epochs, equal optimizer steps, equal training "
             "time ...). The budget's value is in the column head.", ""]
    for task in dict.fromkeys(a.task for a in result.arms):
        arms = [a for a in result.arms if a.task == task]
        cols = {k: sorted({a.arm.budget.value for a in arms if a.arm.budget.kind == k}) for k in kinds}
        head = [f"{k} = {', '.join(f'{v:g}' for v in vs)}" for k, vs in cols.items()]
        if len(dict.fromkeys(a.task for a in result.arms)) > 1:
            lines += [f"### {task}", ""]
        lines += ["| optimizer | " + " | ".join(head) + " |", "|---|" + "---|" * len(kinds)]
        for optimizer in dict.fromkeys(a.arm.optimizer for a in arms):
            cells = []
            for kind in kinds:
                found = [a for a in arms if a.arm.optimizer == optimizer and a.arm.budget.kind == kind]
                parts = []
                for a in found:
                    r = rows.loc[a.arm.name]
                    tt = r["target_train_time_s"]
                    to = f"{_fmt(tt, 3)} s" if isinstance(tt, float) and math.isfinite(tt) else _fmt(tt)
                    parts.append(f"{_fmt(r['test_mean'])} [{_fmt(r['test_ci95_low'])}, {_fmt(r['test_ci95_high'])}]"
                                 f"; to target {to}")
                cells.append(" / ".join(parts) or "–")
            lines.append(f"| {optimizer} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def sensitivity_section(result: StudyResult, figures: dict, out_dir: Path) -> list[str]:
    lines: list[str] = []
    if figures.get("lr_sensitivity"):
        lines += ["## Learning-rate sensitivity", "",
                  f"Final {result.objective} of every tuning trial against its learning rate (log axis), one colour "
                  "per arm: filled = completed, hollow = pruned (at its last reported value), × at the lower "
                  "edge = diverged or failed (no value).", "",
                  f"![learning-rate sensitivity]({_rel(figures['lr_sensitivity'], out_dir)})", ""]
    heatmaps = figures.get("heatmaps") or {}
    if heatmaps:
        lines += ["## Two hyper-parameters", "",
                  f"Arms that tune two or more numeric hyper-parameters: the best final {result.objective} of the "
                  "completed trials in each cell of a grid over the two most important ones (log axes where the "
                  "space is log); dots are the trials (hollow: pruned).", "",
                  "| arm | heatmap |", "|---|---|"]
        lines += [f"| {arm} | ![{arm} heatmap]({_rel(path, out_dir)}) |" for arm, path in heatmaps.items()]
        lines.append("")
    return lines


def _fmt_int(x: object) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else str(int(x))


MAX_ALL_PAIRS = 8  # arms per task up to which the report lists every pair


def pairwise_section(result: StudyResult, analysis: Analysis) -> list[str]:
    lines = ["## Pairwise comparisons", "",
             f"{result.test_metric} over the eval seeds, every pair of arms of a task. Eval seed k is the same "
             "integer seed in every arm and fixes the initial weights and the mini-batch order, so two arms of "
             "the same model share each seed's randomness: a **paired t-test** on the per-seed differences "
             "removes that shared noise. Arms whose seed sets differ (a diverged seed) get **Welch's t-test** "
             f"(unequal variances). p-values are **Holm**-corrected within each task (family-wise α = {ALPHA}); "
             "*not distinguishable* means the corrected p-value is ≥ α: the data do not separate the two arms "
             "(with few seeds this is the common outcome, not evidence of equality).", ""]
    for task, comps in analysis.comparisons.items():
        if not comps:
            continue
        if len(analysis.tasks) > 1:
            lines += [f"### {task}", ""]
        arms = analysis.tasks[task]
        if len(arms) > MAX_ALL_PAIRS:  # n(n-1)/2 rows stop being readable: show the leader's pairs
            lead = arms[0].arm.name
            lines += [f"{len(comps)} pairs (all in `pairwise.csv`, Holm over all of them); shown: the pairs "
                      f"with the best arm, `{lead}`.", ""]
            comps = [c for c in comps if lead in (c.a, c.b)]
        lines += ["| arm A | arm B | mean A − B | test | p | p (Holm) | verdict |", "|---|---|---|---|---|---|---|"]
        for c in comps:
            # float32 metrics: a difference below 1e-6 of the values is rounding, show 0
            diff = 0.0 if abs(c.diff) <= 1e-6 * max(abs(c.mean_a), abs(c.mean_b)) else c.diff
            lines.append(f"| {c.a} | {c.b} | {_fmt(diff)} | {c.test} | {_fmt(c.p, 3)} | {_fmt(c.p_holm, 3)} | "
                         f"{c.verdict} |")
        lines.append("")
    return lines


def tuning_section(result: StudyResult, figures: dict, out_dir: Path) -> list[str]:
    lines = ["## Tuning", ""]
    if figures.get("tuning_curves"):
        lines += [f"Best {result.objective} so far against trial number (pruned and failed trials count: they "
                  "spent budget); dots are completed trials.", "",
                  f"![tuning curves]({_rel(figures['tuning_curves'], out_dir)})", ""]
    optuna_rows = figures.get("optuna", {})
    if any(optuna_rows.values()):
        lines += ["Optuna's own figures per arm (`optuna.visualization.matplotlib`):", "",
                  "| arm | optimization history | parameter importances | parallel coordinates | slice |",
                  "|---|---|---|---|---|"]
        for arm, paths in optuna_rows.items():
            cells = [f"![{arm} {k}]({_rel(paths[k], out_dir)})" if k in paths else "–" for k in OPTUNA_FIGURES]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        lines.append("")
    notes = figures.get("optuna_notes", [])
    if notes:
        lines += ["Skipped figures:", "", *[f"- {n}" for n in notes], ""]
    return lines


def cross_model_section(analysis: Analysis, figures: dict, out_dir: Path) -> list[str]:
    lines = ["", "## Across models", "",
             f"{len(analysis.tasks)} tasks. A *method* is an arm's name without its model and dataset names "
             "(`mlp-adam` and `cnn-adam` are both `adam`). Performance profile (Dolan & Moré; AlgoPerf): for "
             "each method, the share of tasks on which its wall time to the task's target is within τ × the "
             "fastest method's; a method that never reaches a task's target never counts for that task.", ""]
    if figures.get("performance_profile"):
        lines += [f"![performance profile]({_rel(figures['performance_profile'], out_dir)})", ""]
    if analysis.profile:
        marks = [1.0, 1.5, 2.0, 4.0, 8.0]
        lines += ["| method | " + " | ".join(f"ρ(τ={m:g})" for m in marks) + " |", "|---|" + "---|" * len(marks)]
        for method, rho in sorted(analysis.profile.items()):
            vals = [rho[min(range(len(PROFILE_TAUS)), key=lambda i: abs(PROFILE_TAUS[i] - m))] for m in marks]
            lines.append(f"| {method} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
        lines.append("")
    if analysis.rank_table is not None:
        cols = list(analysis.rank_table.columns)
        lines += ["Rank of each method's test mean per task (1 = best; ties share the mean rank):", "",
                  "| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for method, row in analysis.rank_table.iterrows():
            lines.append(f"| {method} | " + " | ".join(_fmt(row[c], 3) for c in cols) + " |")
        lines.append("")
    return lines


def provenance_section(result: StudyResult, by_arm: dict) -> list[str]:
    prov = result.provenance
    versions = ", ".join(f"{k.removeprefix('version.')} {v}" for k, v in sorted(prov.items())
                         if k.startswith("version."))
    study_file = prov.get("study_file", "")
    sha = prov.get("study_file_sha256", "")  # recorded when the study ran
    if not sha and study_file and Path(study_file).is_file():  # runs recorded before that tag existed
        sha = hashlib.sha256(Path(study_file).read_bytes()).hexdigest()
    digest = f" (sha256 {sha[:12]})" if sha else ""
    return [
        "", "## Provenance", "",
        f"- generated: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} by `bench report` from the MLflow "
        "and Optuna stores only",
        f"- study file: `{study_file or '?'}`{digest}; also attached to each arm's MLflow parent run",
        f"- git: {prov.get('git_sha', '?')} (dirty: {prov.get('git_dirty', '?')})",
        f"- device: {prov.get('device', '?')}; host: {prov.get('host', '?')}; Python {prov.get('python', '?')}",
        f"- versions: {versions}",
        *_component_sources(result),
        "- MLflow eval run ids per arm: see `summary.csv` (`eval_run_ids`); pairwise tests: `pairwise.csv`.",
    ]


def _component_sources(result: StudyResult) -> list[str]:
    """Where each arm's components came from when not built in (plug-in package or import path, with
    the providing package's version), as every run of the arm records them (`source.*` tags)."""
    lines = []
    for arm in result.arms:
        found = [f"{key.removeprefix('source.')}: {value}"
                 for key, value in sorted(arm.parent_tags.items())
                 if key.startswith("source.") and value not in ("built-in", "none", "")]
        if found:
            lines.append(f"  - {arm.arm.name}: " + "; ".join(found))
    return ["- components not built in (source as recorded on each run):", *lines] if lines else []


def _arm_setting(result: StudyResult, key: str) -> str:
    """The arms' sampler or pruner: one name, or 'per arm (a, b)' when arms differ."""
    names = list(dict.fromkeys(getattr(a.arm, key) for a in result.arms))
    return names[0] if len(names) == 1 else f"per arm: {', '.join(names)}"


STRATEGY_TOLERANCE = 1e-3  # |difference of test means| under which two executions "agree"


def strategy_section(result: StudyResult) -> list[str]:
    """Arms identical but for how they execute (strategy, devices, ...): do their results agree?
    With the global batch fixed and exact gradient weighting they should, up to float noise."""
    from bench.report.stats import mean_ci

    def key(a):  # everything but the execution
        return (a.arm.model, a.arm.dataset, a.arm.optimizer, a.arm.schedule, a.arm.regularizers,
                tuple(sorted(a.arm.fixed.items())), tuple(sorted((k, d.describe()) for k, d in a.arm.space.items())))

    rows = []
    for i, a in enumerate(result.arms):
        for b in result.arms[i + 1:]:
            if key(a) == key(b) and a.arm.execution != b.arm.execution and a.test_values and b.test_values:
                diff = mean_ci(a.test_values)[0] - mean_ci(b.test_values)[0]
                verdict = "agree" if abs(diff) <= STRATEGY_TOLERANCE else "DIFFER"
                desc = lambda arm: f"{arm.execution.get('strategy')} x{arm.execution.get('devices')}"  # noqa: E731
                rows.append(f"| {a.arm.name} ({desc(a.arm)}) | {b.arm.name} ({desc(b.arm)}) | {diff:.3g} | {verdict} |")
    if not rows:
        return []
    return ["", "## Execution strategies", "",
            f"Arms that differ only in how they execute. The global batch is the same on every rank count "
            f"(each rank takes 1/world of it; learning-rate scaling rule: none), so {result.test_metric} "
            f"should not change: they agree when the means differ by at most {STRATEGY_TOLERANCE:g}.", "",
            f"| arm A | arm B | mean A − B ({result.test_metric}) | verdict |", "|---|---|---|---|", *rows]


def factor_sections(result: StudyResult) -> list[str]:
    """Regularizers used (and what each changes), per-arm parameter importance, and budget curves
    when arms differ in sampler. Each section appears only when it has something to say."""
    from bench.optim import REGULARIZERS

    lines: list[str] = []
    used = list(dict.fromkeys(r for a in result.arms for r in a.arm.regularizers))
    if used:
        lines += ["", "## Regularizers", "", "| regularizer | changes | how |", "|---|---|---|"]
        for name in used:
            info = REGULARIZERS.get(name)
            how = info.how.replace("|", "\\|")  # a bare | would end the table cell
            lines.append(f"| {name} | **{info.changes}** | {how} |")
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


# --- Markdown -> self-contained HTML (the subset `markdown()` writes) --------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .55em;
vertical-align:top}th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}
code{background:#f3f3f3;padding:0 .2em;border-radius:3px;font-size:.9em}img{max-width:100%}
td img{max-width:260px}h1,h2{border-bottom:1px solid #ddd;padding-bottom:.2em}
"""


def _inline(text: str, out_dir: Path) -> str:
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) >= 2:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        s = html.escape(part, quote=False)
        s = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", lambda m: _img(m.group(1), m.group(2), out_dir), s)
        s = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)
        s = re.sub(r"(?<![\w*])\*([^*]+)\*(?![\w*])", r"<em>\1</em>", s)
        out.append(s)
    return "".join(out)


def _img(alt: str, src: str, out_dir: Path) -> str:
    path = out_dir / html.unescape(src)
    if path.is_file():  # inline: the file opens offline, alone
        src = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="{src}">'


def _cells(line: str) -> list[str]:
    s = line.strip()
    s = s[1:] if s.startswith("|") else s
    s = s[:-1] if s.endswith("|") and not s.endswith("\\|") else s
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", s)]


def to_html(md: str, out_dir: Path, title: str) -> str:
    body: list[str] = []
    para: list[str] = []
    lines = md.splitlines()

    def flush() -> None:
        if para:
            body.append(f"<p>{_inline(' '.join(para), out_dir)}</p>")
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        if m := re.match(r"(#{1,6}) (.*)", line):
            flush()
            n = len(m.group(1))
            body.append(f"<h{n}>{_inline(m.group(2), out_dir)}</h{n}>")
        elif line.startswith("|"):
            flush()
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            head, rows = _cells(block[0]), [_cells(r) for r in block[2:]]
            body.append("<table><thead><tr>" + "".join(f"<th>{_inline(c, out_dir)}</th>" for c in head)
                        + "</tr></thead><tbody>")
            body += ["<tr>" + "".join(f"<td>{_inline(c, out_dir)}</td>" for c in r) + "</tr>" for r in rows]
            body.append("</tbody></table>")
            continue
        elif line.startswith("- "):
            flush()
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:], out_dir)}</li>")
                i += 1
            body.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif not line.strip():
            flush()
        else:
            para.append(line.strip())
        i += 1
    flush()
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_report(result: StudyResult, out_dir: Path) -> Path:
    """Write every report file; returns the Markdown report's path (report.html sits beside it).
    Figures drawn from the same results before are reused (bench.report.figure_cache)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fig_dir = out_dir / "figures"
    targets = {task: t.value for task, t in task_targets(result).items()}
    key = figure_cache.fingerprint(result, targets)
    figures = figure_cache.load(fig_dir, key)
    wait = _start_figures(result, fig_dir, targets) if figures is None else None
    try:
        analysis = analyse(result)
        table = summary_table(result, analysis)
        table.to_csv(out_dir / "summary.csv", index=False)
        pairwise_frame(analysis, result.test_metric).to_csv(out_dir / "pairwise.csv", index=False)
    finally:
        if wait is not None:
            figures = wait()
    if wait is not None:
        if len(analysis.tasks) > 1:  # from the analysis: drawn here, after it
            from bench.report import figures as figs

            figures["performance_profile"] = figs.draw((figs.performance_profile, (
                analysis.profile, PROFILE_TAUS, len(analysis.tasks), fig_dir / "performance_profile.png")))
        figure_cache.save(fig_dir, key, figures)
    md = markdown(result, table, analysis, figures, out_dir)
    path = out_dir / "report.md"
    path.write_text(md)
    (out_dir / "report.html").write_text(to_html(md, out_dir, f"bench study {result.spec.name}"))
    return path


def _start_figures(result: StudyResult, fig_dir: Path, targets: dict[str, float]) -> Callable[[], dict]:
    """Start drawing every figure (in other processes, figs.start: the bulk of a report's time);
    the returned function waits for them and gives the `figures` mapping `markdown` takes."""
    from bench.report import figures as figs  # matplotlib and Optuna's figures: only to draw

    for stale in [*fig_dir.rglob("*.png"), fig_dir / figure_cache.MANIFEST] if fig_dir.exists() else []:
        stale.unlink(missing_ok=True)  # figures of arms or tasks that no longer exist must not linger
    n_trials = result.spec.tuning.n_trials
    jobs: dict[tuple[str, ...], figs.Job] = {
        ("learning_curves",): (figs.learning_curves, (result, fig_dir / "learning_curves.png", targets)),
        ("lr_curves",): (figs.lr_curves, (result, fig_dir / "lr_curves.png")),
        ("tuning_curves",): (figs.tuning_curves, (result, fig_dir / "tuning_curves.png")),
        ("lr_sensitivity",): (figs.lr_sensitivity, (result, fig_dir / "lr_sensitivity.png")),
        **{("heatmaps", a.arm.name): (figs.heatmap, (a, result, fig_dir / f"heatmap-{figs._safe(a.arm.name)}.png"))
           for a in result.arms},
    }
    notes: dict[str, list[str]] = {}
    for a in result.arms:
        kinds, notes[a.arm.name] = figs.optuna_kinds(a)
        jobs |= {("optuna", a.arm.name, k): (figs.optuna_figure, (a, k, fig_dir / "optuna", n_trials)) for k in kinds}
    wait = figs.start(list(jobs.values()))

    def figures() -> dict:
        drawn = dict(zip(jobs, wait()))
        out: dict = {"heatmaps": {}, "optuna": {a.arm.name: {} for a in result.arms}}
        for key, value in drawn.items():
            if key[0] == "heatmaps":
                if value:
                    out["heatmaps"][key[1]] = value
            elif key[0] == "optuna":
                (path, note), (_, arm, kind) = value, key
                if path:
                    out["optuna"][arm][kind] = path
                if note:
                    notes[arm].append(note)
            else:
                out[key[0]] = value
        out["optuna_notes"] = [note for arm_notes in notes.values() for note in arm_notes]
        return out

    return figures
