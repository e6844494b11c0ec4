"""On SQLite, a run's own writes bypass MLflow's ORM store (bench.tracking._SqlRuns). What MLflow
reads back through its public API must be exactly what its client would have written."""

from __future__ import annotations

import math

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from bench.tracking import WRITER, Tracker

METRICS = [("val/acc", 0.5, 0), ("val/acc", 0.75, 1), ("val/acc", 0.25, 1), ("val/loss", math.nan, 0),
           ("val/loss", math.inf, 1), ("train/loss", -math.inf, 0), ("lr", 0.1, 0), ("lr", 0.1, 0)]
PARAMS = {"lr": 0.1, "hidden_sizes": "128-64", "long": "x" * 7000}  # MLflow truncates long values
TAGS = {"phase": "tune", "arm": "sgd"}


def _read(client: MlflowClient, run_id: str) -> dict:
    run = client.get_run(run_id)
    ignored = {"mlflow.runName", "mlflow.user", "mlflow.source.name", "mlflow.source.type", "mlflow.source.git.commit"}
    # repr: NaN never equals NaN, its text does
    history = {key: sorted((m.step, repr(m.value)) for m in client.get_metric_history(run_id, key))
               for key in run.data.metrics}
    return {"status": run.info.status, "ended": run.info.end_time is not None,
            "params": run.data.params, "metrics": {k: repr(v) for k, v in run.data.metrics.items()}, "history": history,
            "tags": {k: v for k, v in run.data.tags.items() if k not in ignored},
            "artifact_uri_tail": run.info.artifact_uri.rsplit("/", 2)[-1]}


@pytest.fixture
def tracker(tmp_path) -> Tracker:
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db")
    assert tracker.sql is not None  # the direct path is on for SQLite
    return tracker


def test_sql_path_reads_back_as_the_client_path(tracker):
    client = tracker.client
    exp = tracker.experiment_id("parity")
    reference = client.create_run(exp, run_name="ref", tags={**TAGS, "mlflow.parentRunId": "p"})
    client.log_batch(reference.info.run_id, metrics=[Metric(k, v, 1000 + s, s) for k, v, s in METRICS],
                     params=[Param(k, str(v)) for k, v in PARAMS.items()])
    client.log_batch(reference.info.run_id, tags=[RunTag("status", "completed")])
    client.set_terminated(reference.info.run_id, "FINISHED")

    logger = tracker.start_run(exp, "ours", TAGS, parent_id="p")
    assert logger.sql is not None
    logger.log_params(PARAMS)
    logger._metrics.extend(Metric(k, v, 1000 + s, s) for k, v, s in METRICS)  # same timestamps as above
    logger.flush()
    logger.set_tags({"status": "completed"})
    logger.finish("FINISHED", background=True)
    WRITER.drain()

    ours, ref = _read(client, logger.run_id), _read(client, reference.info.run_id)
    provenance_keys = set(ours["tags"]) - set(ref["tags"])  # start_run adds git sha, versions, host
    assert all(k.startswith(("git_", "version.")) or k in ("python", "host") for k in provenance_keys)
    ours["tags"] = {k: v for k, v in ours["tags"].items() if k not in provenance_keys}
    assert ours == ref
    assert ref["metrics"]["val/acc"] == "0.75"  # latest = highest step, then highest value
    assert len(ref["history"]["lr"]) == 1  # an identical metric is one row
    found = tracker.find_runs(exp, {"arm": "sgd"}, status="FINISHED")
    assert {r.info.run_id for r in found} == {logger.run_id, reference.info.run_id}


def test_sql_path_keeps_mlflows_rules_for_params_and_tags(tracker):
    exp = tracker.experiment_id("rules")
    logger = tracker.start_run(exp, "run", {"phase": "eval"})
    logger.log_params({"lr": 0.1})
    logger.set_tags({"phase": "tune"})
    logger.flush()
    logger.log_params({"lr": 0.1})  # the same value again is allowed, as in MLflow
    logger.flush()
    assert tracker.client.get_run(logger.run_id).data.tags["phase"] == "tune"  # a tag is replaced
    logger.log_params({"lr": 0.2})
    with pytest.raises(ValueError, match=r"params \['lr'\] were logged before with other values"):
        logger.flush()
    assert tracker.client.get_run(logger.run_id).data.params == {"lr": "0.1"}  # nothing overwritten
    logger.finish("FAILED")
    assert tracker.client.get_run(logger.run_id).info.status == "FAILED"

