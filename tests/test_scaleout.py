"""Scale-out on real engines: a real PostgreSQL (tests/pg.py) for the Optuna study, a real `mlflow server`
(tests/mlflow_server.py, PostgreSQL backend store, artifacts proxied into a temporary folder) for
tracking, selected by `tracking=server` exactly as a team would (addresses in environment variables);
four worker processes on one study. Then Hydra's submitit launcher (the SLURM path) run locally.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from helpers.cli import ROOT, mlflow_runs, tiny_overrides
from helpers.mlflow_server import mlflow_server  # noqa: F401  (fixture)
from helpers.pg import postgres_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

WORKERS = 4
N_TRIALS = 8


def _data_overrides(tiny_root: Path, out: Path, epochs: int) -> list[str]:
    """The tiny-data overrides without the local store: tracking=server decides where runs go."""
    return [a for a in tiny_overrides(tiny_root, out, epochs) if not a.startswith("tracking.")]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true", **extra}
    for k in ("HYDRA_FULL_ERROR", "DROPOUT_DEBUG", "MLFLOW_TRACKING_URI", "OPTUNA_STORAGE"):
        if k not in extra:
            env.pop(k, None)
    return env


def _children(client: MlflowClient, exp_id: str, parent_id: str):
    return client.search_runs(
        [exp_id], f"tags.mlflow.parentRunId = '{parent_id}'", max_results=1000, run_view_type=ViewType.ALL
    )


def test_four_workers_one_study_one_parent_through_an_mlflow_server(
    tiny_root, tmp_path, postgres_server, mlflow_server
):
    sweep_id = study_name = "team-search"
    experiment = "scaleout"
    db = postgres_server.create_database()
    # the documented setup: no password in any URL (libpq would read PGPASSWORD / ~/.pgpass; this test
    # server trusts loopback), plain postgresql:// (psycopg 3)
    storage = f"postgresql://postgres@127.0.0.1:{postgres_server.port}/{db}"
    env = _env(MLFLOW_TRACKING_URI=mlflow_server.url, OPTUNA_STORAGE=storage)
    procs, logs = [], []
    started = time.time()
    for w in range(WORKERS):
        out = tmp_path / f"w{w}"
        out.mkdir()
        args = [
            sys.executable,
            str(ROOT / "sweep" / "run.py"),
            "-m",
            *_data_overrides(tiny_root, out, epochs=1),
            # one option moves both stores: hydra.sweeper.storage defaults to tracking.optuna_storage
            "tracking=server",
            f"tracking.experiment={experiment}",
            f"tracking.sweep_id={sweep_id}",
            "+search=dropout",
            f"hydra.sweeper.study_name={study_name}",
            f"hydra.sweeper.n_trials={N_TRIALS}",
            "hydra.sweeper.pruner=none",
        ]
        logs.append(out / "worker.log")
        with open(logs[-1], "w") as f:
            procs.append(subprocess.Popen(args, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT))
    try:
        for p in procs:
            p.wait(timeout=900)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(30)
    elapsed = time.time() - started
    for p, log in zip(procs, logs):
        assert p.returncode == 0, f"{log}:\n" + log.read_text()[-4000:] + "\nserver:\n" + mlflow_server.tail(2000)

    # Optuna: every trial number once, the total right, the fixed points of +search=dropout run once each
    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(N_TRIALS)), [(t.number, t.state) for t in trials]
    assert [t.state.name for t in trials] == ["COMPLETE"] * N_TRIALS
    for fixed in (
        {"drop_prob": 0.3, "input_drop_prob": 0.0},
        {"drop_prob": 0.0, "input_drop_prob": 0.0},
        {"drop_prob": 0.5, "input_drop_prob": 0.2},
    ):
        assert sum(t.params == fixed for t in trials) == 1, fixed

    # MLflow, read through the server: one parent (none created and deleted either: the lock held)
    client = MlflowClient(tracking_uri=mlflow_server.url)
    exp = client.get_experiment_by_name(experiment)
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # the server's artifact root, not a local path
    runs = client.search_runs([exp.experiment_id], max_results=1000, run_view_type=ViewType.ALL)
    parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    assert len(parents) == 1, [(r.info.run_id, r.info.lifecycle_stage) for r in parents]
    parent = client.get_run(parents[0].info.run_id)
    assert parent.data.tags["sweep_id"] == sweep_id and parent.info.lifecycle_stage == "active"

    # every trial's run exactly once, under that parent, finished, with the trial's value
    kids = _children(client, exp.experiment_id, parent.info.run_id)
    assert len(kids) == len(runs) - 1  # nothing outside the parent
    by_trial: dict[int, list] = {}
    for r in kids:
        assert r.data.tags["optuna_study"] == study_name and r.data.tags["sweep_id"] == sweep_id
        by_trial.setdefault(int(r.data.tags["optuna_trial"]), []).append(r)
    assert sorted(by_trial) == list(range(N_TRIALS))
    assert all(len(v) == 1 for v in by_trial.values()), {k: len(v) for k, v in by_trial.items()}
    for n, (r,) in by_trial.items():
        assert r.info.status == "FINISHED" and r.info.lifecycle_stage == "active"
        assert r.data.tags["optuna_state"] == "COMPLETE"
        assert r.data.metrics["val_acc"] == pytest.approx(trials[n].value)
    assert len({r.data.tags["pid"] for r in kids}) >= 2  # the workers really shared the study

    # the totals on the parent: left FINISHED by the last worker to end, with the whole sweep in its summary
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["children"] == f"{N_TRIALS} finished / {N_TRIALS}"
    assert parent.data.metrics["study_complete"] == N_TRIALS and parent.data.metrics["study_failed"] == 0
    assert parent.data.metrics["best_value"] == pytest.approx(study.best_value)
    assert parent.data.tags["best_trial"] == str(study.best_trial.number)
    rows = list(csv.DictReader(io.StringIO(_artifact_text(client, parent.info.run_id, "sweep_results.csv"))))
    assert sorted(r["run_id"] for r in rows) == sorted(r.info.run_id for r in kids)
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
        "sweep_results.csv",
        "gap_vs_dropout.png",
        "optimization_results.yaml",
        "study_trials.csv",
    }
    # artifacts went through the server into its --artifacts-destination, not into the workers' folders
    assert list(mlflow_server.artifacts.rglob("sweep_results.csv"))
    assert not [p for p in tmp_path.rglob("mlartifacts")]
    print(f"{WORKERS} workers, {N_TRIALS} trials: {elapsed:.0f} s")


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    import sweep.config  # noqa: F401  (the schema and the ${root:} resolver)

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("store", ["server", "sqlite"])
def test_workers_starting_in_the_same_instant_create_one_parent(store, tmp_path, monkeypatch, request):
    """The multirun callback of 8 workers, released together by a barrier (threads: each has its own
    MLflow client and its own database connection for the lock): exactly one parent, shared by all."""
    import threading

    from omegaconf import OmegaConf

    from sweep import parent as callbacks

    n = 8
    experiment = f"race-{store}"
    if store == "server":  # MLflow over HTTP: the lock is taken in the Optuna storage (PostgreSQL)
        pg = request.getfixturevalue("postgres_server")
        server = request.getfixturevalue("mlflow_server")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        monkeypatch.setenv("OPTUNA_STORAGE", pg.url(pg.create_database(), password=False))
        base = ["tracking=server"]
        uri = server.url
    else:  # MLflow in a SQLite file: an flock beside it
        uri = f"sqlite:///{tmp_path}/mlflow.db"
        base = [f"tracking.uri={uri}", f"tracking.artifact_location={tmp_path}/mlartifacts"]
    cfg = _compose(
        [*base, f"tracking.experiment={experiment}", "tracking.sweep_id=same-instant", f"hydra.sweep.dir={tmp_path}/w"]
    )
    MlflowClient(tracking_uri=uri).create_experiment(experiment)  # (a fresh SQLite store migrates once)
    barrier, cbs, errors = threading.Barrier(n), [], []

    def worker(i: int) -> None:
        c = OmegaConf.create(OmegaConf.to_container(cfg))  # resolved lazily, like Hydra's own copy
        c.hydra.sweep.dir = f"{tmp_path}/w{i}"
        cb = callbacks.MlflowSweepCallback()
        cbs.append(cb)
        try:
            barrier.wait(60)
            cb.on_multirun_start(c)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    ids = {cb.parent_id for cb in cbs}
    for cb in cbs:  # close them (all sharing one parent) so no exit hook is left behind
        if cb in callbacks._OPEN:
            callbacks._OPEN.remove(cb)
        cb._close("FINISHED")
    assert not errors, errors
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    parents = client.search_runs([exp.experiment_id], "tags.sweep_role = 'parent'", run_view_type=ViewType.ALL)
    assert len(parents) == 1 and ids == {parents[0].info.run_id}, (len(parents), ids)
    assert parents[0].info.status == "FINISHED"
    for i in range(n):  # where each worker's jobs find it
        assert f'"run_id": "{parents[0].info.run_id}"' in (tmp_path / f"w{i}" / "mlflow_parent.json").read_text()


def _artifact_text(client: MlflowClient, run_id: str, path: str) -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return Path(client.download_artifacts(run_id, path, d)).read_text()


def test_submitit_local_launcher_runs_the_sweep_in_separate_jobs(cli):
    """hydra/launcher=submitit_local: the same code path as submitit_slurm, minus the cluster."""
    res = cli(
        "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "drop_prob=0,0.5", epochs=1, timeout=600
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    client, runs = mlflow_runs(cli.out)
    parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.tags["launcher"] == "LocalLauncher"  # hydra_plugins.hydra_submitit_launcher...LocalLauncher
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(kids) == 2 == len(runs) - 1
    assert sorted(r.data.params["drop_prob"] for r in kids) == ["0.0", "0.5"]
    assert all(r.info.status == "FINISHED" and "test_acc" in r.data.metrics for r in kids)
    # each job ran in its own submitit process, not in the sweeping one
    assert len({r.data.tags["pid"] for r in kids} | {parent.data.tags["pid"]}) == 3
    assert parent.data.tags["children"] == "2 finished / 2"
    sub = cli.out / "sweep" / ".submitit"
    assert len([p for p in sub.glob("*") if p.name.isdigit()]) == 2  # submitit's job folders (logs, results)
