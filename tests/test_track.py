"""The job's MLflow lifecycle (record.job_run) against a real SQLite store: every way out of the block
ends the run (FINISHED, FAILED with the reason, KILLED), never RUNNING; tracking off records nothing."""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sweep import record
from sweep.config import TrackingConf


@pytest.fixture
def tracking(tmp_path):
    return TrackingConf(
        uri=f"sqlite:///{tmp_path}/mlflow.db",
        artifact_location=str(tmp_path / "artifacts"),
        experiment="lifecycle",
        optuna_storage=None,
    )


def _run(tracking, run: record.Run):
    return MlflowClient(tracking_uri=tracking.uri).get_run(run.id)


def test_tracking_off_is_a_no_op(tmp_path, tracking):
    tracking.enabled = False
    with record.job_run(tracking, "off", {"job_num": 0}) as run:
        run.log_params({"a": "1"})
        run.log_metrics({"val_acc": 0.5}, step=1)
        run.log_text("x: 1\n", "config.yaml")
        run.set_tags({"k": "v"})
        run.fail("Diverged: nan", diverged="true")
        with run.timed("train_seconds"):
            pass
    assert run.id is None and run.client is None
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "artifacts").exists()
    with pytest.raises(ValueError, match="boom"):  # exceptions pass through untouched
        with record.job_run(tracking, "off", {}):
            raise ValueError("boom")


def test_finished_run_keeps_what_was_written(tracking):
    with record.job_run(tracking, "p=0.30", {"job_num": 3, "empty": None}) as run:
        assert _run(tracking, run).info.status == "RUNNING"
        run.log_params({"drop_prob": "0.3"})
        run.log_text("drop_prob: 0.3\n", "config.yaml")
        with run.timed("train_seconds"):
            run.log_metrics({"val_acc": 0.25}, step=1)
            run.log_metrics({"val_acc": 0.5}, step=2)
    r = _run(tracking, run)
    assert r.info.status == "FINISHED" and r.info.run_name == "p=0.30"
    assert r.data.params == {"drop_prob": "0.3"} and r.data.metrics["val_acc"] == 0.5
    assert r.data.metrics["train_seconds"] >= 0
    assert r.data.tags["job_num"] == "3" and "empty" not in r.data.tags and "error" not in r.data.tags
    hist = MlflowClient(tracking_uri=tracking.uri).get_metric_history(run.id, "val_acc")
    assert [(m.step, m.value) for m in hist] == [(1, 0.25), (2, 0.5)]


def test_exception_inside_ends_failed_with_the_error_tag(tracking):
    with pytest.raises(ValueError, match="boom"):
        with record.job_run(tracking, "raises", {}) as run:
            with run.timed("train_seconds"):
                raise ValueError("boom at epoch 2")
    r = _run(tracking, run)
    assert r.info.status == "FAILED" and r.data.tags["error"] == "ValueError: boom at epoch 2"
    assert "train_seconds" in r.data.metrics  # the time is recorded for a failed run too


def test_a_failing_write_after_start_ends_failed_not_running(tracking):
    with pytest.raises(MlflowException):
        with record.job_run(tracking, "bad write", {}) as run:
            run.log_params({"lr": "0.1"})
            run.log_params({"lr": "0.2"})  # MLflow refuses to change a logged param
    r = _run(tracking, run)
    assert r.info.status == "FAILED" and r.data.tags["error"].startswith("MlflowException: ")
    assert r.data.params == {"lr": "0.1"}


def test_a_last_metric_that_cannot_be_written_still_ends_the_run(tracking):
    with pytest.raises(MlflowException):
        with record.job_run(tracking, "bad last metric", {}) as run:
            with run.timed("train seconds!"):  # '!' is not allowed in a metric name: the store refuses it
                run.log_metrics({"val_acc": 0.5}, step=1)
    r = _run(tracking, run)
    assert r.info.status == "FAILED" and "train seconds!" in r.data.tags["error"]


def test_the_first_error_wins_over_a_failing_timing_write(tracking):
    with pytest.raises(RuntimeError, match="out of memory"):
        with record.job_run(tracking, "two failures", {}) as run:
            with run.timed("train seconds!"):
                raise RuntimeError("out of memory")
    r = _run(tracking, run)
    assert r.info.status == "FAILED" and r.data.tags["error"] == "RuntimeError: out of memory"


def test_keyboard_interrupt_ends_killed(tracking):
    with pytest.raises(KeyboardInterrupt):
        with record.job_run(tracking, "ctrl-c", {}) as run:
            raise KeyboardInterrupt
    r = _run(tracking, run)
    assert r.info.status == "KILLED" and "error" not in r.data.tags


def test_fail_ends_failed_without_raising(tracking):
    with record.job_run(tracking, "diverged", {}) as run:
        run.fail("Diverged: training loss became nan in epoch 1", diverged="true")
    r = _run(tracking, run)
    assert r.info.status == "FAILED"
    assert r.data.tags["error"] == "Diverged: training loss became nan in epoch 1" and r.data.tags["diverged"] == "true"


def test_child_of_the_parent_named_in_the_sweep_folder(tracking, tmp_path):
    client, exp_id = record.connect(tracking)
    parent = record.start_run(client, exp_id, "sweep s1", {"sweep_role": "parent"}).info.run_id
    record.write_parent(tmp_path / "sweep", parent, "s1")
    with record.job_run(tracking, "child", {"job_num": 0}, sweep_dir=tmp_path / "sweep") as run:
        pass
    tags = _run(tracking, run).data.tags
    assert tags["mlflow.parentRunId"] == parent and tags["sweep_id"] == "s1"
    tracking.sweep_id = "shared-7"  # an explicit id wins over the parent's
    with record.job_run(tracking, "child2", {}, sweep_dir=tmp_path / "sweep") as run:
        pass
    assert _run(tracking, run).data.tags["sweep_id"] == "shared-7"
