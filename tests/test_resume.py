"""Grids resume: rerunning a killed grid with the same tracking.sweep_id trains only what is missing."""

from __future__ import annotations

import re
import signal

import pytest

from helpers.cli import mlflow_runs
from helpers.proc import CATCHABLE_EPOCHS, epoch_logged, start, wait_for
from sweep.config import PROJECT_ROOT, validate


def _typed(*overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return validate(compose("config", overrides=list(overrides)))


def test_config_hash_covers_what_is_trained_and_nothing_else():
    from sweep.config import config_hash

    base = config_hash(_typed())
    assert config_hash(_typed()) == base  # stable
    for same in (
        "tracking.sweep_id=x",
        "tracking.uri=sqlite:////elsewhere.db",
        "trainer.progress=false",
        "optuna.trial_number=3",
        "data.download=false",
        "data.verify=false",
        "trainer.cpu_matmul=blas",
    ):
        assert config_hash(_typed(same)) == base, same
    for other in (
        "seed=1",
        "drop_prob=0.2",
        "optimizer.lr=0.01",
        "trainer.epochs=3",
        "layer_drop_probs.0=0.1",
        "data.val_size=100",
        "objective=test_acc",
    ):
        assert config_hash(_typed(other)) != base, other


# the 4th point is the long one
GRID = ["tracking.sweep_id=grid-1", "drop_prob=0.1", f"trainer.epochs=1,2,3,{CATCHABLE_EPOCHS}"]


@pytest.mark.slow
def test_kill_9_a_grid_then_the_same_command_trains_only_what_is_missing(tiny_root, tmp_path):
    def finished():
        if not epoch_logged(tmp_path):
            return []
        try:
            _, runs = mlflow_runs(tmp_path)
        except Exception:  # noqa: BLE001 - the store may not exist yet
            return []
        kids = [r for r in runs if r.data.tags.get("sweep_role") != "parent"]
        done = [r for r in kids if r.info.status == "FINISHED"]
        return done if len(done) == 3 and any("test_acc" in r.data.metrics for r in kids if r not in done) else []

    proc = start(GRID, tmp_path, tiny_root, epochs=1)
    try:
        done = wait_for(finished, tmp_path, what="3 finished points and an epoch of the 4th")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    done_ids = {r.info.run_id for r in done}

    again = start(GRID, tmp_path, tiny_root, epochs=1, log_name="rerun.log")
    assert again.wait(timeout=600) == 0, (tmp_path / "rerun.log").read_text()[-3000:]
    log = (tmp_path / "rerun.log").read_text()
    reused = re.findall(r"reused run ([0-9a-f]{32}) \(FINISHED in sweep grid-1", log)
    assert sorted(reused) == sorted(done_ids), log[-3000:]  # one line per reused point, naming its run

    _, runs = mlflow_runs(tmp_path)
    parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    kids = [r for r in runs if r.data.tags.get("sweep_role") != "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # the sweep's one parent
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in kids)
    assert len(kids) == 5  # 3 reused + the killed 4th (KILLED at start-up) + the 4th trained again
    by_status = sorted(r.info.status for r in kids)
    assert by_status == ["FINISHED"] * 4 + ["KILLED"]
    new = [r for r in kids if r.info.run_id not in done_ids and r.info.status == "FINISHED"]
    assert len(new) == 1 and new[0].data.params["trainer.epochs"] == str(CATCHABLE_EPOCHS)
    hashes = {r.data.tags["config_hash"] for r in kids if r.info.status == "FINISHED"}
    assert len(hashes) == 4
    assert (
        parents[0].data.tags["children"] == "4 finished, 0 pruned, 0 failed, 1 killed / 5"
    )  # the summary covers every point


@pytest.mark.slow
def test_two_copies_of_one_resumed_grid_started_together_train_each_point_once(tiny_root, tmp_path):
    """Two copies of the same command with one tracking.sweep_id, started together: a point is claimed under
    the sweep's lock before its run starts, so the second copy finds it RUNNING, waits, and reuses it."""
    import time

    from helpers.proc import end, init_store

    init_store(tmp_path)
    grid = ["tracking.sweep_id=twin", "drop_prob=0,0.3,0.5"]
    first = start([*grid, f"hydra.sweep.dir={tmp_path}/a"], tmp_path, tiny_root, epochs=30, log_name="a.log")
    time.sleep(0.5)
    second = start([*grid, f"hydra.sweep.dir={tmp_path}/b"], tmp_path, tiny_root, epochs=30, log_name="b.log")
    assert end(first, 300) == 0 and end(second, 300) == 0, (tmp_path / "b.log").read_text()[-3000:]
    _, runs = mlflow_runs(tmp_path)
    kids = [r for r in runs if r.data.tags.get("sweep_role") != "parent"]
    assert sorted(r.data.params["drop_prob"] for r in kids) == ["0.0", "0.3", "0.5"]  # no point trained twice
    assert {r.info.status for r in runs} == {"FINISHED"}
    logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    assert logs.count("not training it again") == 3
