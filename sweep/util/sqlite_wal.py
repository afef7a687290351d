"""Local SQLite stores (runs/mlflow.db, runs/optuna.db) in write-ahead-log mode.

In SQLite's default journal mode a reader blocks writers: the MLflow UI, optuna-dashboard or a notebook
polling the file while a sweep runs can make the sweep's next write wait past SQLite's busy timeout and
fail with "database is locked". In WAL mode readers never block the writer. The mode is stored in the
file, so it is set once, when the sweep first opens it. (WAL needs a local filesystem; for a store on NFS
or shared by several machines use a database server: `tracking=server`.)
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def sqlite_path(url: str) -> Path | None:
    """The file of a `sqlite:///...` URL; None for an in-memory database or any other backend."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def use_wal(url: str) -> None:
    """Switch a local SQLite store to WAL mode (creating the file when missing); no-op for servers."""
    path = sqlite_path(url)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=30)
    try:
        if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            con.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError:
        pass  # busy: another process holds the file and is switching it (or has); nothing is lost in rollback mode
    finally:
        con.close()
