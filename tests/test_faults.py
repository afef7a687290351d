"""Faults: Ctrl-C and kill -9 in the middle of a run leave nothing RUNNING and lose nothing done."""

import os
import signal
import subprocess
import sys
import time

import pytest

from helpers.cli import ROOT, mlflow_runs, tiny_overrides
from helpers.proc import LONG_EPOCHS

pytestmark = pytest.mark.slow


def _start(args, out, tiny_root, epochs):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = open(out / "cli.log", "w")  # a file, not a pipe: a full pipe would stall the child
    return subprocess.Popen(
        [sys.executable, str(ROOT / "sweep" / "run.py"), "-m", *tiny_overrides(tiny_root, out, epochs), *args],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for_epoch(out, n_runs_with_metrics=1, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        # open the store only once the child has created it (parent run written): two processes
        # initialising one fresh sqlite store at the same moment can break the child's migration
        if (out / "sweep" / "mlflow_parent.json").exists():
            try:
                _, runs = mlflow_runs(out)
            except Exception:  # the store may be mid-migration
                runs = []
            if sum("test_acc" in r.data.metrics for r in runs) >= n_runs_with_metrics:
                return
        time.sleep(0.5)
    raise AssertionError("no epoch was recorded in time:\n" + (out / "cli.log").read_text()[-3000:])


def _signal_after_first_epoch(sig, tmp_path, tiny_root) -> subprocess.Popen:
    """Start a long 2-point grid, send `sig` once an epoch is recorded, and wait for the process to end."""
    proc = _start(["drop_prob=0.1,0.2"], tmp_path, tiny_root, epochs=LONG_EPOCHS)
    try:
        _wait_for_epoch(tmp_path)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    return proc


def test_ctrl_c_ends_current_run_and_parent_killed(tiny_root, tmp_path):
    proc = _signal_after_first_epoch(signal.SIGINT, tmp_path, tiny_root)
    assert proc.returncode == 130, (tmp_path / "cli.log").read_text()[-2000:]
    _, runs = mlflow_runs(tmp_path)
    status = {r.data.tags.get("sweep_role", "child"): r.info.status for r in runs}
    assert status == {"parent": "KILLED", "child": "KILLED"}, status


def test_kill_9_then_next_start_closes_the_orphaned_runs(tiny_root, tmp_path, cli):
    _signal_after_first_epoch(signal.SIGKILL, tmp_path, tiny_root)
    _, runs = mlflow_runs(tmp_path)
    assert {r.info.status for r in runs} == {"RUNNING"}
    killed_ids = {r.info.run_id for r in runs}
    # any later start-up against the same store notices the dead process and closes its runs
    res = subprocess.run(
        [sys.executable, str(ROOT / "sweep" / "run.py"), *tiny_overrides(tiny_root, tmp_path, 1)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    _, runs = mlflow_runs(tmp_path)
    by_id = {r.info.run_id: r for r in runs}
    for rid in killed_ids:
        assert by_id[rid].info.status == "KILLED"
        assert "died" in by_id[rid].data.tags["error"]
    # the epoch recorded before the kill is still there
    assert any("test_acc" in by_id[rid].data.metrics for rid in killed_ids)


@pytest.mark.slow
def test_a_store_deleted_during_a_grid_is_said_not_summarised(tiny_root, tmp_path):
    """`rm -rf runs/` while a grid runs: the sweep used to end exit 0 with '3 runs: 3 finished' about a store that
    was gone. It now says the store was deleted (and made anew by the next job) and exits 1."""
    from helpers.proc import CATCHABLE_EPOCHS, end, start, wait_for_epoch

    proc = start(["drop_prob=0,0.3,0.5"], tmp_path, tiny_root, epochs=CATCHABLE_EPOCHS)
    wait_for_epoch(tmp_path, ready=tmp_path / "sweep" / "mlflow_parent.json")
    for f in tmp_path.glob("mlflow.db*"):
        f.unlink()
    code = end(proc, timeout=300)
    log = (tmp_path / "cli.log").read_text()
    assert code == 1, log[-3000:]
    assert "error: the MLflow store" in log and "was deleted" in log and "run the command again" in log
    assert "3 finished" not in log
