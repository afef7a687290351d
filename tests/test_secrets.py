"""Secrets never reach MLflow: passwords typed on the command line, passwords and tokens in environment
variables (read by an `${oc.env:...}` interpolation, by the MLflow client, by libpq), on both team
setups -- MLflow's PostgreSQL store used directly, and an `mlflow server` (`tracking=server`).

After a real Optuna sweep (a failing trial included, so the `error` tag path runs too) the test reads
back everything the runs stored -- run names, params, tags, metric keys, every artifact's bytes, the
experiments -- and, below the API, every row of every table of MLflow's database and every file of its
artifact folder, and looks for each secret (raw and URL-encoded). PostgreSQL here trusts loopback, so
any password is accepted: the secrets are real credentials as far as the code can tell.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from helpers.cli import ROOT, tiny_overrides
from helpers.mlflow_server import mlflow_server  # noqa: F401  (fixture)
from helpers.pg import postgres_server  # noqa: F401  (fixture)

# Hydra's own record of the command line (local, git-ignored under runs/): the only files that may hold a
# password typed on the command line. README *Secrets* says so and says what to do instead.
HYDRA_RECORD = {"overrides.yaml", "config.yaml", "hydra.yaml", "multirun.yaml"}


def test_redact_masks_the_team_setups_credentials(monkeypatch):
    """The variables README *Secrets* names, as values anywhere in a string; URLs' passwords."""
    from sweep.redact import redact

    for name in ("PGPASSWORD", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "MLFLOW_AUTH_ADMIN_PASSWORD",
                 "MLFLOW_FLASK_SERVER_SECRET_KEY", "MYSQL_PWD", "DB_PW", "DROPOUT_API_TOKEN", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, f"v-{name.lower()}-9")
        assert redact(f"x v-{name.lower()}-9 y") == "x *** y", name
    monkeypatch.setenv("OPTUNA_STORAGE", "postgresql://optuna:pw-in-url@db.lab/optuna")
    assert redact("postgresql://optuna:pw-in-url@db.lab/optuna") == "postgresql://optuna:***@db.lab/optuna"
    assert redact("http://alice:s3cr3t@mlflow.lab:5000") == "http://alice:***@mlflow.lab:5000"
    assert redact("postgresql://u@h/db?password=abcd&sslmode=require") == "postgresql://u@h/db?password=***&sslmode=require"
    monkeypatch.setenv("PWD", str(ROOT))  # the shell's working directory is not a secret
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.lab:5000")
    assert redact(f"{ROOT}/runs http://mlflow.lab:5000") == f"{ROOT}/runs http://mlflow.lab:5000"


def _forms(secret: str) -> set[str]:
    return {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}


def _find(secrets: dict[str, str], text: str) -> list[str]:
    return [name for name, s in secrets.items() if any(f in text for f in _forms(s))]


def _database_text(url: str) -> str:
    """Every row of every table of a PostgreSQL database, as text."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    parts = []
    with engine.connect() as conn:
        tables = conn.execute(sqlalchemy.text(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")).scalars().all()
        assert "runs" in tables and "params" in tables, tables
        for t in tables:
            parts += conn.execute(sqlalchemy.text(f'SELECT t::text FROM "{t}" t')).scalars().all()
    engine.dispose()
    return "\n".join(parts)


def _files_text(folder: Path) -> dict[Path, str]:
    return {p: p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file()}


def _mlflow_text(client: MlflowClient) -> tuple[str, int, int]:
    """Everything the MLflow API gives back about every run of every experiment (artifacts downloaded)."""
    parts, n_runs, n_files = [], 0, 0
    for exp in client.search_experiments(view_type=ViewType.ALL):
        parts += [exp.name, exp.artifact_location, repr(exp.tags)]
        for run in client.search_runs([exp.experiment_id], max_results=1000, run_view_type=ViewType.ALL):
            n_runs += 1
            d, i = run.data, run.info
            parts += [repr(i), i.run_name or "", repr(d.params), repr(d.tags), repr(sorted(d.metrics))]
            for key in d.metrics:
                parts.append(repr(client.get_metric_history(i.run_id, key)))
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(client.download_artifacts(i.run_id, "", tmp))
                for p, text in _files_text(local).items():
                    n_files += 1
                    parts += [str(p.relative_to(local)), text]
    return "\n".join(parts), n_runs, n_files


def _run(args: list[str], env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true", **env_extra}
    for k in ("HYDRA_FULL_ERROR", "DROPOUT_DEBUG"):
        env.pop(k, None)
    for k in ("MLFLOW_TRACKING_URI", "OPTUNA_STORAGE", "PGPASSWORD"):
        if k not in env_extra:
            env.pop(k, None)
    return subprocess.run([sys.executable, str(ROOT / "sweep" / "run.py"), "-m", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def _check_stores(secrets: dict[str, str], client: MlflowClient, db_url: str, artifacts: Path,
                  min_runs: int) -> None:
    api, n_runs, n_files = _mlflow_text(client)
    assert n_runs >= min_runs and n_files >= min_runs  # it really read something back
    assert "config.yaml" in api and "sweep_results.csv" in api and "optimization_results.yaml" in api
    assert "***" in api  # the credentials were there, masked
    assert _find(secrets, api) == [], "a secret in what MLflow returns"
    assert _find(secrets, _database_text(db_url)) == [], "a secret in MLflow's database"
    files = _files_text(artifacts)
    assert files
    leaks = {str(p): _find(secrets, t) for p, t in files.items() if _find(secrets, t)}
    assert leaks == {}, "a secret in MLflow's artifact folder"


@pytest.mark.slow
def test_database_store_typed_password_env_password_and_token(tiny_root, tmp_path, postgres_server):
    """tracking.uri=postgresql://postgres:<typed>@.../mlflow?application_name=${oc.env:DROPOUT_API_TOKEN};
    the Optuna storage's password from ${oc.env:DROPOUT_PG_PASSWORD}."""
    secrets = {"typed": "s1Typed@Pw-8c1", "env_password": "s2EnvPw-93kd", "env_token": "s3Tok-4Lq0z"}
    pg = postgres_server
    mlflow_db, optuna_db = pg.create_database(), pg.create_database()
    typed_url = (f"postgresql+psycopg2://postgres:{urllib.parse.quote(secrets['typed'], safe='')}"
                 f"@127.0.0.1:{pg.port}/{mlflow_db}")
    args = [*tiny_overrides(tiny_root, tmp_path, epochs=2),
            f"tracking.uri='{typed_url}?application_name=${{oc.env:DROPOUT_API_TOKEN}}'",
            f"tracking.artifact_location={tmp_path}/artifacts",
            f"tracking.optuna_storage='postgresql+psycopg2://postgres:${{oc.env:DROPOUT_PG_PASSWORD}}"
            f"@127.0.0.1:{pg.port}/{optuna_db}'",
            "hydra/sweeper=optuna", "hydra.sweeper.study_name=secrets", "hydra.sweeper.sampler=grid",
            "hydra.sweeper.max_failure_rate=1",
            "hydra.sweeper.pruner=median", "hydra.sweeper.pruner_args.n_startup_trials=1",
            "drop_prob=choice(0.1,0.3)", "model.in_features=choice(784,100)"]  # 100 inputs for 784 pixels: raises
    res = _run(args, {"DROPOUT_PG_PASSWORD": secrets["env_password"], "DROPOUT_API_TOKEN": secrets["env_token"]})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]

    import optuna

    optuna_url = f"postgresql+psycopg2://postgres@127.0.0.1:{pg.port}/{optuna_db}"  # via tracking.optuna_storage
    trials = optuna.load_study(study_name="secrets", storage=optuna_url).get_trials(deepcopy=False)
    assert sorted(t.state.name for t in trials) == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]
    client = MlflowClient(tracking_uri=typed_url)
    exp = client.get_experiment_by_name("dropout")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    kids = [r for r in runs if "optuna_trial" in r.data.tags]
    assert sorted(r.info.status for r in kids) == ["FAILED", "FAILED", "FINISHED", "FINISHED"]
    assert all("error" in r.data.tags for r in kids if r.info.status == "FAILED")
    params = kids[0].data.params
    assert params["tracking.uri"].startswith("postgresql+psycopg2://postgres:***@127.0.0.1")
    assert params["tracking.optuna_storage"].startswith("postgresql+psycopg2://postgres:***@127.0.0.1")
    assert "application_name=***" in params["tracking.uri"]  # the token, masked as an environment value
    _check_stores(secrets, client, typed_url, tmp_path / "artifacts", min_runs=5)

    # Hydra's folders: values read from the environment stay `${oc.env:...}` there; the typed password
    # is only in Hydra's own record of the command line (overrides.yaml, config.yaml, hydra.yaml, multirun.yaml)
    files = _files_text(tmp_path / "sweep")
    assert files
    env_leaks = [str(p) for p, t in files.items() if _find({k: secrets[k] for k in ("env_password", "env_token")}, t)]
    assert env_leaks == []
    typed = {p.name for p, t in files.items() if _find({"typed": secrets["typed"]}, t)}
    assert typed and typed <= HYDRA_RECORD, typed
    assert _find({k: secrets[k] for k in ("env_password", "env_token")}, res.stdout + res.stderr) == []


@pytest.mark.slow
def test_tracking_server_credentials_from_the_environment(tiny_root, tmp_path, postgres_server, mlflow_server):
    """tracking=server: MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME/PASSWORD (sent by the MLflow client),
    OPTUNA_STORAGE with a password in it, PGPASSWORD: nothing of it in MLflow, nor anywhere under runs/."""
    secrets = {"mlflow_password": "s4MlPw-x81Q", "storage_password": "s5StPw-0pQv", "pgpassword": "s6PgPw-Rt72"}
    pg = postgres_server
    optuna_db = pg.create_database()
    env = {"MLFLOW_TRACKING_URI": mlflow_server.url, "MLFLOW_TRACKING_USERNAME": "alice",
           "MLFLOW_TRACKING_PASSWORD": secrets["mlflow_password"],
           "OPTUNA_STORAGE": f"postgresql://postgres:{secrets['storage_password']}@127.0.0.1:{pg.port}/{optuna_db}",
           "PGPASSWORD": secrets["pgpassword"]}
    args = [a for a in tiny_overrides(tiny_root, tmp_path, epochs=1) if not a.startswith("tracking.")]
    args += ["tracking=server", "tracking.experiment=secrets", "tracking.sweep_id=secrets-1", "+search=dropout",
             "hydra.sweeper.study_name=secrets",
             "hydra.sweeper.n_trials=2", "hydra.sweeper.enqueue=[]", "hydra.sweeper.pruner=none"]
    res = _run(args, env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]

    client = MlflowClient(tracking_uri=mlflow_server.url)
    exp = client.get_experiment_by_name("secrets")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3
    parent = next(r for r in runs if r.data.tags.get("sweep_role") == "parent")
    assert "postgres:***@127.0.0.1" in parent.data.tags["optuna_storage"]
    _check_stores(secrets, client, mlflow_server.backend_store_uri, mlflow_server.artifacts, min_runs=3)
    # every secret came from the environment: none of it in any file Hydra or the sweep wrote, nor printed
    leaks = {str(p): _find(secrets, t) for p, t in _files_text(tmp_path / "sweep").items() if _find(secrets, t)}
    assert leaks == {}
    assert _find(secrets, res.stdout + res.stderr) == []
