"""A named lock shared by every process that uses one database: how parallel workers agree.

PostgreSQL: a session advisory lock (the server drops it if the process dies); MySQL: GET_LOCK;
SQLite: an flock on a file beside the database (the kernel drops it if the process dies). Used to
create an MLflow store's tables once (sweep/record/store.py), for the shared MLflow parent run of a sweep
(sweep/parent.py) and for counting-then-asking Optuna trials (sweep/search/loop.py).

A holder that is alive but stuck (a worker stopped with SIGSTOP or Ctrl-Z, a hung NFS mount) keeps its
lock: a waiter logs a line naming the lock after `NOTICE_AFTER` s and gives up with `LockTimeout` (one
line) after `timeout` s, by default `LOCK_TIMEOUT` = 300 s or the environment's DROPOUT_LOCK_TIMEOUT.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Callable, Iterator

from sweep.util.redact import redact

LOCKABLE = ("sqlite", "postgresql", "mysql", "mariadb")
NOTICE_AFTER = 5.0  # seconds of waiting before the log says who we wait for
POLL = 0.05

log = logging.getLogger("sweep")


class LockTimeout(TimeoutError):
    """The lock stayed held by another process for the whole timeout; the message is one line."""


def lock_timeout() -> float:
    """The default wait: DROPOUT_LOCK_TIMEOUT seconds when set, else 300."""
    try:
        return float(os.environ.get("DROPOUT_LOCK_TIMEOUT", "") or 300)
    except ValueError:
        return 300.0


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


def _wait(try_once: Callable[[], bool], what: str, timeout: float | None) -> None:
    """Call `try_once` until it takes the lock; log once after NOTICE_AFTER s, raise LockTimeout after `timeout`."""
    started = time.monotonic()
    noticed = False
    while not try_once():
        waited = time.monotonic() - started
        if timeout is not None and waited >= timeout:
            raise LockTimeout(
                f"gave up after waiting {timeout:g} s for {what}: another process holds it "
                "(stopped, hung or very slow); end or resume that process, or raise "
                "DROPOUT_LOCK_TIMEOUT"
            ) from None
        if not noticed and waited >= NOTICE_AFTER:
            log.warning(
                "waiting for %s, held by another process (giving up after %s)",
                what,
                "never" if timeout is None else f"{timeout:g} s",
            )
            noticed = True
        time.sleep(POLL)


@contextlib.contextmanager
def db_lock(url: str, name: str, timeout: float | None = -1) -> Iterator[None]:
    """Hold the lock `name` on database `url`; raise LockTimeout after `timeout` s (default `lock_timeout()`,
    None: wait forever)."""
    import sqlalchemy

    if timeout == -1:
        timeout = lock_timeout()
    if not lockable(url):
        raise ValueError("this database cannot hold a lock shared between processes")
    u = sqlalchemy.engine.make_url(url)
    backend = u.get_backend_name()
    key = int.from_bytes(hashlib.sha256(f"dropout-sweep:{name}".encode()).digest()[:8], "big", signed=True)
    if backend == "sqlite":
        with _file_lock(Path(f"{u.database}.{key & 0xFFFFFFFF:08x}.lock"), f"the lock '{name}'", timeout):
            yield
        return
    from sqlalchemy.pool import NullPool

    what = f"the lock '{name}' on {redact(url)}"
    connect_args = {"connect_timeout": 10} if backend == "postgresql" else {}
    engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            if backend == "postgresql":

                def take() -> bool:
                    got = conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
                    conn.commit()
                    return bool(got)

                _wait(take, what, timeout)
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
            else:
                lock = f"dropout-sweep-{key}"
                _wait(
                    lambda: conn.execute(sqlalchemy.text("SELECT GET_LOCK(:n, 1)"), {"n": lock}).scalar() == 1,
                    what,
                    timeout,
                )
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:n)"), {"n": lock})
    finally:
        engine.dispose()


@contextlib.contextmanager
def _file_lock(path: Path, name: str, timeout: float | None) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:

        def take() -> bool:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False

        _wait(take, f"{name} (file {path})", timeout)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
