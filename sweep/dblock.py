"""A named lock shared by every process that uses one database: how parallel workers agree.

PostgreSQL: a session advisory lock (the server drops it if the process dies); MySQL: GET_LOCK;
SQLite: an flock on a file beside the database. Used for the shared MLflow parent run of a sweep
(sweep/parent.py) and for counting-then-asking Optuna trials (sweep/search/loop.py).
"""
from __future__ import annotations

import contextlib
import hashlib
import time
from pathlib import Path
from typing import Iterator

LOCKABLE = ("sqlite", "postgresql", "mysql", "mariadb")


def lockable(url: str) -> bool:
    """True when `db_lock` can lock this database URL (a file or server database, not in-memory SQLite)."""
    import sqlalchemy

    try:
        u = sqlalchemy.engine.make_url(url)
    except Exception:  # noqa: BLE001 - not a database URL
        return False
    backend = u.get_backend_name()
    if backend == "sqlite":
        return bool(u.database) and u.database != ":memory:"
    return backend in LOCKABLE


@contextlib.contextmanager
def db_lock(url: str, name: str, timeout: float | None = 60) -> Iterator[None]:
    """Hold the lock `name` on database `url`; raise TimeoutError after `timeout` s (None: wait forever)."""
    import sqlalchemy

    if not lockable(url):
        raise ValueError("this database cannot hold a lock shared between processes")
    u = sqlalchemy.engine.make_url(url)
    backend = u.get_backend_name()
    key = int.from_bytes(hashlib.sha256(f"dropout-sweep:{name}".encode()).digest()[:8], "big", signed=True)
    if backend == "sqlite":
        with _file_lock(Path(f"{u.database}.{key & 0xFFFFFFFF:08x}.lock"), timeout):
            yield
        return
    from sqlalchemy.pool import NullPool

    connect_args = {"connect_timeout": 10} if backend == "postgresql" else {}
    engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            if backend == "postgresql":
                conn.execute(sqlalchemy.text(f"SET lock_timeout = {int((timeout or 0) * 1000)}"))
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                conn.commit()
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
            else:
                lock = f"dropout-sweep-{key}"
                got = conn.execute(sqlalchemy.text("SELECT GET_LOCK(:n, :t)"),
                                   {"n": lock, "t": -1 if timeout is None else int(timeout)}).scalar()
                if got != 1:
                    raise TimeoutError(f"GET_LOCK({lock}) failed")
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:n)"), {"n": lock})
    finally:
        engine.dispose()


@contextlib.contextmanager
def _file_lock(path: Path, timeout: float | None) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"{path} stayed locked for {timeout:g} s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
