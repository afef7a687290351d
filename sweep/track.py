"""MLflow recording through an explicit `MlflowClient` (no fluent global state, so several jobs
in one process, or a parent and its children, never step on each other's active run).

`job_run` is a job's whole MLflow lifecycle: connect, start, then FINISHED, FAILED (with an `error`
tag) or KILLED (Ctrl-C) whatever happens inside it, including a write that fails. With tracking off it
yields a `Run` whose writes do nothing, so the job has one code path. The rest: reachability and
artifact-location checks, opening a store (its tables created once, whatever the number of workers:
`open_store`), stale-run cleanup, a FAILED run for a job that died before its own run began, and the
parent-run file jobs read to find their parent.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunStatus
from mlflow.tracking import MlflowClient

from sweep import atomic, procid
from sweep.dblock import db_lock, lockable
from sweep.paths import PROJECT_ROOT
from sweep.redact import learn, redact, redact_obj
from sweep.sqlite_wal import sqlite_path, use_wal

PARENT_FILE = "mlflow_parent.json"  # in the sweep folder: how jobs (any launcher) find their parent run


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message shows the URI without its password."""


class TrackingLost(BaseException):
    """The store stopped answering during a sweep, after MLflow's own HTTP retries. Not an
    Exception on purpose: Hydra records a job's Exception and starts the next point, which would meet the
    same dead server and leave no record; this one stops the sweep, as Ctrl-C does (sweep/run.py)."""

    def __init__(self, message: str, uri: str, sweep_dir: str | Path | None) -> None:
        super().__init__(message)
        self.uri, self.sweep_dir = uri, sweep_dir


WAIT_ENV = "DROPOUT_TRACKING_WAIT_SECONDS"  # how long a stopped sweep waits for the store to end its runs
_UNENDED: list[tuple[str, str, str, str | None]] = []  # (uri, run id, status, error): runs the store could not end


def _lost(tracking, what: str, e: BaseException | None, sweep_dir) -> TrackingLost | None:
    """A TrackingLost when the store does not answer now, else None (the failure was something else)."""
    try:
        check_reachable(tracking.uri)
        return None
    except TrackingError:
        pass
    why = redact(str(e)).strip().splitlines()[0][:300] if e is not None and str(e).strip() else type(e).__name__
    return TrackingLost(
        f"tracking.uri={redact(tracking.uri)} stopped answering {what} ({why})", tracking.uri, sweep_dir
    )


def end_unended(wait: float | None = None) -> list[str]:
    """End the runs the store could not end when it stopped answering, retrying for `wait` seconds
    (default: the environment's DROPOUT_TRACKING_WAIT_SECONDS, else 60); the ids still not ended."""
    if wait is None:
        try:
            wait = float(os.environ.get(WAIT_ENV, 60))
        except ValueError:
            wait = 60.0
    deadline = time.monotonic() + wait
    if _UNENDED:
        print(
            f"waiting up to {wait:g} s for tracking.uri={redact(_UNENDED[0][0])} to answer, to end the runs "
            f"it left RUNNING ({WAIT_ENV})",
            file=sys.stderr,
            flush=True,
        )
    while _UNENDED:
        uri, run_id, status, error = _UNENDED[0]
        try:
            check_reachable(uri)
            terminate(MlflowClient(tracking_uri=uri), run_id, status, error)
            _UNENDED.pop(0)
        except Exception:  # noqa: BLE001 - still down: wait and try again
            if time.monotonic() > deadline:
                break
            time.sleep(2)
    return [run_id for _, run_id, _, _ in _UNENDED]


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
            first = redact(str(getattr(e, "orig", e) or e)).strip().splitlines()
            raise TrackingError(
                f"tracking.uri={redact(uri)} cannot be reached ({type(e).__name__}: "
                f"{first[0] if first else ''}); check the server, user and password"
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
    a lock every worker takes (sweep/dblock.py). A new SQLite store is built in a temporary file and renamed
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
            f"tracking.uri={redact(uri)} cannot be used: {type(e).__name__}: {_first_line(e)}"
        ) from None
    _READY.add(uri)
    return client


def _first_line(e: BaseException) -> str:
    lines = redact(str(getattr(e, "orig", None) or e)).strip().splitlines()
    return lines[0] if lines else ""


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


def connect(tracking) -> tuple[MlflowClient, str]:
    """Client and experiment id; creates the store's tables and the experiment (with its artifact root) on
    first use, each once whatever the number of workers starting together."""
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
            f"tracking.uri={redact(tracking.uri)} cannot be used: {type(e).__name__}: {_first_line(e)}"
        ) from None


@functools.cache
def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for i, x in enumerate(v):
                out.update(flatten(x, f"{key}.{i}."))
        else:
            out[key] = v
    return out


def params_from_config(cfg: dict) -> dict[str, str]:
    """The flattened effective config; credentials masked, Optuna plumbing left out."""
    learn(cfg)  # its passwords are masked everywhere from now on, not only in these params
    flat = flatten({k: v for k, v in cfg.items() if k != "optuna"})
    return {k: redact(str(v)) for k, v in flat.items()}


def log_params(client: MlflowClient, run_id: str, params: dict[str, str]) -> None:
    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
        client.log_batch(run_id, params=items[i : i + 100])


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int) -> None:
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


MAX_BATCH_METRICS = 1000  # MLflow's limit on the metrics of one log_batch call


def log_steps(client: MlflowClient, run_id: str, rows: dict[int, dict[str, float]]) -> None:
    """Many steps' metrics (step -> {name: value}, e.g. a curve) in as few log_batch calls as MLflow allows."""
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, step) for step, m in rows.items() for k, v in m.items()]
    for i in range(0, len(metrics), MAX_BATCH_METRICS):
        client.log_batch(run_id, metrics=metrics[i : i + MAX_BATCH_METRICS])


def log_text(client: MlflowClient, run_id: str, text: str, path: str) -> None:
    client.log_text(run_id, redact(text), path)


DATASET_CONTEXT = "mlflow.data.context"  # the input tag `mlflow.log_input(..., context=)` writes and the UI shows


def dataset_inputs(records) -> list[DatasetInput]:
    """data.load.SplitRecord -> MLflow dataset inputs: name and digest, the raw files' SHA-256s as the
    source, sizes and split seed as the profile, the split's use as context (the UI's Dataset column)."""
    return [
        DatasetInput(
            Dataset(
                name=r.name,
                digest=r.digest,
                source_type="local",
                source=redact(json.dumps(r.source)),
                profile=redact(json.dumps(r.profile)),
            ),
            tags=[InputTag(DATASET_CONTEXT, r.context)],
        )
        for r in records
    ]


TAG_LIMIT = 5000  # MLflow refuses longer tag values (8000 on its server); an error text can be longer


def set_tags(client: MlflowClient, run_id: str, tags: dict[str, Any]) -> None:
    for k, v in tags.items():
        if v is not None:
            client.set_tag(run_id, k, redact(str(v))[:TAG_LIMIT])


def terminate(client: MlflowClient, run_id: str, status: str, error: str | None = None) -> None:
    """End a run with `status`; `error` (redacted, truncated) says why it did not finish.
    The run ends even when the tag cannot be written."""
    try:
        if error:
            set_tags(client, run_id, {"error": error})
    finally:
        client.set_terminated(run_id, status=status)


def start_run(
    client: MlflowClient, experiment_id: str, name: str, tags: dict[str, Any], parent_run_id: str | None = None
):
    tags = {k: redact(str(v)) for k, v in tags.items() if v is not None}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    if git_commit():
        tags["mlflow.source.git.commit"] = git_commit()
    tags.update(host=socket.gethostname(), **procid.tags())  # lets a later start-up spot a dead process
    return client.create_run(experiment_id, run_name=redact(name), tags=tags)


def close_stale_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """Runs left RUNNING by a process of this host that no longer exists (kill -9, power loss) end KILLED;
    a reused PID does not pass for the run's process (sweep/procid.py)."""
    host = socket.gethostname()
    stale = []
    for r in client.search_runs(
        [experiment_id], f"attributes.status = 'RUNNING' and tags.host = '{host}'", max_results=1000
    ):
        pid = r.data.tags.get("pid", "")
        if procid.gone(r.data.tags):
            terminate(
                client, r.info.run_id, "KILLED", error=f"process {pid} on {host} died while the run was in progress"
            )
            stale.append(r.info.run_id)
    return stale


def write_parent(sweep_dir: str | Path, run_id: str, sweep_id: str) -> None:
    atomic.write_text(Path(sweep_dir) / PARENT_FILE, json.dumps({"run_id": run_id, "sweep_id": sweep_id}))


def find_parent(sweep_dir: str | Path | None) -> tuple[str | None, str | None]:
    """(parent run id, sweep id) written by the multirun callback, or (None, None)."""
    path = Path(sweep_dir) / PARENT_FILE if sweep_dir else None
    if path is None or not path.exists():
        return None, None
    info = json.loads(path.read_text())
    return info["run_id"], info["sweep_id"]


class Run:
    """One job's MLflow run, as `job_run` yields it. Without a client (tracking off) every write does nothing."""

    def __init__(self, client: MlflowClient | None = None, run_id: str | None = None):
        self.client, self.id = client, run_id
        self.error: str | None = None  # set by `fail`: the run ends FAILED although the job returns

    def log_params(self, params: dict[str, str]) -> None:
        if self.client:
            log_params(self.client, self.id, params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.client:
            log_metrics(self.client, self.id, metrics, step)

    def log_steps(self, rows: dict[int, dict[str, float]]) -> None:
        if self.client:
            log_steps(self.client, self.id, rows)

    def log_inputs(self, records) -> None:
        """What the run trained, validated and tested on (data.load.SplitRecord list)."""
        if self.client and records:
            self.client.log_inputs(self.id, datasets=dataset_inputs(records))

    def log_text(self, text: str, path: str) -> None:
        if self.client:
            log_text(self.client, self.id, text, path)

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.client:
            set_tags(self.client, self.id, tags)

    def fail(self, error: str, **tags: Any) -> None:
        """End FAILED with `error` (and `tags`) when the block ends, without raising: the sweep goes on."""
        self.error = error
        self.set_tags({"error": error, **tags})

    @contextlib.contextmanager
    def timed(self, key: str) -> Iterator[None]:
        """Log the block's wall time as metric `key` (step 0), also when it raises. When it raised, a failure
        to write the metric is not allowed to replace the block's own error."""
        started = time.time()
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                self.log_metrics({key: time.time() - started}, step=0)
            raise
        self.log_metrics({key: time.time() - started}, step=0)


@contextlib.contextmanager
def job_run(tracking, name: str, tags: dict[str, Any], sweep_dir: str | Path | None = None) -> Iterator[Run]:
    """A job's MLflow run from start to end; a no-op `Run` when `tracking.enabled` is false.

    Inside the block the run is RUNNING. It ends KILLED on KeyboardInterrupt, FAILED with tag
    `error=<Type>: <message>` on any other exception (a failed write included), FAILED with the reason
    given to `Run.fail`, else FINISHED. Child of the sweep's parent run when `sweep_dir` has one; tag
    `sweep_id` is `tracking.sweep_id`, else the parent's. `connect` errors (TrackingError) come before any run.
    """
    if not tracking.enabled:
        yield Run()
        return
    global _STARTED
    try:
        client, experiment_id = connect(tracking)
    except TrackingError as e:  # pre-flight reached it before the sweep began: in a sweep, the store went away
        if sweep_dir is None:
            raise
        raise TrackingLost(str(e), tracking.uri, sweep_dir) from None
    parent_id, sweep_id = find_parent(sweep_dir)
    try:
        run = Run(
            client,
            start_run(
                client,
                experiment_id,
                name,
                {"sweep_id": tracking.sweep_id or sweep_id, **tags},
                parent_run_id=parent_id,
            ).info.run_id,
        )
    except Exception as e:
        raise (_lost(tracking, "before the run could start", e, sweep_dir) or e) from None
    _STARTED += 1
    status, error = "FAILED", None
    try:
        yield run
        status = "FAILED" if run.error else "FINISHED"  # `fail` already wrote its tag
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException as e:
        error = f"{type(e).__name__}: {e}"
        raise
    finally:  # a run is never left RUNNING, whatever failed inside
        try:
            terminate(client, run.id, status, error)
        except Exception as e:
            lost = _lost(tracking, f"during run {run.id}", e, sweep_dir)
            if lost is None:  # it answers again: end the run now (what was raising goes on)
                terminate(client, run.id, status, error)
            else:  # ended with the reason once the store answers (sweep/run.py), else KILLED by the next start-up
                _UNENDED.append(
                    (
                        tracking.uri,
                        run.id,
                        status if status != "FINISHED" else "FAILED",
                        error or f"TrackingLost: {lost}",
                    )
                )
                if status != "KILLED":  # an interrupt stays an interrupt
                    raise lost from None


_STARTED = 0  # runs `job_run` started in this process


def runs_started() -> int:
    """How many job runs this process started: a job that raised without starting one is seen by comparing."""
    return _STARTED


def record_failed_run(
    tracking,
    name: str,
    tags: dict[str, Any],
    sweep_dir: str | Path | None,
    error: str,
    params: dict[str, str] | None = None,
) -> str:
    """A FAILED run for a job that raised before `job_run` began (e.g. out of memory building its model), child
    of the sweep's parent like the job's own run would have been; returns its id."""
    client, experiment_id = connect(tracking)
    parent_id, sweep_id = find_parent(sweep_dir)
    run_id = start_run(
        client, experiment_id, name, {"sweep_id": tracking.sweep_id or sweep_id, **tags}, parent_run_id=parent_id
    ).info.run_id
    try:
        log_params(client, run_id, params or {})
    finally:
        terminate(client, run_id, "FAILED", error)
    return run_id


def status_name(status: int) -> str:
    return RunStatus.to_string(status)


__all__ = [
    "Run",
    "job_run",
    "TrackingLost",
    "end_unended",
    "connect",
    "open_store",
    "check_artifact_location",
    "record_failed_run",
    "runs_started",
    "start_run",
    "log_metrics",
    "log_steps",
    "log_text",
    "set_tags",
    "terminate",
    "params_from_config",
    "find_parent",
    "write_parent",
    "log_params",
    "TrackingError",
    "PARENT_FILE",
    "redact_obj",
    "git_commit",
    "status_name",
]
