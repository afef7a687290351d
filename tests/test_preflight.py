"""Pre-flight through the real CLI: each mistake is one `error: ` line naming the key, the bad value and
what is allowed, exit code 2, no traceback -- before any data is loaded, any Hydra job starts or any
MLflow run (or sweep parent) exists. A store that is refused is never written to."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import uuid

import pytest
import torch

from helpers.cli import ROOT, mlflow_runs
from helpers.net import free_port
from helpers.pg import PASSWORD, PostgresServer, require_bindir

pytestmark = pytest.mark.slow
SECRET = "hunter2-s3cret"


def refused(res, out, *words, store_readable: bool = True) -> str:
    """The one error line; and proof that nothing started: no Hydra job folder (.hydra), no data loaded
    (the job logs its splits), no MLflow run or parent."""
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-3000:]
    both = res.stderr + res.stdout
    assert "Traceback" not in both and "HYDRA_FULL_ERROR" not in both and "Splits(" not in both
    for w in words:
        assert w in lines[0], lines[0]
    assert not list(out.rglob(".hydra")), "a Hydra job started"
    if store_readable and (out / "mlflow.db").exists():
        assert mlflow_runs(out)[1] == []
    return lines[0]


def sweep(*args: str) -> tuple[str, ...]:
    return ("-m", "+search=dropout", "hydra.sweeper.n_trials=1", *args)


# ------------------------------------------------------------------------------------------ job values
@pytest.mark.parametrize(
    "args, words",
    [
        (["trainer.batch_size=1000000"], ["trainer.batch_size=1000000", "500 training images", "drop_last"]),
        # data.train_subset and data.val_size decide the split
        (["data.train_subset=40", "trainer.batch_size=64"], ["trainer.batch_size=64", "40 training images"]),
        (["data.val_size=590", "trainer.batch_size=11"], ["trainer.batch_size=11", "10 training images"]),
        (["-m", "trainer.batch_size=10,1000"], ["trainer.batch_size=1000", "500 training images"]),
        (["optimizer.betas=[2,3]"], ["optimizer.betas=[2.0, 3.0]", "[0, 1)"]),
        (["optimizer.betas=[0.9]"], ["optimizer.betas=[0.9]", "two"]),
        (["optimizer.betas=[0.9,0.99,0.5]"], ["optimizer.betas", "two"]),
        (["optimizer.betas=[0.9,-0.1]"], ["optimizer.betas", "[0, 1)"]),
        (["seed=99999999999999999999"], ["seed=99999999999999999999", "18446744073709551614"]),
        (["seed=18446744073709551615"], ["seed=18446744073709551615", "18446744073709551614"]),
        (["-m", "seed=1,18446744073709551615"], ["seed=18446744073709551615"]),
        (["trainer.threads=100000"], ["trainer.threads=100000", f"at most {4 * os.cpu_count()}"]),
        (["trainer.cpu_matmul=mkl"], ["trainer.cpu_matmul='mkl'", "allowed: auto, onednn, blas"]),
        # hardening round four: bounds and values that used to pass pre-flight and fail in the job (or not at all)
        (["data.split_seed=18446744073709551615"], ["data.split_seed=18446744073709551615", "18446744073709551614"]),
        (["data.split_seed=18446744073709551616"], ["data.split_seed=18446744073709551616", "18446744073709551614"]),
        (["objective=[]"], ["objective=[]", "name at least one metric"]),
        (["-m", "objective=[]", "drop_prob=0,0.5"], ["objective=[]", "name at least one metric"]),
        ([f"tracking.experiment={'x' * 600}"], ["tracking.experiment=", "600 characters", "at most 256"]),
        (["-m", "drop_prob=0,-0.0,0.5"], ["drop_prob=0,-0.0,0.5", "0 and -0.0 are one value"]),
        (["-m", "drop_prob=0.5,5e-1"], ["0.5 and 5e-1 are one value"]),
        (["data.resample=all"], ["data.resample='all'", "allowed: none, subset, split"]),
        # every combination of a grid, not each axis against the others' first values
        (
            ["-m", "trainer.batch_size=100,300", "data.train_subset=400,200"],
            ["trainer.batch_size=300", "200 training images"],
        ),
        (
            ["-m", "optimizer.warmup_epochs=0,2", "trainer.epochs=3,2"],
            [
                "optimizer.warmup_epochs=2",
                "less than trainer.epochs (2)",
                "grid point optimizer.warmup_epochs=2 trainer.epochs=2",
            ],
        ),
        (
            ["-m", "optimizer=adam,sgd", "optimizer.warmup_epochs=0,2", "trainer.epochs=2"],
            ["optimizer.warmup_epochs=2", "less than trainer.epochs (2)"],
        ),
    ],
)
def test_bad_job_values(cli, args, words):
    refused(cli(*args), cli.out, *words)


def test_full_batch_is_fine_without_drop_last(cli):
    res = cli("trainer.batch_size=1000000", "trainer.drop_last=false", epochs=1)
    assert res.returncode == 0, res.stderr[-2000:]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(cli):
    refused(cli("trainer.device=cuda"), cli.out, "trainer.device=cuda", "auto", "cpu")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_without_mps(cli):
    refused(cli("trainer.device=mps"), cli.out, "trainer.device=mps", "auto", "cpu")


# ------------------------------------------------------------------------------------------ the stores
def _random_bytes(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(40_000))
    return path.read_bytes()


def test_corrupt_mlflow_store_is_refused_and_left_alone(cli):
    db = cli.out / "store" / "mlflow.db"
    before = _random_bytes(db)
    refused(cli(f"tracking.uri=sqlite:///{db}"), cli.out, "tracking.uri=sqlite:///", "not a SQLite database")
    assert db.read_bytes() == before
    assert sorted(p.name for p in db.parent.iterdir()) == ["mlflow.db"]  # no journal, no WAL file
    assert not (cli.out / "run").exists()  # a refused command makes no output folder either


def test_read_only_mlflow_store_is_refused_and_left_alone(cli):
    db = cli.out / "mlflow.db"
    sqlite3.connect(db).execute("CREATE TABLE experiments (x)").connection.close()
    before = db.read_bytes()
    db.chmod(0o444)
    refused(cli(), cli.out, "tracking.uri=sqlite:///", "read-only", store_readable=False)
    assert db.read_bytes() == before


def test_foreign_sqlite_file_as_mlflow_store_is_refused(cli):
    db = cli.out / "mlflow.db"
    sqlite3.connect(db).execute("CREATE TABLE studies (x)").connection.close()
    before = db.read_bytes()
    refused(cli(), cli.out, "tracking.uri=sqlite:///", "not an MLflow store", store_readable=False)
    assert db.read_bytes() == before


def test_corrupt_optuna_store_is_refused_and_left_alone(cli):
    db = cli.out / "optuna" / "optuna.db"
    before = _random_bytes(db)
    refused(
        cli(*sweep(f"hydra.sweeper.storage=sqlite:///{db}")),
        cli.out,
        "hydra.sweeper.storage=sqlite:///",
        "not a SQLite database",
    )
    assert db.read_bytes() == before
    assert sorted(p.name for p in db.parent.iterdir()) == ["optuna.db"]  # not even a lock file


def test_unreachable_optuna_storage_hides_the_password(cli):
    url = f"postgresql://bob:{SECRET}@127.0.0.1:{free_port()}/optuna"
    line = refused(
        cli(*sweep(f"hydra.sweeper.storage={url}")),
        cli.out,
        "hydra.sweeper.storage=",
        "bob:***@127.0.0.1",
        "cannot be reached",
    )
    assert SECRET not in line


@pytest.fixture(scope="module")
def password_postgres():
    """A PostgreSQL server that checks passwords (scram-sha-256), unlike the trust-auth test server."""
    server = PostgresServer(require_bindir())
    pwfile = server.folder / "pw"
    pwfile.write_text(PASSWORD + "\n")
    os.chmod(pwfile, 0o644)
    server._run(
        "initdb",
        "-D",
        str(server.data),
        "-U",
        server.user,
        "-A",
        "scram-sha-256",
        f"--pwfile={pwfile}",
        "-E",
        "UTF8",
        "--no-sync",
    )
    opts = f"-c listen_addresses=127.0.0.1 -p {server.port} -k {server.folder} -c fsync=off"
    try:
        server._run("pg_ctl", "-D", str(server.data), "-l", str(server.log), "-o", opts, "-w", "-t", "60", "start")
        yield server
    finally:
        server.stop()


def test_wrong_password_for_optuna_storage(cli, password_postgres):
    good = password_postgres.url()
    bad = good.replace(f":{PASSWORD}@", f":{SECRET}@")
    line = refused(
        cli(*sweep(f"hydra.sweeper.storage={bad}")),
        cli.out,
        "hydra.sweeper.storage=",
        "postgres:***@127.0.0.1",
        "password",
    )
    assert SECRET not in line
    # the right password passes pre-flight: the same command then runs its trial
    res = cli(*sweep(f"hydra.sweeper.storage={good}", "hydra.sweeper.enqueue=[]"), epochs=1)
    assert res.returncode == 0, res.stderr[-2000:]


# ------------------------------------------------------------------------ sweeper checks before the parent
@pytest.mark.parametrize(
    "args, words",
    [
        (
            ["objective=[val_acc,val_gap]", "hydra.sweeper.direction=maximize"],
            ["hydra.sweeper.direction", "objective=['val_acc', 'val_gap']", "one direction per objective"],
        ),
        (["hydra.sweeper.sampler=grid"], ["hydra.sweeper.sampler=grid", "drop_prob=interval(0, 0.5)", "continuous"]),
        (["hydra.sweeper.enqueue=[{drop_prob:0.9}]"], ["hydra.sweeper.enqueue[0]", "drop_prob=0.9", "outside"]),
        (["hydra.sweeper.enqueue=[{dropout:0.1}]"], ["hydra.sweeper.enqueue[0]", "dropout", "drop_prob"]),
        (
            ["hydra.sweeper.storage=http://127.0.0.1/optuna"],
            ["hydra.sweeper.storage=http://127.0.0.1/optuna", "database"],
        ),
        (["+hydra.sweeper.trials=5"], ["hydra.sweeper.trials", "n_trials", "sampler"]),
        (["hydra.sweeper.seed=4294967296"], ["hydra.sweeper.seed=4294967296", "4294967295"]),
        (["hydra.sweeper.sampler=cmaes", "objective=[val_acc,val_gap]"], ["cmaes", "several objectives"]),
    ],
)
def test_sweeper_mistakes_stop_before_the_parent_run(cli, args, words):
    refused(cli(*sweep(*args)), cli.out, *words)


def test_nothing_to_search_stops_before_the_parent_run(cli):
    refused(cli("-m", "hydra/sweeper=optuna"), cli.out, "nothing to search")


@pytest.fixture
def search_dir(tmp_path):
    """A config folder added with hydra.searchpath, holding conf/search/<name>.yaml files a test writes."""
    folder = tmp_path / "extra_conf"
    (folder / "search").mkdir(parents=True)

    def write(name: str, body: str) -> str:
        (folder / "search" / f"{name}.yaml").write_text(
            "# @package _global_\ndefaults:\n  - override /hydra/sweeper: optuna\nhydra:\n  sweeper:\n"
            "    params:\n      drop_prob: interval(0, 0.5)\n" + body
        )
        return f"hydra.searchpath=[file://{folder}]"

    return write


@pytest.mark.parametrize(
    "body, words",
    [
        ("    max_failure_rate: lots\n", ["In 'search/bad'", "hydra.sweeper.max_failure_rate", "'lots'", "Float"]),
        ("    n_trials: many\n", ["In 'search/bad'", "hydra.sweeper.n_trials", "'many'", "Integer"]),
        ("    sampler: bayes\n", ["hydra.sweeper.sampler=bayes", "allowed", "tpe"]),  # the sweeper's check
    ],
)
def test_bad_value_in_a_search_file_names_its_cause(cli, search_dir, body, words):
    where = search_dir("bad", body)
    refused(cli("-m", where, "+search=bad"), cli.out, *words)


# ------------------------------------------------------------------------------- direction from meaning
def _study_directions(out) -> list[str]:
    import optuna

    study = optuna.load_study(study_name="dropout", storage=f"sqlite:///{out}/optuna.db")
    return [d.name for d in study.directions]


@pytest.mark.parametrize(
    "objective, expected",
    [
        ("val_loss", ["MINIMIZE"]),
        ("val_gap", ["MINIMIZE"]),
        ("[val_loss,val_acc]", ["MINIMIZE", "MAXIMIZE"]),
    ],
)
def test_direction_follows_the_objective(cli, objective, expected):
    res = cli(*sweep(f"objective={objective}", "hydra.sweeper.enqueue=[]"), epochs=1)
    assert res.returncode == 0, res.stderr[-2000:]
    assert _study_directions(cli.out) == expected


def test_a_typed_direction_is_an_explicit_override(cli):
    res = cli(*sweep("objective=val_loss", "hydra.sweeper.direction=maximize", "hydra.sweeper.enqueue=[]"), epochs=1)
    assert res.returncode == 0, res.stderr[-2000:]
    assert _study_directions(cli.out) == ["MAXIMIZE"]


def test_a_config_file_direction_that_contradicts_the_objective_is_refused(cli, search_dir):
    where = search_dir("maxloss", "    direction: maximize\n")
    refused(
        cli("-m", where, "+search=maxloss", "objective=val_loss"),
        cli.out,
        "hydra.sweeper.direction=maximize",
        "objective=val_loss",
        "minimize",
        "command line",
    )


# ------------------------------------------------------------------------------------------ data.root
def test_relative_data_root_without_download_creates_nothing(cli):
    name = f"no-such-data-{uuid.uuid4().hex[:8]}"
    before = set(cli.out.rglob("*"))
    res = cli(f"data.root={name}", "data.download=false")
    refused(res, cli.out, name, "data.download=false")
    assert not (ROOT / name).exists()
    assert set(cli.out.rglob("*")) == before
    assert (
        subprocess.run(
            ["git", "status", "--porcelain", "--ignored", "--", name], cwd=ROOT, capture_output=True, text=True
        ).stdout
        == ""
    )


def test_a_config_dir_of_ones_own_is_checked_like_the_projects(cli, tmp_path):
    """-cd/--config-dir adds the user's configs; pre-flight composes with them too (it used to skip them all)."""
    own = tmp_path / "myconf" / "experiment"
    own.mkdir(parents=True)
    (own / "mine.yaml").write_text("# @package _global_\ndrop_prob: 0.4\n")
    refused(
        cli("-m", "-cd", str(tmp_path / "myconf"), "+experiment=mine", "drop_prob=0.1,1.0"),
        cli.out,
        "drop_prob=1.0",
        "[0, 1)",
    )
    refused(
        cli("-m", f"--config-dir={tmp_path / 'nowhere'}", "drop_prob=0.1"), cli.out, "--config-dir=", "no such folder"
    )
    ok = cli("-cd", str(tmp_path / "myconf"), "+experiment=mine", epochs=1)
    assert ok.returncode == 0, ok.stderr[-2000:]
    _, runs = mlflow_runs(cli.out)
    assert [r.data.params["drop_prob"] for r in runs] == ["0.4"]


def test_sigterm_during_preflight_is_one_line_and_143(tiny_root, tmp_path):
    """Pre-flight runs before Hydra; a SIGTERM there (or while the interpreter imports) ends the program with one
    line and 143, never a traceback."""
    import signal
    import time

    from helpers.proc import end, start

    for delay in (0.3, 1.5, 3.0):
        out = tmp_path / f"d{delay}"
        out.mkdir()
        proc = start(["drop_prob=0,0.5"], out, tiny_root, epochs=1)
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        code = end(proc, timeout=60)
        log = (out / "cli.log").read_text()
        if code == 0:
            continue  # it got through pre-flight and the tiny grid before the signal: nothing to see
        assert code == 143, (delay, code, log[-2000:])
        assert "Traceback" not in log and "terminated (SIGTERM)" in log, (delay, log[-2000:])
