"""Stale-run clean-up cannot be fooled by a reused PID: a run is its process's PID plus that process's start
time and the boot id (sweep/util/procid.py); runs of other hosts are never touched; old runs with only a pid
tag keep the PID-only rule. Against a real SQLite MLflow store, and once through the real CLI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from helpers.cli import ROOT, mlflow_runs, tiny_overrides
from sweep import record
from sweep.util import procid

HOST = socket.gethostname()
needs_proc = pytest.mark.skipif(
    procid.start_time(os.getpid()) is None or procid.boot_id() is None,
    reason="no /proc: start times and boot id cannot be read here",
)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_reads_this_process_start_time_and_the_boot_id():
    if not Path("/proc/self/stat").exists():
        pytest.skip("no /proc")
    me = procid.tags()
    assert me["pid"] == str(os.getpid())
    # field 22 of /proc/<pid>/stat, by hand: the name in parentheses may hold spaces
    stat = Path(f"/proc/{os.getpid()}/stat").read_text()
    assert me["pid_start"] == stat.rsplit(")", 1)[1].split()[22 - 3]
    assert int(me["pid_start"]) > 0
    assert me["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert procid.tags(_dead_pid()).get("pid_start") is None  # a dead process has no start time


@needs_proc
def test_close_stale_runs_sees_through_a_reused_pid_and_leaves_live_and_foreign_runs(tmp_path):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("stale", artifact_location=(tmp_path / "art").as_uri())
    me = procid.tags()
    dead = str(_dead_pid())
    init_start = procid.start_time(1)
    cases = {  # name: (host, identity tags, expected status after clean-up)
        "reused pid, other start time": (HOST, {**me, "pid_start": str(int(me["pid_start"]) + 1)}, "KILLED"),
        "reused pid, other boot": (HOST, {**me, "boot_id": "00000000-0000-0000-0000-000000000000"}, "KILLED"),
        "pid 1 of an earlier container": (
            HOST,
            {"pid": "1", "pid_start": str(int(init_start or 0) + 7), "boot_id": me["boot_id"]},
            "KILLED",
        ),
        "this very process": (HOST, me, "RUNNING"),
        "dead pid": (HOST, {**me, "pid": dead}, "KILLED"),
        "old run: live pid only": (HOST, {"pid": me["pid"]}, "RUNNING"),
        "old run: dead pid only": (HOST, {"pid": dead}, "KILLED"),
        "another host, dead pid": ("elsewhere-" + HOST, {**me, "pid": dead}, "RUNNING"),
        "another host, reused pid": ("elsewhere-" + HOST, {**me, "pid_start": "1"}, "RUNNING"),
        "no pid tag": (HOST, {}, "RUNNING"),
    }
    ids = {}
    for name, (host, ident, _) in cases.items():
        ids[name] = client.create_run(exp, run_name=name, tags={"host": host, **ident}).info.run_id
    closed = record.close_stale_runs(client, exp)
    got = {name: client.get_run(ids[name]).info.status for name in cases}
    assert got == {name: want for name, (_, _, want) in cases.items()}
    assert sorted(closed) == sorted(ids[n] for n, (_, _, want) in cases.items() if want == "KILLED")
    assert "died" in client.get_run(ids["reused pid, other start time"]).data.tags["error"]


@needs_proc
def test_start_run_tags_the_process_identity(tmp_path):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("ident", artifact_location=(tmp_path / "art").as_uri())
    tags = record.start_run(client, exp, "r", {"a": "b"}).data.tags
    assert {k: tags[k] for k in ("host", "pid", "pid_start", "boot_id")} == {"host": HOST, **procid.tags()}


@needs_proc
@pytest.mark.slow
def test_cli_start_up_closes_a_run_whose_pid_now_belongs_to_another_process(tiny_root, tmp_path):
    """The container case: a run left RUNNING by a killed PID 1 (here: a PID that is alive again, this test's
    own, but started at another time). Any later start-up against the store ends it KILLED; a RUNNING run
    whose identity matches a live process (this test) is left alone."""
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("dropout", artifact_location=(tmp_path / "mlartifacts").resolve().as_uri())
    me = procid.tags()
    orphan = client.create_run(
        exp, run_name="orphan", tags={"host": HOST, **me, "pid_start": str(int(me["pid_start"]) - 1)}
    ).info.run_id
    live = client.create_run(exp, run_name="live", tags={"host": HOST, **me}).info.run_id
    res = subprocess.run(
        [sys.executable, str(ROOT / "sweep" / "run.py"), *tiny_overrides(tiny_root, tmp_path, 1)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    _, runs = mlflow_runs(tmp_path)
    by_name = {r.info.run_name: r for r in runs}
    assert client.get_run(orphan).info.status == "KILLED"
    assert client.get_run(live).info.status == "RUNNING"
    new = [r for name, r in by_name.items() if name not in ("orphan", "live")]
    assert [r.info.status for r in new] == ["FINISHED"]
    assert new[0].data.tags["pid_start"] and new[0].data.tags["boot_id"] == me["boot_id"]
