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

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    for k in ("HYDRA_FULL_ERROR", "DROPOUT_DEBUG", "MLFLOW_TRACKING_URI", "OPTUNA_STORAGE"):
        env.pop(k, None)
    return env


def _start(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as f:  # a file, not a pipe: a full pipe would stall the child
        return subprocess.Popen([sys.executable, str(ROOT / "sweep" / "run.py"), *args], cwd=ROOT, env=_env(),
                                stdout=f, stderr=subprocess.STDOUT)


def _overrides(tiny_root: Path, out: Path, uri: str, epochs: int = 1) -> list[str]:
    return [*(a for a in tiny_overrides(tiny_root, out, epochs) if not a.startswith("tracking.uri=")),
            f"tracking.uri={uri}"]


def _runs(uri: str, experiment: str = "dropout"):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return client, ([] if exp is None else client.search_runs([exp.experiment_id], max_results=1000,
                                                              run_view_type=ViewType.ALL))


# ------------------------------------------------------------------ workers starting together on a new store
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
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
        procs.append((_start(["-m", *_overrides(tiny_root, out, uri), "tracking.sweep_id=L", *grid],
                             out / "worker.log"), out / "worker.log"))
    for p, _ in procs:
        p.wait(timeout=600)
    for p, log in procs:
        assert p.returncode == 0, log.read_text()[-3000:]
    _, runs = _runs(uri)
    parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    assert len(parents) == 1, [r.info.run_id for r in parents]
    kids = [r for r in runs if r.data.tags.get("sweep_role") != "parent"]
    assert len(kids) == 2 * workers
    assert {r.data.tags.get("mlflow.parentRunId") for r in kids} == {parents[0].info.run_id}
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert parents[0].data.tags["children"] == f"{2 * workers} finished / {2 * workers}"
