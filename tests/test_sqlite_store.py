"""Local SQLite stores: a reader (the MLflow UI, optuna-dashboard, a notebook) holding the file open in
the middle of a read must not make the sweep's writes fail with "database is locked"."""

import sqlite3
import time
from types import SimpleNamespace

import optuna

from sweep import record
from sweep.search.trial import open_storage


def _reader_mid_read(db):
    """A connection inside a read transaction (in rollback-journal mode this blocks every writer)."""
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("BEGIN")
    con.execute("SELECT count(*) FROM sqlite_master").fetchone()
    return con


def test_mlflow_store_writes_while_a_reader_holds_the_file(tmp_path):
    db = tmp_path / "mlflow.db"
    tracking = SimpleNamespace(uri=f"sqlite:///{db}", experiment="e", artifact_location=str(tmp_path / "art"))
    client, exp_id = record.connect(tracking)
    run_id = client.create_run(exp_id).info.run_id
    reader = _reader_mid_read(db)
    try:
        t0 = time.time()
        record.log_metrics(client, run_id, {"val_acc": 0.5}, step=1)
        assert time.time() - t0 < 3  # not waited out: SQLite's busy timeout is 5 s
    finally:
        reader.close()
    assert client.get_metric_history(run_id, "val_acc")[0].value == 0.5
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_optuna_storage_writes_while_a_reader_holds_the_file(tmp_path):
    db = tmp_path / "optuna.db"
    study = optuna.create_study(storage=open_storage(f"sqlite:///{db}"), study_name="s")
    reader = _reader_mid_read(db)
    try:
        t0 = time.time()
        study.tell(study.ask(), 1.0)
        assert time.time() - t0 < 3
    finally:
        reader.close()
    assert study.best_value == 1.0
