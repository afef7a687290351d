"""Secrets never reach MLflow: passwords typed on the command line, passwords and tokens in environment
variables (read by an `${oc.env:...}` interpolation, by the MLflow client, by libpq), on both team
setups -- MLflow's PostgreSQL store used directly, and an `mlflow server` (`tracking=server`).

After a real Optuna sweep (a failing trial included, so the `error` tag path runs too) the test reads
back everything the runs stored -- run names, params, tags, metric keys, every artifact's bytes, the
experiments -- and, below the API, every row of every table of MLflow's database and every file of its
artifact folder, and looks for each secret (raw and URL-encoded). PostgreSQL here trusts loopback, so
any password is accepted: the secrets are real credentials as far as the code can tell.

Passwords typed on the command line of a multirun (a grid, an Optuna search) are stored by Hydra with its
own escapes (`postgresql\\://bob\\:pw@h`), quoted, or percent-encoded as typed; the same searches cover
them, and every file `python -m sweep.report --tracking-uri http://user:pw@host` writes.
"""

from __future__ import annotations

import html
import json
import os
import re
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
    from sweep.util.redact import redact

    for name in (
        "PGPASSWORD",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN",
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
        "MYSQL_PWD",
        "DB_PW",
        "DROPOUT_API_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
    ):
        monkeypatch.setenv(name, f"v-{name.lower()}-9")
        assert redact(f"x v-{name.lower()}-9 y") == "x *** y", name
    monkeypatch.setenv("OPTUNA_STORAGE", "postgresql://optuna:pw-in-url@db.lab/optuna")
    assert redact("postgresql://optuna:pw-in-url@db.lab/optuna") == "postgresql://optuna:***@db.lab/optuna"
    assert redact("http://alice:s3cr3t@mlflow.lab:5000") == "http://alice:***@mlflow.lab:5000"
    assert (
        redact("postgresql://u@h/db?password=abcd&sslmode=require")
        == "postgresql://u@h/db?password=***&sslmode=require"
    )
    monkeypatch.setenv("PWD", str(ROOT))  # the shell's working directory is not a secret
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.lab:5000")
    assert redact(f"{ROOT}/runs http://mlflow.lab:5000") == f"{ROOT}/runs http://mlflow.lab:5000"


def test_redact_sees_through_escapes_and_masks_known_secrets_in_any_encoding(monkeypatch):
    """URL passwords as Hydra, a shell or a URL encoder stored them; a secret typed on the command line
    masked wherever it shows up again, raw, percent-, Hydra-, JSON-, HTML- or shell-escaped."""
    import shlex

    from sweep.util.redact import redact

    assert redact(r"s=postgresql\://bob\:S3cretPw77@127.0.0.1\:5499/x") == r"s=postgresql\://bob\:***@127.0.0.1\:5499/x"
    assert redact("'mysql://eve:Gr1d(x)=y,z;k@db.lab/x'") == "'mysql://eve:***@db.lab/x'"
    assert redact("next=postgresql%3A%2F%2Fbob%3Ap%2540ss%40h%2Fdb") == "next=postgresql%3A%2F%2Fbob%3A***%40h%2Fdb"
    assert redact("postgresql://bob:p@ss@h/db") == "postgresql://bob:***@h/db"
    assert redact(r"h/db?sslmode=require\&password\=abc\,d") == r"h/db?sslmode=require\&password\=***"
    secret = "Typed@Pw'(1) x"
    monkeypatch.setattr(sys, "argv", [*sys.argv, f"tracking.uri=postgresql://u:{urllib.parse.quote(secret)}@h/db"])
    hydra_escaped = re.sub(r"([\\()\[\]{}:=, \t])", r"\\\1", secret)
    for form in (
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        hydra_escaped,
        json.dumps(secret),
        json.dumps(hydra_escaped),
        repr(secret),
        html.escape(secret),
        shlex.quote(secret),
        json.dumps(secret, ensure_ascii=True).replace("@", "\\u0040"),
    ):
        assert "Typed" not in redact(f"error: {form} was refused"), form
    assert redact("an ordinary sentence with Typed words") == "an ordinary sentence with Typed words"


def _forms(secret: str) -> set[str]:
    """The secret raw, URL-, Hydra-, JSON- and HTML-escaped, and its long alphanumeric runs (a run of 8 or
    more is unique to the secret: found in any encoding at all, it leaked)."""
    hydra_escaped = re.sub(r"([\\()\[\]{}:=, \t])", r"\\\1", secret)
    return {
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        hydra_escaped,
        json.dumps(secret)[1:-1],
        html.escape(secret),
        *re.findall(r"[A-Za-z0-9]{8,}", secret),
    }


def _find(secrets: dict[str, str], text: str) -> list[str]:
    return [name for name, s in secrets.items() if any(f in text for f in _forms(s))]


def _database_text(url: str) -> str:
    """Every row of every table of a PostgreSQL or SQLite database, as text."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    parts = []
    with engine.connect() as conn:
        tables = sqlalchemy.inspect(conn).get_table_names()
        assert "runs" in tables and "params" in tables, tables
        for t in tables:
            parts += [repr(tuple(row)) for row in conn.execute(sqlalchemy.text(f'SELECT * FROM "{t}"'))]
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
    return subprocess.run(
        [sys.executable, str(ROOT / "sweep" / "run.py"), "-m", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _check_stores(
    secrets: dict[str, str],
    client: MlflowClient,
    db_url: str,
    artifacts: Path,
    min_runs: int,
    artifact_names=("config.yaml", "sweep_results.csv", "optimization_results.yaml"),
) -> None:
    api, n_runs, n_files = _mlflow_text(client)
    assert n_runs >= min_runs and n_files >= min_runs  # it really read something back
    assert all(name in api for name in artifact_names), artifact_names
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
    typed_url = (
        f"postgresql+psycopg2://postgres:{urllib.parse.quote(secrets['typed'], safe='')}"
        f"@127.0.0.1:{pg.port}/{mlflow_db}"
    )
    args = [
        *tiny_overrides(tiny_root, tmp_path, epochs=2),
        f"tracking.uri='{typed_url}?application_name=${{oc.env:DROPOUT_API_TOKEN}}'",
        f"tracking.artifact_location={tmp_path}/artifacts",
        f"tracking.optuna_storage='postgresql+psycopg2://postgres:${{oc.env:DROPOUT_PG_PASSWORD}}"
        f"@127.0.0.1:{pg.port}/{optuna_db}'",
        "hydra/sweeper=optuna",
        "hydra.sweeper.study_name=secrets",
        "hydra.sweeper.sampler=grid",
        "hydra.sweeper.max_failure_rate=1",
        "hydra.sweeper.pruner=median",
        "hydra.sweeper.pruner_args.n_startup_trials=1",
        "hydra.sweeper.pruner_args.n_warmup_steps=2",  # the default warm-up (2/3 of 2 epochs) may prune
        "drop_prob=choice(0.1,0.3)",
        "model.in_features=choice(784,100)",
    ]  # 100 inputs for 784 pixels: raises
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
    env = {
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "MLFLOW_TRACKING_USERNAME": "alice",
        "MLFLOW_TRACKING_PASSWORD": secrets["mlflow_password"],
        "OPTUNA_STORAGE": f"postgresql://postgres:{secrets['storage_password']}@127.0.0.1:{pg.port}/{optuna_db}",
        "PGPASSWORD": secrets["pgpassword"],
    }
    args = [a for a in tiny_overrides(tiny_root, tmp_path, epochs=1) if not a.startswith("tracking.")]
    args += [
        "tracking=server",
        "tracking.experiment=secrets",
        "tracking.sweep_id=secrets-1",
        "+search=dropout",
        "hydra.sweeper.study_name=secrets",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.enqueue=[]",
        "hydra.sweeper.pruner=none",
    ]
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


# ---------------------------------------------------------------- passwords typed on a multirun's command line


def _hydra_folders_hold_typed_secrets_only_in_its_record(secrets: dict[str, str], folder: Path) -> None:
    files = _files_text(folder)
    assert files
    where = {p.name for p, t in files.items() if _find(secrets, t)}
    assert where <= HYDRA_RECORD, where


@pytest.mark.slow
def test_grid_typed_passwords_escaped_by_hydra_quoted_or_percent_encoded(tiny_root, tmp_path):
    """`-m tracking.optuna_storage=<3 URLs with passwords> drop_prob=0,0.2`: Hydra stores the first with its
    escapes (postgresql\\://bob\\:pw@...) in each job's overrides, the second quoted with characters Hydra
    would escape, the third percent-encoded as typed. Nothing of any of them in MLflow."""
    secrets = {"escaped": "S3cretPw77", "quoted": "Gr1dQuoted(x)=y,z;k", "encoded": "Enc0dedPw@:/#3"}
    storages = [
        f"postgresql://bob:{secrets['escaped']}@127.0.0.1:5499/x",
        f"'mysql://eve:{secrets['quoted']}@db.lab/x'",
        f"postgresql+psycopg2://carol:{urllib.parse.quote(secrets['encoded'], safe='')}@db.lab:5432/x",
    ]
    args = [
        *tiny_overrides(tiny_root, tmp_path, epochs=1),
        "tracking.optuna_storage=" + ",".join(storages),
        "drop_prob=0,0.2",
    ]
    res = _run(args, {})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("dropout").experiment_id], max_results=100)
    kids = [r for r in runs if r.data.tags.get("sweep_role") != "parent"]
    assert sorted(r.info.status for r in kids) == ["FINISHED"] * 6
    overrides = sorted(r.data.tags["overrides"] for r in kids)
    assert sum(r"postgresql\://bob\:***@127.0.0.1\:5499/x" in o for o in overrides) == 2, overrides
    assert sum(r"'mysql://eve:***@db.lab/x'" in o for o in overrides) == 2, overrides
    assert sum(r"postgresql+psycopg2\://carol\:***@db.lab\:5432/x" in o for o in overrides) == 2, overrides
    assert sorted(r.data.params["tracking.optuna_storage"] for r in kids)[::2] == [
        "mysql://eve:***@db.lab/x",
        "postgresql+psycopg2://carol:***@db.lab:5432/x",
        "postgresql://bob:***@127.0.0.1:5499/x",
    ]
    _check_stores(
        secrets,
        client,
        f"sqlite:///{tmp_path}/mlflow.db",
        tmp_path / "mlartifacts",
        min_runs=7,
        artifact_names=("config.yaml", "sweep_results.csv"),
    )
    _hydra_folders_hold_typed_secrets_only_in_its_record(secrets, tmp_path / "sweep")


@pytest.mark.slow
def test_optuna_search_typed_passwords_raw_hydra_escaped_and_percent_encoded(tiny_root, tmp_path, postgres_server):
    """`hydra/sweeper=optuna`: the study's storage typed with a password; tracking.optuna_storage typed with
    Hydra's escapes (as Hydra's log prints a job's overrides, ready to copy) and a percent-encoded password,
    which the jobs' overrides keep as typed; a failing trial too (error tag)."""
    secrets = {"storage": "0ptunaTyped-Pw1", "escaped": "EscapedStorage@Pw(2)"}
    pg = postgres_server
    db = pg.create_database()
    args = [
        *tiny_overrides(tiny_root, tmp_path, epochs=1),
        f"hydra.sweeper.storage=postgresql+psycopg2://postgres:{secrets['storage']}@127.0.0.1:{pg.port}/{db}",
        f"tracking.optuna_storage=postgresql\\://postgres\\:{urllib.parse.quote(secrets['escaped'], safe='')}"
        f"@127.0.0.1\\:{pg.port}/{db}",
        "hydra/sweeper=optuna",
        "hydra.sweeper.study_name=typed",
        "hydra.sweeper.sampler=grid",
        "hydra.sweeper.max_failure_rate=1",
        "drop_prob=choice(0,0.2)",
        "model.in_features=choice(784,100)",
    ]  # 100 inputs for 784 pixels: the job raises
    res = _run(args, {})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]

    store = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs([client.get_experiment_by_name("dropout").experiment_id], max_results=100)
    kids = [r for r in runs if "optuna_trial" in r.data.tags]
    assert sorted(r.info.status for r in kids) == ["FAILED", "FAILED", "FINISHED", "FINISHED"]
    assert all(
        r"tracking.optuna_storage=postgresql\://postgres\:***@127.0.0.1\:" in r.data.tags["overrides"] for r in kids
    ), kids[0].data.tags["overrides"]
    assert kids[0].data.params["tracking.optuna_storage"].startswith("postgresql://postgres:***@127.0.0.1")
    _check_stores(secrets, client, store, tmp_path / "mlartifacts", min_runs=5)
    _hydra_folders_hold_typed_secrets_only_in_its_record(secrets, tmp_path / "sweep")


# ---------------------------------------------------------------- the report


def _report(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    return subprocess.run(
        [sys.executable, "-m", "sweep.report", *args, "--out", str(out / "report.html")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _report_leaks(secrets: dict[str, str], out: Path, res: subprocess.CompletedProcess) -> dict[str, list[str]]:
    files = _files_text(out)
    assert {"report.html", "report.ipynb"} <= {p.name for p in files}, sorted(files)
    leaks = {str(p): _find(secrets, t) for p, t in files.items() if _find(secrets, t)}
    if _find(secrets, res.stdout + res.stderr):
        leaks["stdout/stderr"] = _find(secrets, res.stdout + res.stderr)
    return leaks


@pytest.mark.slow
def test_report_writes_no_password_of_its_tracking_uri_or_storage(tiny_root, tmp_path, postgres_server, mlflow_server):
    """A grid typed with `tracking.uri=http://alice:<pw>@<server>` (Hydra escapes it in the overrides), then
    `python -m sweep.report --tracking-uri http://alice:<pw>@<server> --optuna-storage <url with a password>
    --show-code`: a full report, and nothing it writes (HTML, notebook, figures, summary, ranking) nor prints
    holds a password; nor does a report on an unreachable store, whose error text names the URL."""
    secrets = {"tracking": "Rep0rtTracking-Pw", "storage": "Rep0rtStorage@Pw"}
    uri = mlflow_server.url.replace("http://", f"http://alice:{secrets['tracking']}@")
    args = [a for a in tiny_overrides(tiny_root, tmp_path, epochs=1) if not a.startswith("tracking.")]
    args += ["tracking=server", f"tracking.uri={uri}", "tracking.experiment=report-secrets", "drop_prob=0,0.2"]
    res = _run(args, {})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    client = MlflowClient(tracking_uri=mlflow_server.url)
    _check_stores(
        {"tracking": secrets["tracking"]},
        client,
        mlflow_server.backend_store_uri,
        mlflow_server.artifacts,
        min_runs=3,
        artifact_names=("config.yaml", "sweep_results.csv"),
    )

    storage = f"postgresql://bob:{urllib.parse.quote(secrets['storage'], safe='')}@127.0.0.1:1/optuna"
    res = _report(
        tmp_path / "ok",
        "--tracking-uri",
        uri,
        "--experiment",
        "report-secrets",
        "--optuna-storage",
        storage,
        "--show-code",
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    summary = json.loads((tmp_path / "ok" / "report_figures" / "summary.json").read_text())
    assert "accuracy_vs_dropout" in summary["figures"]  # it really read the runs through the URI
    assert "alice:***@127.0.0.1" in (tmp_path / "ok" / "report.html").read_text()
    assert _report_leaks(secrets, tmp_path / "ok", res) == {}

    dead = f"http://alice:{urllib.parse.quote(secrets['tracking'])}@127.0.0.1:1"
    res = _report(tmp_path / "dead", "--tracking-uri", dead, "--show-code")
    assert res.returncode != 0
    assert "127.0.0.1:1" in res.stderr  # the error names the store...
    assert _report_leaks(secrets, tmp_path / "dead", res) == {}  # ...without its password


# ---------------------------------------------------------------- hardening, round four


@pytest.mark.slow
def test_a_storage_password_in_the_query_string_from_the_environment_stays_out_of_jobs(
    tiny_root, tmp_path, postgres_server
):
    """OPTUNA_STORAGE=postgresql://postgres@host/db?password=PW, read by hydra.sweeper.storage: the jobs get it
    through the environment, so it is in no job's overrides, no Hydra file, no console line, no store."""
    secrets = {"query_password": "s7QueryPw-k2Lm"}
    pg = postgres_server
    db = pg.create_database()
    env = {"OPTUNA_STORAGE": f"postgresql://postgres@127.0.0.1:{pg.port}/{db}?password={secrets['query_password']}"}
    args = [
        *tiny_overrides(tiny_root, tmp_path, epochs=1),
        "hydra/sweeper=optuna",
        "hydra.sweeper.storage=${oc.env:OPTUNA_STORAGE}",
        "hydra.sweeper.study_name=query",
        "hydra.sweeper.sampler=grid",
        "drop_prob=choice(0,0.5)",
        "hydra.sweeper.pruner=none",
    ]
    res = _run(args, env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert _find(secrets, res.stdout + res.stderr) == []
    leaks = {
        str(p): _find(secrets, t)
        for p, t in _files_text(tmp_path).items()
        if _find(secrets, t) and not p.name.startswith(("mlflow.db", "optuna.db"))
    }
    assert leaks == {}
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    assert _find(secrets, _mlflow_text(client)[0]) == []
    assert _find(secrets, _database_text(f"sqlite:///{tmp_path}/mlflow.db")) == []
    optuna_text = _database_text_any(env["OPTUNA_STORAGE"])
    assert "query" in optuna_text and _find(secrets, optuna_text) == []


def _database_text_any(url: str) -> str:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        parts = [
            repr(tuple(row))
            for t in sqlalchemy.inspect(conn).get_table_names()
            for row in conn.execute(sqlalchemy.text(f'SELECT * FROM "{t}"'))
        ]
    engine.dispose()
    return "\n".join(parts)


@pytest.mark.slow
def test_a_weak_credential_inside_a_name_the_program_reads_back_is_refused(tiny_root, tmp_path):
    """MLFLOW_TRACKING_PASSWORD=dropout: masking it would rewrite `tracking.sweep_id=dropout-grid-1` into
    `***-grid-1` (grid resume then finds nothing), leaving it would leak it: refused in one line, exit 2, before
    any run; with names that do not contain it the sweep runs and resumes."""
    env = {"MLFLOW_TRACKING_PASSWORD": "dropout"}
    base = [*tiny_overrides(tiny_root, tmp_path, epochs=1), "drop_prob=0,0.5"]
    res = _run([*base, "tracking.experiment=lab", "tracking.sweep_id=dropout-grid-1"], env)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "error: tracking.sweep_id='***-grid-1' is invalid: it contains a password or token this process knows "
        "(typed, or in the environment); a name MLflow or Optuna is searched by cannot hold one: choose another "
        "name"
    ], res.stderr
    assert not (tmp_path / "mlflow.db").exists()
    res = _run([*base, "tracking.experiment=dropout"], env)  # the default experiment's name contains it too
    assert res.returncode == 2 and "tracking.experiment='***'" in res.stderr
    for _ in range(2):  # a name without it: trains, then resumes both points
        res = _run([*base, "tracking.experiment=lab", "tracking.sweep_id=grid-1"], env)
        assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("not training it again") + res.stderr.count("not training it again") == 2


@pytest.mark.slow
def test_a_password_in_mlflow_tracking_uri_is_not_printed_after_every_run(
    tiny_root, tmp_path, postgres_server, mlflow_server
):
    """MLFLOW_TRACKING_URI=http://user:PW@host:port: MLflow's client printed `View run ... at: <URI>` and `View
    experiment at: <URI>` after every run, password included (stdout, SLURM .out files, CI logs)."""
    secrets = {"uri_password": "s8UriPw-Qx51"}
    url = mlflow_server.url.replace("http://", f"http://alice:{secrets['uri_password']}@")
    args = [a for a in tiny_overrides(tiny_root, tmp_path, epochs=1) if not a.startswith("tracking.")]
    args += [
        "tracking=server",
        "tracking.experiment=uri-secrets",
        "drop_prob=0,0.5",
        f"tracking.optuna_storage=sqlite:///{tmp_path}/optuna.db",
    ]
    res = _run(args, {"MLFLOW_TRACKING_URI": url})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert "View run" not in res.stdout + res.stderr and "View experiment" not in res.stdout + res.stderr
    assert _find(secrets, res.stdout + res.stderr) == []
    leaks = {str(p): _find(secrets, t) for p, t in _files_text(tmp_path / "sweep").items() if _find(secrets, t)}
    assert leaks == {}
