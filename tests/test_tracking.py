"""On SQLite, a run's own writes bypass MLflow's ORM store (bench.tracking._SqlRuns). What MLflow
reads back through its public API must be exactly what its client would have written."""

from __future__ import annotations

import json
import math

import pytest
import sqlalchemy
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from bench.data import load_dataset
from bench.tracking import WRITER, Tracker, dataset_inputs, split_digest

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



def _inputs(client: MlflowClient, run_id: str) -> list[tuple]:
    """A run's dataset inputs as MLflow reads them back: dataset fields and input tags."""
    return sorted((i.dataset.name, i.dataset.digest, i.dataset.source_type, i.dataset.source, i.dataset.schema,
                   i.dataset.profile, tuple(sorted((t.key, t.value) for t in i.tags)))
                  for i in client.get_run(run_id).inputs.dataset_inputs)


def test_dataset_inputs_name_the_exact_split_arrays():
    train, val, test = dataset_inputs("digits", 0, {}, ("train", "val", "test"))
    bundle = load_dataset("digits", 0)
    for given, split in ((train, "train"), (val, "val"), (test, "test")):
        part = bundle.split(split)
        assert given.dataset.name == "digits" and [(t.key, t.value) for t in given.tags] == [
            ("mlflow.data.context", split)]
        assert given.dataset.digest == split_digest(part.x.numpy(), part.y.numpy())
        assert json.loads(given.dataset.profile)["features_shape"] == [len(part), 64]
        assert '"shape\\": [-1, 64]' in given.dataset.schema  # a TensorSpec of the features
        assert given.dataset.source_type == "code"
        assert json.loads(given.dataset.source)["tags"] == {"dataset": "digits", "data_seed": "0", "data_args": "{}"}
    assert len({train.dataset.digest, val.dataset.digest, test.dataset.digest}) == 3
    assert dataset_inputs("digits", 0, {}, ("val",))[0] is val  # built once per process
    # other data are visibly other digests: another data seed moves every split, a smaller
    # training share only the training split
    assert dataset_inputs("digits", 1, {}, ("train",))[0].dataset.digest != train.dataset.digest
    half_train, same_val = dataset_inputs("digits", 0, {"train_fraction": 0.5}, ("train", "val"))
    assert half_train.dataset.digest != train.dataset.digest and same_val.dataset.digest == val.dataset.digest


def test_sql_path_logs_dataset_inputs_as_the_client_does(tracker):
    client = tracker.client
    exp = tracker.experiment_id("inputs")
    inputs = dataset_inputs("digits", 0, {}, ("train", "val"))
    reference = client.create_run(exp, run_name="ref")
    client.log_inputs(reference.info.run_id, datasets=inputs)
    ours = tracker.start_run(exp, "ours", TAGS)
    ours.log_inputs(inputs)
    ours.finish("FINISHED", background=True)
    WRITER.drain()
    assert len(_inputs(client, ours.run_id)) == 2
    assert _inputs(client, ours.run_id) == _inputs(client, reference.info.run_id)
    again = tracker.start_run(exp, "again", TAGS)  # a second run and a repeated log share the rows
    again.log_inputs(inputs)
    again.flush()
    again.log_inputs(inputs[:1])
    again.finish("FINISHED")
    assert _inputs(client, again.run_id) == _inputs(client, reference.info.run_id)
    with tracker.sql.engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT COUNT(*) FROM datasets")).scalar() == 2
        assert conn.execute(sqlalchemy.text("SELECT COUNT(*) FROM inputs")).scalar() == 3 * 2
    # MLflow's search joins the same tables
    found = client.search_runs([exp], "datasets.context = 'val'")
    assert {r.info.run_id for r in found} == {reference.info.run_id, ours.run_id, again.run_id}
    assert not client.search_runs([exp], "datasets.context = 'test'")

