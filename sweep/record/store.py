"""Reaching and setting up an MLflow store, once per process: a reachability probe, the tables created once
whatever the number of workers (under a lock every worker takes, sweep/util/dblock.py), WAL mode for SQLite,
the experiment, and the clean-up of runs dead processes left RUNNING. `connect` does all of it the first time a
process meets a store and experiment; every later call (the next job of a grid, grid resume) only opens a
client. A SQLite file that was deleted or replaced since is set up again."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient

from sweep.record.ending import close_stale_runs
from sweep.util.dblock import db_lock, lockable
from sweep.util.redact import first_line, redact
from sweep.util.sqlite_wal import sqlite_path, use_wal


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message shows the URI without its password."""


def check_reachable(uri: str) -> None:
    """Fail fast, before any training, when the store cannot be reached or written."""
    if uri.startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(uri)  # credentials, if any, go in a header, never in the URL we print
        health = parts._replace(
            netloc=parts.hostname + (f":{parts.port}" if parts.port else ""), path=parts.path.rstrip("/") + "/health"
        ).geturl()
        try:
            urllib.request.urlopen(health, timeout=10).read()
        except Exception as e:  # noqa: BLE001 - any failure means the same thing to the user
            raise TrackingError(
                f"tracking.uri={redact(uri)} does not answer ({type(e).__name__}: {redact(str(e))}); "
                "start the server or fix tracking.uri"
            ) from None
    elif uri.startswith("sqlite:///"):
        check_writable("tracking.uri", Path(uri.removeprefix("sqlite:///")).parent, shown=redact(uri))
    elif "://" in uri and not uri.startswith(("file:", "databricks")):  # a database: postgresql://, mysql://
        import sqlalchemy

        try:
            engine = sqlalchemy.create_engine(
                uri, connect_args={"connect_timeout": 10} if uri.startswith("postgres") else {}
            )
            with engine.connect():
                pass
            engine.dispose()
        except Exception as e:  # noqa: BLE001
            raise TrackingError(
                f"tracking.uri={redact(uri)} cannot be reached ({type(e).__name__}: "
                f"{first_line(e, default='')}); check the server, user and password"
            ) from None


def check_writable(key: str, folder: Path, shown: str | None = None) -> None:
    """Create `folder` if needed and prove we can write there, or fail with one line."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_probe_", dir=folder)  # unique: threads may probe at once
        try:
            os.write(fd, b"\0" * 65536)  # bytes, not only a name: a full disk still creates empty files
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise TrackingError(
            f"{key}={shown or folder}: cannot write to {folder} ({e.strerror or e}); choose a writable folder"
        ) from None


def check_artifact_location(tracking) -> None:
    """Pre-flight: a local `tracking.artifact_location` (a path or file: URI) must exist or be creatable, and
    take a write of real bytes (a full disk still creates empty files). Remote locations are the server's."""
    location = tracking.artifact_location
    if not location:
        return
    if location.startswith("file:"):
        location = urllib.parse.unquote(urllib.parse.urlsplit(location).path)
    elif "://" in location:
        return
    check_writable("tracking.artifact_location", Path(location), shown=location)


SCHEMA_LOCK = "mlflow-schema"
_READY: set[str] = set()  # stores whose tables this process has seen complete


def open_store(uri: str) -> MlflowClient:
    """A client on `uri` whose tables exist. MLflow creates a database store's tables at first use, and
    several workers doing that at once break it (duplicate tables, orphaned runs): here it happens once, under
    a lock every worker takes (sweep/util/dblock.py). A new SQLite store is built in a temporary file and renamed
    into place, so a full disk or a kill cannot leave half a schema; a half-made database (set up by something
    else) is refused with one line and left untouched."""
    if uri in _READY or not lockable(uri):
        return MlflowClient(tracking_uri=uri)
    try:
        with db_lock(uri, SCHEMA_LOCK):
            path = sqlite_path(uri)
            if path is not None and _tables(uri) == set():
                _build_sqlite_store(uri, path)
            else:
                _refuse_half_made(uri)
            use_wal(uri)  # the MLflow UI reading the file must not block this run's writes
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)  # the store checks (or creates) its tables here
    except TrackingError:
        raise
    except Exception as e:  # noqa: BLE001
        raise TrackingError(
            f"tracking.uri={redact(uri)} cannot be used: {type(e).__name__}: {first_line(e, default='')}"
        ) from None
    _READY.add(uri)
    return client


def _tables(uri: str) -> set[str]:
    """The tables of `uri`, without Alembic's bookkeeping ones (a missing SQLite file has none)."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    path = sqlite_path(uri)
    if path is not None and (not path.exists() or path.stat().st_size == 0):
        return set()
    engine = sqlalchemy.create_engine(uri, poolclass=NullPool)
    try:
        return {t for t in sqlalchemy.inspect(engine).get_table_names() if not t.startswith("alembic_")}
    finally:
        engine.dispose()


def _refuse_half_made(uri: str) -> None:
    """Some of MLflow's tables but not all: an earlier set-up was cut off (full disk, kill). MLflow would
    re-run its migrations over them and fail for good (`duplicate column name`); stop before touching it."""
    import mlflow.store.tracking.dbmodels.models  # noqa: F401  (registers the tables in Base.metadata)
    from mlflow.store.db.base_sql_model import Base

    have = _tables(uri)
    want = set(Base.metadata.tables)
    if have and not want <= have:
        raise TrackingError(
            f"tracking.uri={redact(uri)} holds a half-made MLflow schema ({len(have & want)} of "
            f"{len(want)} tables: its set-up was cut off, e.g. by a full disk); it was left as it "
            "is: restore it from a backup, or point tracking.uri at a new database"
        )


def _build_sqlite_store(uri: str, path: Path) -> None:
    """Create MLflow's tables in a temporary file beside `path` (in a child process, so no connection to it
    stays open here), then rename it into place: the store appears whole or not at all."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from mlflow.tracking import MlflowClient; "
                "MlflowClient(tracking_uri='sqlite:///' + sys.argv[1]).search_experiments(max_results=1)",
                str(tmp),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        )
        if out.returncode != 0:
            lines = [x for x in redact(out.stderr).strip().splitlines() if x.strip()]
            raise TrackingError(
                f"tracking.uri={redact(uri)}: could not create the MLflow tables in {path.parent} "
                f"({lines[-1] if lines else f'exit {out.returncode}'}); nothing was written there"
            )
        use_wal(f"sqlite:///{tmp}")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
            with contextlib.suppress(OSError):
                leftover.unlink()


_CONNECTED: dict[tuple[str, str], tuple[MlflowClient, str, tuple[int, int] | None]] = {}


def _file_identity(uri: str) -> tuple[int, int] | None:
    """A SQLite store's device and inode (None for a server, another database or a missing file)."""
    path = sqlite_path(uri)
    try:
        st = path.stat() if path is not None else None
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if st is not None else None


def connect(tracking) -> tuple[MlflowClient, str]:
    """Client and experiment id. The first call of a process for a store and experiment sets them up (`_set_up`);
    later calls return the same client at once, unless the SQLite file was deleted or replaced meanwhile."""
    key = (tracking.uri, tracking.experiment)
    known = _CONNECTED.get(key)
    if known is not None:
        client, experiment_id, identity = known
        if identity == _file_identity(tracking.uri):
            return client, experiment_id
        _READY.discard(tracking.uri)  # a new file: its tables are made or checked again
    client, experiment_id = _set_up(tracking)
    _CONNECTED[key] = (client, experiment_id, _file_identity(tracking.uri))
    return client, experiment_id


def _set_up(tracking) -> tuple[MlflowClient, str]:
    """Reach the store, make its tables, make the experiment (with its artifact root) or end the runs dead
    processes left RUNNING in it: each once whatever the number of workers starting together."""
    check_reachable(tracking.uri)
    client = open_store(tracking.uri)
    try:
        exp = client.get_experiment_by_name(tracking.experiment)
        if exp is not None:
            close_stale_runs(client, exp.experiment_id)
            return client, exp.experiment_id
        location = tracking.artifact_location
        if location and "://" not in location:
            Path(location).mkdir(parents=True, exist_ok=True)
            location = Path(location).resolve().as_uri()
        with (
            db_lock(tracking.uri, f"experiment:{tracking.experiment}")
            if lockable(tracking.uri)
            else contextlib.nullcontext()
        ):
            exp = client.get_experiment_by_name(tracking.experiment)  # created meanwhile by a parallel worker?
            if exp is not None:
                return client, exp.experiment_id
            try:
                return client, client.create_experiment(tracking.experiment, artifact_location=location or None)
            except Exception:  # created meanwhile by a worker that reached no lock (an MLflow server)
                exp = client.get_experiment_by_name(tracking.experiment)
                if exp is None:
                    raise
                return client, exp.experiment_id
    except TrackingError:
        raise
    except Exception as e:  # noqa: BLE001
        raise TrackingError(
            f"tracking.uri={redact(tracking.uri)} cannot be used: {type(e).__name__}: {first_line(e, default='')}"
        ) from None
