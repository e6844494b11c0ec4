"""Report: statistics against hand-computed values, and the report's numbers (summary.csv,
report.md, report.html) against what MLflow and Optuna hold after a real quick study."""

from __future__ import annotations

import base64
import html
import json
import math
import re
import textwrap

import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient
from scipy import stats as sps

from bench.report import stats
from bench.report.render import to_html
from tests.conftest import STUDIES, Stores

ARMS = ["sgd", "bgd", "adam", "adagrad"]


# --- statistics ------------------------------------------------------------------------------
def test_holm_matches_a_hand_computed_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max(0.06, 0.04) = 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # NaN (no test) is left out of the family, m = 3: 0.02*3 = 0.06, 0.6*2 = 1.2 -> 1 (cap), 0.7 -> max(1.2, 0.7)
    out = stats.holm([0.6, math.nan, 0.02, 0.7])
    assert math.isnan(out[1]) and [out[0], out[2], out[3]] == pytest.approx([1.0, 0.06, 1.0])
    assert stats.holm([]) == []


def test_pairwise_tests_paired_on_shared_seeds_welch_otherwise_and_verdicts():
    seeds = [1000, 1001, 1002, 1003]
    a = [0.90, 0.92, 0.91, 0.93]
    b = [0.80, 0.83, 0.80, 0.84]
    c = [0.905, 0.915, 0.915, 0.925]
    comps = stats.compare_arms({"a": (seeds, a), "b": (seeds, b), "c": (seeds[:3], c[:3])}, "maximize")
    ab, ac, bc = comps
    assert ab.test == "paired t" and ab.p == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert ac.test == "Welch t" and ac.p == pytest.approx(sps.ttest_ind(a, c[:3], equal_var=False).pvalue)
    assert [c.p_holm for c in comps] == pytest.approx(stats.holm([c.p for c in comps]))
    assert ab.verdict == "a better" and ac.verdict == "not distinguishable"
    # lower is better for a loss: the same numbers make b the better arm
    low = stats.compare_arms({"a": (seeds, a), "b": (seeds, b)}, "minimize")[0]
    assert low.verdict == "b better"
    # paired seeds given in a different order are matched by seed
    shuffled = stats.compare_arms({"a": (seeds, a), "b": (seeds[::-1], b[::-1])}, "maximize")[0]
    assert shuffled.p == pytest.approx(ab.p)
    one = stats.compare_arms({"a": (seeds[:1], a[:1]), "b": (seeds, b)}, "maximize")[0]
    assert one.test == "none" and one.verdict.startswith("not tested")


@pytest.mark.parametrize("n_a, n_b", [(2, 2), (3, 5), (5, 5), (10, 4)])
def test_t_tests_intervals_and_ranks_equal_scipy_stats(n_a, n_b):
    rng = np.random.default_rng(n_a * 10 + n_b)
    xa, xb = rng.normal(0.9, 0.02, n_a), rng.normal(0.88, 0.05, n_b)
    test, t, p = stats._test((list(range(n_a)), list(xa)), (list(range(n_b)), list(xb)), paired_ok=False)
    ref = sps.ttest_ind(xa, xb, equal_var=False)
    assert test == "Welch t" and (t, p) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-9)
    yb = xa + rng.normal(0.01, 0.01, n_a)
    test, t, p = stats._test((list(range(n_a)), list(xa)), (list(range(n_a)), list(yb)), paired_ok=True)
    ref = sps.ttest_rel(xa, yb)
    assert test == "paired t" and (t, p) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-9)
    mean, low, high = stats.mean_ci(xb, confidence=0.9)
    half = sps.t.ppf(0.95, n_b - 1) * xb.std(ddof=1) / math.sqrt(n_b)
    assert (low, high) == pytest.approx((xb.mean() - half, xb.mean() + half), rel=1e-12)
    values = {"a": 0.9, "b": 0.8, "c": 0.9, "d": math.nan, "e": 0.7, "f": 0.8}
    for direction in ("maximize", "minimize"):
        key = np.array([v if math.isfinite(v) else (-math.inf if direction == "maximize" else math.inf)
                        for v in values.values()])
        ref = sps.rankdata(-key if direction == "maximize" else key, method="average")
        assert list(stats.ranks(values, direction).values()) == ref.tolist()


def test_mean_ci_is_student_t():
    mean, low, high = stats.mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and high - mean == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-6)
    assert math.isnan(stats.mean_ci([1.0])[1])


def test_majority_target_and_time_to_target():
    finals = {"a": 0.95, "b": 0.90, "c": 0.80, "d": 0.60}
    assert stats.majority_target(finals, "maximize") == 0.80  # 3 of 4 arms reach it
    assert stats.majority_target({"a": 0.1, "b": 0.3, "c": 0.2}, "minimize") == 0.2  # 2 of 3
    curve = np.array([0.5, 0.79, 0.81, 0.9])
    axes = {"steps": np.array([10.0, 20, 30, 40]), "wall_time_s": np.array([1.0, 2, 3, 4])}
    assert stats.time_to_target(curve, axes, 0.80, "maximize") == {"epochs": 3, "steps": 30, "wall_time_s": 3}
    never = stats.time_to_target(curve, axes, 0.95, "maximize")
    assert all(math.isinf(v) for v in never.values())


def test_performance_profile_hand_example():
    times = {"t1": {"x": 1.0, "y": 2.0}, "t2": {"x": 3.0, "y": 1.5}, "t3": {"x": 1.0, "y": math.inf}}
    rho = stats.performance_profile(times, [1.0, 2.0, 4.0])
    assert rho["x"] == pytest.approx([2 / 3, 1.0, 1.0])  # ratios 1, 2, 1
    assert rho["y"] == pytest.approx([1 / 3, 2 / 3, 2 / 3])  # ratios 2, 1, inf
    assert stats.ranks({"x": 0.9, "y": 0.8, "z": math.nan}, "maximize") == {"x": 1.0, "y": 2.0, "z": 3.0}


def test_html_is_self_contained_and_keeps_table_cells(tmp_path):
    (tmp_path / "figures").mkdir()
    png = b"\x89PNG\r\n\x1a\nfake"
    (tmp_path / "figures" / "f.png").write_bytes(png)
    md = textwrap.dedent("""\
        # Title `x`

        Some **bold** text.

        | a | b |
        |---|---|
        | 1 | l2 \\| dropout |
        | ![f](figures/f.png) | <b> |

        - item one
        """)
    out = to_html(md, tmp_path, "t")
    assert "<h1>Title <code>x</code></h1>" in out and "<strong>bold</strong>" in out
    assert "<td>l2 | dropout</td>" in out and "<td>&lt;b&gt;</td>" in out and "<li>item one</li>" in out
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in out
    assert "http" not in out.replace("<!DOCTYPE html>", "")


# --- end to end ------------------------------------------------------------------------------
def _md_table(md: str, marker: str) -> list[list[str]]:
    """Cells of the first table at or after the line containing `marker` (header and rule dropped)."""
    lines = md.splitlines()
    i = next(k for k, ln in enumerate(lines) if marker in ln)
    while not lines[i].startswith("|"):
        i += 1
    rows = []
    while i < len(lines) and lines[i].startswith("|"):
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", lines[i].strip()[1:-1])])
        i += 1
    return rows


def _num(cell: str) -> float:
    return math.inf if cell == "not reached" else float(cell)


@pytest.mark.slow
def test_report_numbers_equal_mlflow_and_optuna(quick_study):
    stores = quick_study
    out = stores.results / "quickstart-quick"
    client = MlflowClient(stores.tracking_uri)
    exp = client.get_experiment_by_name("quickstart-quick")
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(stores.storage))
    table = pd.read_csv(out / "summary.csv").set_index("arm")
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    ranking = {r[1]: r for r in _md_table(md, "## Ranking")[2:]}
    cost = {r[0]: r for r in _md_table(md, "## Cost to the end and to the target")[2:]}
    assert set(ranking) == set(cost) == set(table.index) == set(ARMS)

    evals = {arm: sorted((r for r in runs if r.data.tags.get("phase") == "eval" and r.data.tags["arm"] == arm),
                         key=lambda r: int(r.data.tags["seed"])) for arm in ARMS}
    finals = {}
    for arm in ARMS:
        values = [r.data.metrics["test/acc"] for r in evals[arm]]
        mean, low, high = stats.mean_ci(values)
        row = table.loc[arm]
        assert row["test_mean"] == pytest.approx(mean, abs=1e-12)
        assert (row["test_ci95_low"], row["test_ci95_high"]) == pytest.approx((low, high), abs=1e-12)
        study = optuna.load_study(study_name=f"quickstart-quick/{arm}", storage=storage)
        parent = next(r for r in runs if r.data.tags.get("phase") == "arm" and r.data.tags["arm"] == arm)
        assert row["best_val/acc"] == pytest.approx(study.best_value, abs=1e-12)
        assert parent.data.metrics["best_val/acc"] == pytest.approx(study.best_value, abs=1e-12)
        for key in ("steps", "samples"):
            assert row[key] == pytest.approx(np.mean([float(r.data.tags[key]) for r in evals[arm]]))
        assert row["wall_time_s"] == pytest.approx(np.mean([r.data.metrics["wall_time_s"] for r in evals[arm]]))
        # Markdown shows the same numbers at 4 significant digits
        cells = ranking[arm]
        shown = [float(x) for x in re.findall(r"[-\d.e+]+", cells[2].split("(n=")[0])]
        assert shown == pytest.approx([mean, low, high], rel=6e-4)
        assert float(cells[3]) == pytest.approx(study.best_value, rel=6e-4)
        assert cells[5] == f"{row['trials_complete']} / {row['trials_pruned']} / {row['trials_failed']}"
        for name, value in study.best_params.items():
            assert re.search(rf"{name}=([-\d.e+]+)", cells[4]).group(1) == f"{value:.4g}"
        assert cost[arm][1] == "3 epochs"  # the arm's budget
        assert float(cost[arm][3]) == pytest.approx(row["steps"], rel=1e-5)
        finals[arm] = {key: np.mean([[m.value for m in sorted(client.get_metric_history(r.info.run_id, key),
                                                               key=lambda m: m.step)] for r in evals[arm]], axis=0)
                       for key in ("val/acc", "steps", "samples", "wall_time_s")}

    # the target: the workload's (mlp on mnist1d: val/acc 0.56), stated with its source; time to it
    # from MLflow histories
    target = 0.56
    assert table["target"].unique() == pytest.approx([target]) and set(table["target_source"]) == {"workload"}
    assert "for time-to-target, workload: val/acc ≥ 0.56: the workload's fixed target for mlp on mnist1d" in md
    for arm in ARMS:
        hit = np.flatnonzero(finals[arm]["val/acc"] >= target)
        expected = {"epochs": hit[0] + 1 if hit.size else math.inf,
                    **{k: finals[arm][k][hit[0]] if hit.size else math.inf for k in ("steps", "samples",
                                                                                     "wall_time_s")}}
        for k, v in expected.items():
            assert table.loc[arm, f"target_{k}"] == pytest.approx(v)
        assert _num(cost[arm][7]) == pytest.approx(expected["epochs"])
        assert _num(cost[arm][11]) == pytest.approx(expected["wall_time_s"], rel=6e-3)

    # pairwise: paired t-tests on MLflow's per-seed test values, Holm over the 6 pairs
    pairs = pd.read_csv(out / "pairwise.csv")
    assert len(pairs) == 6 and set(pairs["test"]) == {"paired t"}
    raw = []
    for _, p in pairs.iterrows():
        xa = [r.data.metrics["test/acc"] for r in evals[p["arm_a"]]]
        xb = [r.data.metrics["test/acc"] for r in evals[p["arm_b"]]]
        d = np.subtract(xa, xb)
        raw.append(sps.ttest_rel(xa, xb).pvalue if np.ptp(d) > 0 else (1.0 if d[0] == 0 else 0.0))
    assert pairs["p"].tolist() == pytest.approx(raw)
    assert pairs["p_holm"].tolist() == pytest.approx(stats.holm(raw))
    md_pairs = _md_table(md, "## Pairwise comparisons")[2:]
    assert len(md_pairs) == 6
    for cells, (_, p) in zip(md_pairs, pairs.iterrows()):
        assert (cells[0], cells[1], cells[3], cells[6]) == (p["arm_a"], p["arm_b"], "paired t", p["verdict"])
        assert float(cells[5]) == pytest.approx(p["p_holm"], rel=5e-3)  # 3 significant digits
        assert ("better" in p["verdict"]) == (p["p_holm"] < 0.05)

    # the HTML is the same text: every Markdown ranking cell appears in it, and it stands alone
    for cells in ranking.values():
        for cell in cells[:4]:
            assert f"<td>{html.escape(cell, quote=False)}</td>" in page
    srcs = re.findall(r'src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"(href|src)=\"https?:", page)

    # figures: learning/lr/tuning curves and Optuna's per arm; importances skipped with a reason
    figs = out / "figures"
    for name in ("learning_curves", "lr_curves", "tuning_curves"):
        assert (figs / f"{name}.png").stat().st_size > 5000
    assert "![learning rate](figures/lr_curves.png)" in md and "![tuning curves](figures/tuning_curves.png)" in md
    for arm in ARMS:
        study = optuna.load_study(study_name=f"quickstart-quick/{arm}", storage=storage)
        n_complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
        if n_complete >= 2:
            assert (figs / "optuna" / f"{arm}-history.png").exists() and (figs / "optuna" / f"{arm}-slice.png").exists()
    assert "sgd: importances skipped (a single tuned parameter, `lr`" in md  # sgd tunes lr only
    assert "## Provenance" in md and "quickstart.toml" in md and "git:" in md and "torch" in md

    # the report files are artifacts of every arm's parent run
    for arm in ARMS:
        parent = next(r for r in runs if r.data.tags.get("phase") == "arm" and r.data.tags["arm"] == arm)
        names = {f.path for f in client.list_artifacts(parent.info.run_id, "report")}
        assert {"report/report.html", "report/report.md", "report/summary.csv", "report/pairwise.csv"} <= names


# summary.csv column -> the parent run's metric (the scheme documented in the README)
RESULT_METRICS = {
    "rank": "result/rank", "test_mean": "result/test_acc_mean", "test_std": "result/test_acc_std",
    "test_ci95_low": "result/test_acc_ci95_low", "test_ci95_high": "result/test_acc_ci95_high",
    "eval_seeds": "result/eval_seeds", "best_val/acc": "result/best_val_acc",
    **{k: f"result/{k}" for k in ("epochs", "steps", "samples", "train_time_s", "wall_time_s", "target_epochs",
                                  "target_steps", "target_samples", "target_train_time_s", "target_wall_time_s",
                                  "trials_complete", "trials_pruned", "trials_failed", "trials_diverged",
                                  "diverged_evals")},
    "target": "result/target_val_acc",
}


def _parents(client: MlflowClient, exp_id: str) -> dict:
    return {r.data.tags["arm"]: r for r in client.search_runs([exp_id], "tags.phase = 'arm'")}


def _check_parents_equal_summary(client: MlflowClient, exp_id: str, table: pd.DataFrame) -> None:
    parents = _parents(client, exp_id)
    assert set(parents) == set(table["arm"]) == set(ARMS)
    for row in table.to_dict("records"):
        run = parents[row["arm"]]
        result = {k: v for k, v in run.data.metrics.items() if k.startswith("result/")}
        expected = {name: row[col] for col, name in RESULT_METRICS.items() if math.isfinite(row[col])}
        assert result == expected, row["arm"]  # exactly the CSV's values, nothing else under result/
        reached = math.isfinite(row["target_epochs"])
        assert run.data.tags["target_reached"] == str(reached).lower()
        assert reached == all(f"result/target_{k}" in result for k in ("epochs", "steps", "samples", "wall_time_s"))
        # params: what the arm is and what tuning chose
        params = run.data.params
        for key in ("model", "dataset", "optimizer", "schedule", "regularizers"):
            assert params[key] == str(row[key])
        best = {k[5:]: v for k, v in params.items() if k.startswith("best.")}
        assert best == {k: str(v) for k, v in json.loads(row["best_params"]).items()} and best
        assert params["best_trial"] == str(int(row["best_trial"]))


@pytest.mark.slow
def test_parent_runs_carry_the_summary_and_a_rerun_of_report_keeps_it(quick_study):
    stores = quick_study
    out = stores.results / "quickstart-quick"
    client = MlflowClient(stores.tracking_uri)
    exp_id = client.get_experiment_by_name("quickstart-quick").experiment_id
    table = pd.read_csv(out / "summary.csv", float_precision="round_trip")
    assert table["test_std"].tolist() == pytest.approx(
        [np.std(_eval_values(client, exp_id, arm), ddof=1) for arm in table["arm"]], rel=1e-12)
    _check_parents_equal_summary(client, exp_id, table)

    # `bench report` again: same values, no new metric rows, params unchanged
    before = {arm: (r.data.params, r.data.tags["target_reached"]) for arm, r in _parents(client, exp_id).items()}
    assert stores.run("report", str(STUDIES / "quickstart.toml"), "--quick") == 0
    _check_parents_equal_summary(client, exp_id, pd.read_csv(out / "summary.csv", float_precision="round_trip"))
    for arm, run in _parents(client, exp_id).items():
        assert (run.data.params, run.data.tags["target_reached"]) == before[arm]
        for key in (k for k in run.data.metrics if k.startswith("result/")):
            assert len(client.get_metric_history(run.info.run_id, key)) == 1, (arm, key)


def _eval_values(client: MlflowClient, exp_id: str, arm: str) -> list[float]:
    runs = client.search_runs([exp_id], f"tags.phase = 'eval' and tags.arm = '{arm}'")
    return [r.data.metrics["test/acc"] for r in runs]


@pytest.mark.slow
def test_a_target_no_longer_reached_voids_its_metrics(quick_study, tmp_path):
    import shutil

    from bench import spec as spec_mod
    from bench.report.collect import collect
    from bench.report.publish import log_results
    from bench.report.render import summary_table

    stores = Stores(tmp_path / "copy")  # the shared study's stores stay as the report left them
    shutil.copytree(quick_study.root, stores.root, ignore=shutil.ignore_patterns("results", "mlartifacts"))
    client = MlflowClient(stores.tracking_uri)
    exp_id = client.get_experiment_by_name("quickstart-quick").experiment_id
    spec = spec_mod.load(STUDIES / "quickstart.toml").quick_variant()
    # a study-file target that the quick study's arms reach (the workload's 0.56 may not be in 3 epochs;
    # 0.2 is twice chance on MNIST-1D's 10 classes, which a tuned MLP passes in its first epoch)
    spec = spec.model_copy(update={"target": 0.2})
    result = collect(spec, tracking_uri=stores.tracking_uri, storage_url=stores.storage)
    table = summary_table(result)
    assert set(table["target_source"]) == {"study file"}
    arm = table.loc[table["target_epochs"].map(math.isfinite), "arm"].iloc[0]
    costs = [f"target_{k}" for k in ("epochs", "steps", "samples", "train_time_s", "wall_time_s")]
    log_results(result, table, stores.tracking_uri)  # the reached target's costs on the parent runs
    changed = table.copy()
    changed.loc[changed["arm"] == arm, costs] = math.inf  # as if more seeds had moved the target
    log_results(result, changed, stores.tracking_uri)
    run = _parents(client, exp_id)[arm]
    assert run.data.tags["target_reached"] == "false"
    assert all(math.isnan(run.data.metrics[f"result/{k}"]) for k in costs)  # MLflow cannot delete a metric
    log_results(result, table, stores.tracking_uri)  # reached again: the values are back
    _check_parents_equal_summary(client, exp_id, table)


@pytest.mark.slow
def test_search_runs_sorted_by_the_test_mean_is_the_reports_ranking(quick_study):
    stores = quick_study
    out = stores.results / "quickstart-quick"
    client = MlflowClient(stores.tracking_uri)
    exp_id = client.get_experiment_by_name("quickstart-quick").experiment_id
    ranking = [r[1] for r in _md_table((out / "report.md").read_text(), "## Ranking")[2:]]
    table = pd.read_csv(out / "summary.csv", float_precision="round_trip")
    assert ranking == table["arm"].tolist()
    by_mean = client.search_runs([exp_id], filter_string="tags.phase = 'arm'",
                                 order_by=["metrics.`result/test_acc_mean` DESC"])
    assert [r.data.metrics["result/test_acc_mean"] for r in by_mean] == table["test_mean"].tolist()
    if table["test_mean"].is_unique:  # MLflow breaks ties its own way; result/rank keeps the report's
        assert [r.data.tags["arm"] for r in by_mean] == ranking
    by_rank = client.search_runs([exp_id], filter_string="tags.phase = 'arm'", order_by=["metrics.`result/rank` ASC"])
    assert [r.data.tags["arm"] for r in by_rank] == ranking
    assert [r.data.metrics["result/rank"] for r in by_rank] == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.slow
def test_every_run_of_the_study_has_its_dataset_splits_as_inputs(quick_study):
    from bench import spec as spec_mod
    from bench.data import load_dataset
    from bench.tracking import split_digest

    stores = quick_study
    client = MlflowClient(stores.tracking_uri)
    exp_id = client.get_experiment_by_name("quickstart-quick").experiment_id
    dataset_name = spec_mod.load(STUDIES / "quickstart.toml").dataset
    bundle = load_dataset(dataset_name, 0)
    digests = {s: split_digest(bundle.split(s).x.numpy(), bundle.split(s).y.numpy()) for s in ("train", "val", "test")}
    runs = client.search_runs([exp_id], max_results=1000)
    splits = {"tune": {"train", "val"}, "eval": {"train", "val", "test"}, "arm": {"train", "val", "test"}}
    assert {r.data.tags["phase"] for r in runs} == set(splits)
    for summary in runs:
        inputs = client.get_run(summary.info.run_id).inputs.dataset_inputs
        used = {t.value: i.dataset for i in inputs for t in i.tags if t.key == "mlflow.data.context"}
        assert set(used) == splits[summary.data.tags["phase"]] and len(inputs) == len(used)
        for split, dataset in used.items():
            assert (dataset.name, dataset.digest, dataset.source_type) == (dataset_name, digests[split], "code")
            assert json.loads(dataset.profile)["features_shape"] == list(bundle.split(split).x.shape)
    # which runs saw the test split, through MLflow's own search
    test_users = client.search_runs([exp_id], "datasets.context = 'test'", max_results=1000)
    assert {r.info.run_id for r in test_users} == {r.info.run_id for r in runs if r.data.tags["phase"] != "tune"}


MULTI = """
name = "two-models"
model = "mlp"
dataset = "digits"
epochs = 2
[params]
hidden_sizes = "32"
[tuning]
n_trials = 1
[eval]
seeds = 2
[[arms]]
name = "mlp-sgd"
optimizer = "sgd"
[[arms]]
name = "mlp-adam"
optimizer = "adam"
[[arms]]
name = "linear-sgd"
model = "linear"
optimizer = "sgd"
[[arms]]
name = "linear-adam"
model = "linear"
optimizer = "adam"
"""


@pytest.mark.slow
def test_a_study_over_two_models_gets_a_performance_profile_and_rank_table(stores):
    path = stores.root / "two.toml"
    path.write_text(MULTI)
    assert stores.run("run", str(path), "--quiet") == 0
    out = stores.results / "two-models"
    table = pd.read_csv(out / "summary.csv").set_index("arm")
    assert set(table["task"]) == {"mlp on digits", "linear on digits"}
    assert set(table["method"]) == {"sgd", "adam"}
    md = (out / "report.md").read_text()
    assert "### mlp on digits" in md and "### linear on digits" in md and "## Across models" in md
    assert (out / "figures" / "performance_profile.png").exists()
    # one target per task; pairwise tests stay within a task (1 pair each)
    assert table.groupby("task")["target"].nunique().eq(1).all()
    assert len(pd.read_csv(out / "pairwise.csv")) == 2
    rank_rows = _md_table(md, "Rank of each method's test mean per task")
    header, ranks = rank_rows[0], {r[0]: r for r in rank_rows[2:]}
    for task in ("mlp on digits", "linear on digits"):
        best = table[table["task"] == task].sort_values("test_mean", ascending=False).iloc[0]["method"]
        assert float(ranks[best][header.index(task)]) == 1.0
    profile = {r[0]: [float(x) for x in r[1:]] for r in _md_table(md, "| method | ρ(τ=1)")[2:]}
    assert set(profile) == {"sgd", "adam"}
    assert all(0.0 <= v <= 1.0 for vals in profile.values() for v in vals)
    # on every task where someone reaches the target, the fastest method has ratio 1
    reached = table.groupby("task")["target_wall_time_s"].min().map(math.isfinite).sum()
    assert sum(vals[0] for vals in profile.values()) * 2 >= reached


# --- report speed: what it reads, what it imports, how it draws -------------------------------
def test_the_importance_figure_of_the_recorded_values_is_fanovas(tmp_path, monkeypatch):
    # A finished arm's importance figure is drawn from the values recorded with its study (no
    # scikit-learn import, no 64 trees): pixel for pixel the figure fANOVA's recomputation gives.
    from types import SimpleNamespace

    from bench.report import figures
    from bench.tuning.study import IMPORTANCE_EVALUATOR, param_importances

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: -(math.log10(t.suggest_float("lr", 1e-4, 1.0, log=True)) + 1) ** 2
                   + 0.1 * t.suggest_float("momentum", 0.0, 0.99), n_trials=12)
    importances, _ = param_importances(study)
    study.set_user_attr("param_importances", importances)
    study.set_user_attr("importance_evaluator", IMPORTANCE_EVALUATOR)
    arm = SimpleNamespace(arm=SimpleNamespace(name="sgd"), study=study, importances=importances,
                          trials_complete=12, trials_pruned=0)
    recomputed, note = figures.draw((figures.optuna_figure, (arm, "importances", tmp_path / "fanova", 13)))
    assert note == "" and recomputed.exists()  # 13 trials asked for: tuning not finished, fANOVA runs

    def no_fanova(_study):
        raise AssertionError("fANOVA recomputed for a finished arm")

    monkeypatch.setattr(figures, "_evaluator", no_fanova)
    recorded, note = figures.draw((figures.optuna_figure, (arm, "importances", tmp_path / "recorded", 12)))
    assert note == "" and recorded.read_bytes() == recomputed.read_bytes()


def _rows(runs):
    """Runs as comparable values (NaN metrics as text: NaN != NaN)."""
    return [(r.run_id, r.status, r.start_time, r.artifact_uri, sorted(r.tags.items()), sorted(r.params.items()),
             sorted((k, repr(v)) for k, v in r.metrics.items())) for r in runs]


@pytest.mark.slow
def test_the_reports_sqlite_reads_equal_mlflow_clients(quick_study):
    from bench.report.collect import CURVE_KEYS
    from bench.report.runs import ClientRuns, SqliteRuns, open_runs
    from bench.stores import sqlite_file

    fast, client = open_runs(quick_study.tracking_uri), ClientRuns(quick_study.tracking_uri)
    assert isinstance(fast, SqliteRuns) and fast.path == sqlite_file(quick_study.tracking_uri)
    assert fast.experiment("quickstart-quick") == client.experiment("quickstart-quick")
    assert fast.experiment("no-such-study") is None is client.experiment("no-such-study")
    exp_id, _ = fast.experiment("quickstart-quick")
    runs = fast.runs(exp_id)
    assert _rows(runs) == _rows(client.runs(exp_id)) and len(runs) > 12
    ids, keys = [r.run_id for r in runs if r.tags.get("phase") == "eval"], ["val/acc", *CURVE_KEYS]
    assert fast.histories(ids, keys) == client.histories(ids, keys) and len(fast.histories(ids, keys)) > 20
    fast.close()
    missing = open_runs(f"sqlite:///{quick_study.root}/none.db")  # read-only: no empty store is created
    assert missing.experiment("quickstart-quick") is None and not (quick_study.root / "none.db").exists()


HEAVY = ("torch", "lightning", "pytorch_lightning", "mlflow", "sklearn", "sqlalchemy")


@pytest.mark.slow
def test_a_report_process_imports_no_training_stack_and_draws_the_same_files(quick_study, tmp_path):
    # `bench report` in its own process (figures drawn in forked workers) on stores the report has
    # already published to: none of torch, Lightning, MLflow, scikit-learn or SQLAlchemy is imported,
    # and it writes the files the in-process report (figures drawn in turn) wrote, byte for byte
    # but for the time stamp.
    import subprocess
    import sys

    before = quick_study.results / "quickstart-quick"
    flags = [*quick_study.flags()[:4], "--results-dir", str(tmp_path)]
    code = ("import json, sys; from bench.cli import main; code = main(sys.argv[1:]); "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules])); sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", code, "report", str(STUDIES / "quickstart.toml"), "--quick", *flags],
                          capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout.splitlines()[-1]) == []
    after = tmp_path / "quickstart-quick"
    files = sorted(p.relative_to(before).as_posix() for p in before.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(after).as_posix() for p in after.rglob("*") if p.is_file())
    assert sum(f.endswith(".png") for f in files) >= 10
    for name in files:
        old, new = (before / name).read_bytes(), (after / name).read_bytes()
        if name.startswith("report."):  # the provenance footer says when it was generated
            old, new = (re.sub(rb"generated: [^<\n]* UTC", b"", text) for text in (old, new))
        assert old == new, name



def test_a_report_of_unchanged_results_reuses_its_figures_and_any_change_redraws_them(quick_study, tmp_path):
    import shutil
    import subprocess
    import sys

    from bench.report.figure_cache import MANIFEST

    for name in ("mlflow.db", "optuna.journal"):  # a copy: the session's stores stay as they are
        shutil.copy(quick_study.root / name, tmp_path / name)
    copy = Stores(tmp_path)
    fig_dir = copy.results / "quickstart-quick" / "figures"
    code = ("import json, sys; from bench.cli import main; code = main(sys.argv[1:]); "
            "print(json.dumps('matplotlib' in sys.modules)); sys.exit(code)")

    def report() -> tuple[bool, dict[str, int], str]:
        proc = subprocess.run([sys.executable, "-c", code, "report", str(STUDIES / "quickstart.toml"), "--quick",
                               *copy.flags()], capture_output=True, text=True, check=True)
        pngs = {p.relative_to(fig_dir).as_posix(): p.stat().st_mtime_ns for p in fig_dir.rglob("*.png")}
        md = re.sub(r"generated: [^\n]* UTC", "", (fig_dir.parent / "report.md").read_text())
        return json.loads(proc.stdout.splitlines()[-1]), pngs, md

    drew, first, md_first = report()
    assert drew and len(first) >= 10
    drew, second, md_second = report()  # nothing changed: no figure drawn, matplotlib not even imported
    assert not drew and second == first and md_second == md_first
    fingerprint = json.loads((fig_dir / MANIFEST).read_text())["fingerprint"]

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(copy.storage))
    optuna.load_study(study_name="quickstart-quick/adam", storage=storage).set_user_attr("note", "changed")
    drew, third, md_third = report()  # any change to what was collected: every figure drawn again
    assert drew and third.keys() == first.keys() and all(third[k] != first[k] for k in first)
    assert json.loads((fig_dir / MANIFEST).read_text())["fingerprint"] != fingerprint and md_third == md_first

    victim = next(iter(third))
    (fig_dir / victim).unlink()  # a figure missing: drawn again
    drew, fourth, _ = report()
    assert drew and fourth.keys() == third.keys()
