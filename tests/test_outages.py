"""Store outages (issue 11): the Optuna storage's database going away for a while must not kill a search.

The retry policy (sweep/search/retry.py) is tested with a fake clock; then the real CLI searches with
its study on a real PostgreSQL server that the test stops for a while (pg_ctl stop, then start on the
same port and data): the search rides it out, or stops with one line when the budget runs out."""

from __future__ import annotations

import os
import time

import optuna
import pytest
import sqlalchemy.exc as sa
from optuna.exceptions import StorageInternalError

from helpers.cli import mlflow_runs
from helpers.pg import PASSWORD, PostgresServer, require_bindir
from helpers.proc import LONG_EPOCHS, runs_with_metrics, start, wait_for
from sweep.search import retry


# ------------------------------------------------------------------------------------- the policy (fast)
class _Clock:
    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.sleeps.append(s)
        self.now += s


def _refused():
    return sa.OperationalError(
        "SELECT 1", {}, Exception('connection to server at "127.0.0.1", port 5 failed: Connection refused')
    )


def _flaky(fails: int, error=_refused):
    calls = []

    def fn(x):
        calls.append(x)
        if len(calls) <= fails:
            raise error()
        return x * 2

    return fn, calls


def test_transient_errors_are_connection_errors_only():
    assert retry.transient(_refused())
    assert retry.transient(sa.InterfaceError("x", {}, Exception("connection already closed")))
    assert retry.transient(sa.DisconnectionError("gone"))
    try:  # Optuna wraps a failed commit in StorageInternalError ("invalid data ... exceeding max length")
        try:
            raise _refused()
        except sa.OperationalError as e:
            raise StorageInternalError("An exception is raised during the commit.") from e
    except StorageInternalError as wrapped:
        assert retry.transient(wrapped)
    assert not retry.transient(StorageInternalError("no cause"))
    assert not retry.transient(sa.IntegrityError("INSERT", {}, Exception("duplicate key value")))
    assert not retry.transient(sa.OperationalError("x", {}, Exception("no such table: trials")))
    assert not retry.transient(ValueError("a bug"))


def test_a_short_outage_is_ridden_out_with_backoff():
    clock = _Clock()
    fn, calls = _flaky(fails=5)
    assert retry.call(fn, 21, seconds=60, sleep=clock.sleep, clock=clock) == 42
    assert len(calls) == 6
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 5.0]  # doubling, capped at 5 s


def test_the_budget_ends_with_one_line_naming_the_storage_without_its_password():
    clock = _Clock()
    fn, calls = _flaky(fails=10**6)
    url = f"postgresql+psycopg2://me:{PASSWORD}@db.example:5432/optuna"
    with pytest.raises(retry.StorageUnavailable) as e:
        retry.call(fn, 1, seconds=60, url=url, sleep=clock.sleep, clock=clock)
    msg = str(e.value)
    assert "\n" not in msg and PASSWORD not in msg
    assert msg.startswith("hydra.sweeper.storage=postgresql+psycopg2://me:") and "db.example:5432/optuna" in msg
    assert "did not answer for 60 s" in msg and "storage_retry_seconds=60" in msg and "Connection refused" in msg
    assert sum(clock.sleeps) == pytest.approx(60)  # waited the whole budget, not a second more
    assert len(calls) == 1 + len(clock.sleeps)


def test_other_errors_are_not_retried():
    clock = _Clock()
    fn, calls = _flaky(fails=1, error=lambda: sa.IntegrityError("INSERT", {}, Exception("duplicate key")))
    with pytest.raises(sa.IntegrityError):
        retry.call(fn, 1, seconds=60, sleep=clock.sleep, clock=clock)
    assert calls == [1] and clock.sleeps == []


def test_the_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(retry.ENV, raising=False)
    assert retry.budget() == 60
    retry.set_budget(7.5)
    assert retry.budget() == 7.5


def test_every_public_storage_method_retries(tmp_path, monkeypatch):
    """The storage the sweeper and its jobs open: one dropped connection costs a retry, not the search."""
    from sweep.search.trial import open_storage

    storage = open_storage(f"sqlite:///{tmp_path}/o.db")
    study = optuna.create_study(storage=storage, study_name="s")
    failures = {"left": 2}
    real = optuna.storages.RDBStorage.set_trial_intermediate_value

    def flaky(self, *args, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise _refused()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(optuna.storages.RDBStorage, "set_trial_intermediate_value", flaky)
    trial = study.ask()
    trial.report(0.5, step=1)
    assert failures["left"] == 0
    assert study.trials[0].intermediate_values == {1: 0.5}


def test_storage_retry_seconds_is_checked():
    from sweep.search.loop import OptunaSweeperImpl
    from sweep.search.space import SweeperError

    base = dict(
        sampler="tpe",
        seed=1,
        sampler_args={},
        direction="maximize",
        n_trials=2,
        n_jobs=1,
        storage=None,
        study_name="s",
        pruner="none",
        pruner_args={},
        max_failure_rate=0.2,
        heartbeat_interval=5,
        grace_period=30,
        params=None,
        enqueue=[],
    )
    with pytest.raises(SweeperError, match=r"storage_retry_seconds=-1 is invalid"):
        OptunaSweeperImpl(**base, storage_retry_seconds=-1)
    assert OptunaSweeperImpl(**base).storage_retry_seconds == 60


# ---------------------------------------------------------------------------- a real outage (slow)
@pytest.fixture
def own_postgres():
    """A PostgreSQL server of this test alone: stopping it must not disturb the session's server."""
    server = PostgresServer(require_bindir())
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _search(out, url, *extra):
    return [
        "hydra/sweeper=optuna",
        "+search=dropout",
        f"hydra.sweeper.storage={url}",
        "hydra.sweeper.study_name=t",
        "hydra.sweeper.pruner=none",
        "hydra.sweeper.n_trials=3",
        *extra,
    ]


def _trials(url):
    study = optuna.load_study(study_name="t", storage=url)
    return [t.state.name for t in study.get_trials(deepcopy=False)]


@pytest.mark.slow
def test_a_postgres_outage_during_a_search_is_ridden_out(tiny_root, tmp_path, own_postgres):
    """The server is down for 15 s while a trial trains (its epoch reports, heartbeats, then the tell and
    the next ask all meet the outage); the search finishes every trial and leaves none RUNNING."""
    url = own_postgres.url(own_postgres.create_database())
    proc = start(_search(tmp_path, url), tmp_path, tiny_root, epochs=25)
    try:
        wait_for(lambda: runs_with_metrics(tmp_path), tmp_path, what="an epoch")
        own_postgres.pause()
        time.sleep(15)
        own_postgres.resume()
        rc = proc.wait(timeout=400)
    finally:
        proc.kill()
    log = (tmp_path / "cli.log").read_text()
    assert rc == 0, log[-4000:]
    assert "does not answer" in log and "answers again" in log  # it did meet the outage
    assert PASSWORD not in log
    assert _trials(url) == ["COMPLETE"] * 3
    _, runs = mlflow_runs(tmp_path)
    children = [r for r in runs if r.data.tags.get("sweep_role") != "parent"]
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 4 and len(children) == 3


@pytest.mark.slow
def test_an_outage_longer_than_the_budget_stops_the_search_with_one_line(tiny_root, tmp_path, own_postgres):
    url = own_postgres.url(own_postgres.create_database())
    proc = start(
        _search(tmp_path, url, "hydra.sweeper.storage_retry_seconds=3"), tmp_path, tiny_root, epochs=LONG_EPOCHS
    )
    try:
        wait_for(lambda: runs_with_metrics(tmp_path), tmp_path, what="an epoch")
        own_postgres.pause()
        rc = proc.wait(timeout=120)
    finally:
        proc.kill()
        own_postgres.resume()
    log = (tmp_path / "cli.log").read_text()
    assert rc == 1, log[-4000:]
    assert "Traceback" not in log and PASSWORD not in log
    line = f"hydra.sweeper.storage=postgresql+psycopg2://postgres:***@127.0.0.1:{own_postgres.port}/"
    assert line in log and "did not answer for 3 s (hydra.sweeper.storage_retry_seconds=3)" in log, log[-3000:]
    _, runs = mlflow_runs(tmp_path)
    assert "RUNNING" not in {r.info.status for r in runs}
    child = [r for r in runs if r.data.tags.get("sweep_role") != "parent"]
    assert [r.info.status for r in child] == ["FAILED"]
    assert "did not answer" in child[0].data.tags["error"]  # the reason, not "invalid data ... max length"


# --------------------------------------------------------------- the MLflow server down mid-grid (slow)
from helpers.mlflow_server import mlflow_server  # noqa: E402,F401 - pytest fixture
from helpers.pg import postgres_server  # noqa: E402,F401 - pytest fixture


@pytest.mark.slow
def test_mlflow_server_down_mid_grid_stops_the_sweep_and_records_why(tiny_root, tmp_path, mlflow_server, monkeypatch):
    """Decision (README, Reliability): the server stopping for longer than MLflow's HTTP retries stops the
    sweep (no later point starts against a dead server and leaves no record); when it answers again the
    interrupted run and the parent end FAILED with the reason, and nothing stays RUNNING."""
    import signal as sig

    from mlflow.tracking import MlflowClient

    for key, value in {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "2",
        "DROPOUT_TRACKING_WAIT_SECONDS": "120",
    }.items():
        monkeypatch.setenv(key, value)
    experiment = f"outage_{tmp_path.name}"
    args = [
        f"data.root={tiny_root}",
        "data.verify=false",
        "data.download=false",
        "data.val_size=100",
        "data.train_eval_size=200",
        f"trainer.epochs={LONG_EPOCHS}",
        "trainer.progress=false",
        "trainer.threads=1",
        f"tracking.uri={mlflow_server.url}",
        f"tracking.experiment={experiment}",
        f"hydra.sweep.dir={tmp_path}/sweep",
        "drop_prob=0,0.1,0.2,0.3",
    ]
    proc = start(args, tmp_path, tiny_root, epochs=LONG_EPOCHS, tiny=False)
    client = MlflowClient(tracking_uri=mlflow_server.url)

    def training():
        exp = client.get_experiment_by_name(experiment)
        runs = client.search_runs([exp.experiment_id]) if exp else []
        return [r for r in runs if "test_acc" in r.data.metrics]

    try:
        wait_for(training, tmp_path, what="an epoch on the server")
        os.killpg(mlflow_server.proc.pid, sig.SIGSTOP)  # the server stops answering (requests time out)
        wait_for(
            lambda: "waiting up to 120 s for tracking.uri" in (tmp_path / "cli.log").read_text(),
            tmp_path,
            timeout=200,
            what="the sweep stopping",
        )  # longer than the client's retries: the sweep gave up
        time.sleep(5)
        os.killpg(mlflow_server.proc.pid, sig.SIGCONT)
        rc = proc.wait(timeout=300)
    finally:
        os.killpg(mlflow_server.proc.pid, sig.SIGCONT)
        proc.kill()
    log = (tmp_path / "cli.log").read_text()
    assert rc == 1, log[-4000:]
    assert f"error: tracking.uri={mlflow_server.url} stopped answering" in log, log[-4000:]
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert "RUNNING" not in {r.info.status for r in runs}, [(r.info.run_name, r.info.status) for r in runs]
    parent = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    children = [r for r in runs if r.data.tags.get("sweep_role") != "parent"]
    assert [p.info.status for p in parent] == ["FAILED"] and "stopped answering" in parent[0].data.tags["error"]
    failed = [c for c in children if c.info.status == "FAILED"]
    assert len(failed) == 1 and failed[0].data.tags.get("error")  # the interrupted point, with the reason
    assert len(children) < 4  # no point started after the server stopped answering
    assert {c.info.status for c in children} - {"FAILED"} <= {"FINISHED"}
