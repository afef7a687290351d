"""MLflow stores under load and faults, through the real CLI: workers creating a new store together, a
half-made or full store, an artifact folder that cannot be written, jobs dying before their run, Ctrl-C
during the summary and a worker stopped while it holds a lock (issue 11)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from helpers.cli import ROOT, tiny_overrides
from helpers.pg import postgres_server  # noqa: F401  (fixture)
from helpers.proc import CATCHABLE_EPOCHS, LONG_EPOCHS

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    for k in ("HYDRA_FULL_ERROR", "DROPOUT_DEBUG", "MLFLOW_TRACKING_URI", "OPTUNA_STORAGE"):
        env.pop(k, None)
    return env


def _start(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as f:  # a file, not a pipe: a full pipe would stall the child
        return subprocess.Popen(
            [sys.executable, str(ROOT / "sweep" / "run.py"), *args],
            cwd=ROOT,
            env=_env(),
            stdout=f,
            stderr=subprocess.STDOUT,
        )


def _overrides(tiny_root: Path, out: Path, uri: str, epochs: int = 1) -> list[str]:
    return [
        *(a for a in tiny_overrides(tiny_root, out, epochs) if not a.startswith("tracking.uri=")),
        f"tracking.uri={uri}",
    ]


def _runs(uri: str, experiment: str = "dropout"):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return client, (
        [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000, run_view_type=ViewType.ALL)
    )


# ------------------------------------------------------------------ workers starting together on a new store
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def test_workers_started_together_on_a_new_store_share_one_parent(backend, tiny_root, tmp_path, request):
    """Four grid workers started in the same instant against a store that does not exist yet: the tables are
    created once, every run is the child of the one shared parent, every worker exits 0."""
    if backend == "sqlite":
        uri = f"sqlite:///{tmp_path}/store/m.db"
    else:
        pg = request.getfixturevalue("postgres_server")
        uri = pg.url(pg.create_database())
    workers, grid = 4, ["drop_prob=0,0.5"]
    procs = []
    for w in range(workers):
        out = tmp_path / f"w{w}"
        out.mkdir()
        procs.append(
            (
                _start(["-m", *_overrides(tiny_root, out, uri), "tracking.sweep_id=L", *grid], out / "worker.log"),
                out / "worker.log",
            )
        )
    for p, _ in procs:
        p.wait(timeout=600)
    for p, log in procs:
        assert p.returncode == 0, log.read_text()[-3000:]
    _, runs = _runs(uri)
    parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    assert len(parents) == 1, [r.info.run_id for r in parents]
    kids = [r for r in runs if r.data.tags.get("sweep_role") != "parent"]
    # each point ran at least once (a worker reuses a point another one already FINISHED: sweep/record/resume.py)
    assert {float(r.data.params["drop_prob"]) for r in kids} == {0.0, 0.5} and len(kids) <= 2 * workers
    assert {r.data.tags.get("mlflow.parentRunId") for r in kids} == {parents[0].info.run_id}
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert parents[0].data.tags["children"] == f"{len(kids)} finished / {len(kids)}"


# ------------------------------------------------------------------------------------------ a small disk
@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root only) and a way to fill it up to `free` bytes; unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)

    def fill(free: int = 0) -> Path:
        ballast = disk / "ballast"
        left = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize - free
        with open(ballast, "ab") as f:
            try:
                while left > 0:
                    left -= f.write(b"\0" * min(left, 1 << 16))
                f.flush()
            except OSError:  # full already
                pass
        return ballast

    small_disk_fill = fill
    yield disk, small_disk_fill
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _one_error_line(text: str) -> list[str]:
    return [x for x in text.splitlines() if x.startswith("error:")]


def test_a_new_store_on_a_full_disk_gives_one_line_and_works_once_space_is_freed(tiny_root, tmp_path, small_disk):
    """Creating the MLflow tables hits a full disk: one line, and no half-made store left behind (MLflow alone
    leaves one, and every later run then fails `duplicate column name`)."""
    disk, fill = small_disk
    uri = f"sqlite:///{disk}/m.db"
    ballast = fill(free=300_000)  # room for the pre-flight probe, not for MLflow's ~1 MB of tables
    res = subprocess.run(
        [sys.executable, str(ROOT / "sweep" / "run.py"), *_overrides(tiny_root, tmp_path, uri)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert any("could not create the MLflow tables" in x for x in _one_error_line(res.stderr)), res.stderr[-3000:]
    assert not (disk / "m.db").exists() or (disk / "m.db").stat().st_size == 0
    assert [p.name for p in disk.iterdir()] == ["ballast"] or not [p for p in disk.iterdir() if ".new" in p.name]
    ballast.unlink()
    res = subprocess.run(
        [sys.executable, str(ROOT / "sweep" / "run.py"), *_overrides(tiny_root, tmp_path, uri)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    _, runs = _runs(uri)
    assert [r.info.status for r in runs] == ["FINISHED"]


def test_a_half_made_store_is_refused_with_one_line_and_left_untouched(tiny_root, tmp_path, small_disk):
    """A store whose set-up MLflow itself left half-done (full disk): the sweep stops before any job, says why
    in one line, and does not touch the file."""
    import hashlib

    disk, fill = small_disk
    ballast = fill(free=100_000)  # MLflow gets a third of the way through its ~1 MB of tables
    made = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from mlflow.tracking import MlflowClient; "
            "MlflowClient(tracking_uri=sys.argv[1]).search_experiments(max_results=1)",
            f"sqlite:///{disk}/m.db",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode != 0  # MLflow ran out of space half way
    ballast.unlink()
    tables = {r[0] for r in sqlite3.connect(disk / "m.db").execute("select name from sqlite_master where type='table'")}
    assert "experiments" in tables and "webhooks" not in tables, tables  # really half-made
    digest = hashlib.sha256((disk / "m.db").read_bytes()).hexdigest()
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "sweep" / "run.py"),
            "-m",
            *_overrides(tiny_root, tmp_path, f"sqlite:///{disk}/m.db"),
            "drop_prob=0,0.5",
        ],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode != 0
    lines = _one_error_line(res.stderr)
    assert len(lines) == 1 and "half-made MLflow schema" in lines[0], res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert hashlib.sha256((disk / "m.db").read_bytes()).hexdigest() == digest
    assert not list((tmp_path / "sweep").glob("*/*.log"))  # no job started


def test_a_full_sweep_folder_keeps_its_results_file_and_mlflow_gets_the_summary(tiny_root, tmp_path, small_disk):
    """The sweep folder fills up while a sweep runs: the results file written by the previous sweep there stays
    whole (never a 0-byte file), and the summary of what finished still reaches the parent run."""
    disk, fill = small_disk

    def args(epochs: int) -> list[str]:
        return [
            *(a for a in tiny_overrides(tiny_root, tmp_path, epochs) if not a.startswith("hydra.sweep.dir=")),
            f"hydra.sweep.dir={disk}/sweep",
        ]

    first = subprocess.run(
        [sys.executable, str(ROOT / "sweep" / "run.py"), "-m", *args(1), "drop_prob=0"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    before = (disk / "sweep" / "sweep_results.csv").read_bytes()
    assert before
    proc = _start(["-m", *args(LONG_EPOCHS), "drop_prob=0.5"], tmp_path / "second.log")
    try:
        uri = f"sqlite:///{tmp_path}/mlflow.db"
        deadline = time.time() + 300
        while time.time() < deadline:
            runs = _runs(uri)[1]
            if any(
                "test_acc" in r.data.metrics
                and r.data.tags.get("sweep_role") != "parent"
                and r.data.params.get("drop_prob") == "0.5"
                for r in runs
            ):
                break
            time.sleep(0.5)
        fill(free=0)
        proc.send_signal(signal.SIGINT)  # end the long run now; the summary is written on the way out
        proc.wait(timeout=120)
    finally:
        proc.kill()
    log = (tmp_path / "second.log").read_text()
    assert (disk / "sweep" / "sweep_results.csv").read_bytes() == before, log[-3000:]
    assert not [p for p in (disk / "sweep").iterdir() if ".tmp" in p.name]
    client, runs = _runs(uri)
    parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    second = max(parents, key=lambda r: r.info.start_time)
    assert second.info.status == "KILLED"
    assert {a.path for a in client.list_artifacts(second.info.run_id)} >= {"sweep_results.csv", "gap_vs_dropout.png"}
    assert second.data.tags["children"].endswith("/ 1")
    assert "No space left on device" in second.data.tags.get("summary_error", ""), log[-3000:]
    assert "RUNNING" not in {r.info.status for r in runs}


# ------------------------------------------------------------------------------------ writes that fail
def _read_only(folder: Path) -> None:
    """Root ignores file modes: a read-only bind mount is what really refuses writes."""
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
    subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True)


@pytest.fixture
def unmount_after():
    mounted: list[Path] = []
    yield mounted
    for m in mounted:
        subprocess.run(["umount", "-l", str(m)], check=False)


def test_a_read_only_artifact_location_is_refused_before_any_run(tiny_root, tmp_path, unmount_after):
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    art = tmp_path / "mlartifacts"
    art.mkdir()
    _read_only(art)
    unmount_after.append(art)
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "sweep" / "run.py"),
            "-m",
            *tiny_overrides(tiny_root, tmp_path, 1),
            "drop_prob=0,0.5",
        ],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2, res.stderr[-3000:]
    assert res.stderr.strip().splitlines() == [x for x in _one_error_line(res.stderr)]
    assert "tracking.artifact_location" in res.stderr and "Read-only file system" in res.stderr
    assert _runs(f"sqlite:///{tmp_path}/mlflow.db")[1] == [] if (tmp_path / "mlflow.db").exists() else True


def test_an_artifact_location_that_turns_read_only_mid_sweep_ends_runs_failed_not_running(
    tiny_root, tmp_path, unmount_after
):
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = _start(["-m", *tiny_overrides(tiny_root, tmp_path, 30), "drop_prob=0,0.5"], tmp_path / "cli.log")
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not any("test_acc" in r.data.metrics for r in _runs(uri)[1]):
            time.sleep(0.5)
        _read_only(tmp_path / "mlartifacts")
        unmount_after.append(tmp_path / "mlartifacts")
        proc.wait(timeout=600)
    finally:
        proc.kill()
    _, runs = _runs(uri)
    kids = sorted((r for r in runs if r.data.tags.get("sweep_role") != "parent"), key=lambda r: r.info.start_time)
    assert [r.info.status for r in kids] == ["FINISHED", "FAILED"], (tmp_path / "cli.log").read_text()[-3000:]
    assert "Read-only file system" in kids[1].data.tags["error"]
    parent = next(r for r in runs if r.data.tags.get("sweep_role") == "parent")
    assert parent.info.status != "RUNNING" and "Read-only file system" in parent.data.tags["summary_error"]
    assert (tmp_path / "sweep" / "sweep_results.csv").exists()  # the sweep folder still got the summary


# ---------------------------------------------------------------------- a job that dies before its run
def test_a_job_that_runs_out_of_memory_building_its_model_still_has_a_failed_run(tiny_root, tmp_path):
    import resource

    def limit() -> None:  # `ulimit -v 6G`: a 784 x 2,000,000 first layer (6.3 GB) cannot be allocated
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "sweep" / "run.py"),
            "-m",
            *tiny_overrides(tiny_root, tmp_path, 1),
            "model.hidden_sizes=[8,8,8,8],[2000000,8,8,8]",
        ],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit,
    )
    assert res.returncode != 0  # the basic sweeper stops at a failed job
    _, runs = _runs(f"sqlite:///{tmp_path}/mlflow.db")
    parent = next(r for r in runs if r.data.tags.get("sweep_role") == "parent")
    kids = sorted((r for r in runs if r.data.tags.get("sweep_role") != "parent"), key=lambda r: r.info.start_time)
    assert [r.info.status for r in kids] == ["FINISHED", "FAILED"], res.stderr[-3000:]
    assert "can't allocate memory" in kids[1].data.tags["error"]
    assert {r.data.tags["mlflow.parentRunId"] for r in kids} == {parent.info.run_id}
    assert kids[1].data.tags["job_num"] == "1"
    assert kids[1].info.run_name == "p=0.30 in=0.00 seed=777" and kids[1].data.params["model.hidden_sizes"]
    assert parent.data.tags["children"].startswith("1 finished") and parent.data.tags["children"].endswith(
        "1 failed / 2"
    )


# ------------------------------------------------------------------------------ Ctrl-C during the summary
def test_ctrl_c_during_the_end_of_sweep_summary_ends_the_parent_killed(tiny_root, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = _start(["-m", *tiny_overrides(tiny_root, tmp_path, 1), "drop_prob=0,0.5"], tmp_path / "cli.log")
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:  # both children ended: the summary is under way
            kids = (
                [r for r in _runs(uri)[1] if r.data.tags.get("sweep_role") != "parent"]
                if (tmp_path / "sweep" / "mlflow_parent.json").exists()
                else []
            )
            if len(kids) == 2 and all(r.info.status == "FINISHED" for r in kids):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the sweep ended before the test could interrupt its summary"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        proc.kill()
    log = (tmp_path / "cli.log").read_text()
    assert proc.returncode == 130, log[-3000:]
    _, runs = _runs(uri)
    parent = next(r for r in runs if r.data.tags.get("sweep_role") == "parent")
    assert parent.info.status == "KILLED", log[-3000:]
    assert "recorded as KILLED" in log


# ---------------------------------------------------------------------- a stopped worker holding a lock
def test_a_stopped_worker_holding_the_parent_lock_is_waited_for_visibly_then_given_up_on(tiny_root, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from sweep.util.dblock import db_lock\n"
            "with db_lock(sys.argv[1], 'dropout/S'):\n print('held', flush=True); time.sleep(600)",
            uri,
        ],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        holder.send_signal(signal.SIGSTOP)  # the worker holding the lock is stopped (Ctrl-Z, a debugger)
        started = time.time()
        res = subprocess.run(
            [
                sys.executable,
                str(ROOT / "sweep" / "run.py"),
                "-m",
                *tiny_overrides(tiny_root, tmp_path, 1),
                "tracking.sweep_id=S",
                "drop_prob=0,0.5",
            ],
            cwd=ROOT,
            env={**_env(), "DROPOUT_LOCK_TIMEOUT": "20"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        elapsed = time.time() - started
    finally:
        holder.send_signal(signal.SIGCONT)
        holder.kill()
        holder.wait(30)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out[-3000:]
    assert "waiting for the lock 'dropout/S' (file " in out and ".lock)" in out, out[-3000:]
    lines = _one_error_line(res.stderr)
    assert len(lines) == 1 and "gave up after waiting 20 s for the lock 'dropout/S'" in lines[0], out[-3000:]
    assert elapsed < 120
    assert [r for r in _runs(uri)[1] if r.data.tags.get("sweep_role") != "parent"] == []


def test_a_disk_that_fills_mid_grid_gives_the_one_line_and_the_tracebacks_go_to_a_file(tiny_root, tmp_path, small_disk):
    """The SQLite store's disk fills while a grid trains: MLflow logs every failed call with its traceback, the
    jobs chain more. The console shows the one error line with the rerun command and the file the tracebacks
    went to (it used to be ~850 lines with ~37 tracebacks); DROPOUT_DEBUG=1 would print them."""
    import time

    disk, fill = small_disk
    uri = f"sqlite:///{disk}/m.db"
    log = tmp_path / "cli.log"
    env = {**_env(), "DROPOUT_TRACKING_WAIT_SECONDS": "5"}
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "sweep" / "run.py"),
                "-m",
                "drop_prob=0,0.3,0.5",
                *_overrides(tiny_root, tmp_path, uri, epochs=CATCHABLE_EPOCHS),
            ],
            cwd=ROOT,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        deadline = time.time() + 120
        while "epoch 2/" not in log.read_text() and time.time() < deadline:
            time.sleep(0.2)
        fill()
        assert proc.wait(timeout=300) == 1
    finally:
        proc.kill()
    out = log.read_text()
    shown = [x for x in out.splitlines() if "] - epoch " not in x]
    assert "Traceback" not in out and len(shown) <= 15, "\n".join(shown[-40:])
    (line,) = _one_error_line(out)
    assert "database or disk is full" in line and "rerun the same command" in line and "tracebacks: " in line
    details = Path(line.rsplit("tracebacks: ", 1)[1].strip())
    assert details.is_file() and "Traceback" in details.read_text()
    assert shown[-1] == line  # the last thing the user sees
