"""MLflow recording through an explicit `MlflowClient` (no fluent global state, so several jobs
in one process, or a parent and its children, never step on each other's active run).

`job_run` is a job's whole MLflow lifecycle: connect, start, then FINISHED, FAILED (with an `error`
tag) or KILLED (Ctrl-C) whatever happens inside it, including a write that fails. With tracking off it
yields a `Run` whose writes do nothing, so the job has one code path. The rest: reachability checks,
stale-run cleanup, and the parent-run file jobs read to find their parent.
"""
from __future__ import annotations

import contextlib
import functools
import os
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import json

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunStatus
from mlflow.tracking import MlflowClient

from sweep import procid
from sweep.config import PROJECT_ROOT
from sweep.redact import learn, redact, redact_obj
from sweep.sqlite_wal import use_wal

PARENT_FILE = "mlflow_parent.json"  # in the sweep folder: how jobs (any launcher) find their parent run


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message shows the URI without its password."""


def check_reachable(uri: str) -> None:
    """Fail fast, before any training, when the store cannot be reached or written."""
    if uri.startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(uri)  # credentials, if any, go in a header, never in the URL we print
        health = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""),
                                path=parts.path.rstrip("/") + "/health").geturl()
        try:
            urllib.request.urlopen(health, timeout=10).read()
        except Exception as e:  # noqa: BLE001 - any failure means the same thing to the user
            raise TrackingError(f"tracking.uri={redact(uri)} does not answer ({type(e).__name__}: {redact(str(e))}); "
                                "start the server or fix tracking.uri") from None
    elif uri.startswith("sqlite:///"):
        check_writable("tracking.uri", Path(uri.removeprefix("sqlite:///")).parent, shown=redact(uri))
    elif "://" in uri and not uri.startswith(("file:", "databricks")):  # a database: postgresql://, mysql://
        import sqlalchemy

        try:
            engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": 10} if uri.startswith("postgres") else {})
            with engine.connect():
                pass
            engine.dispose()
        except Exception as e:  # noqa: BLE001
            first = redact(str(getattr(e, "orig", e) or e)).strip().splitlines()
            raise TrackingError(f"tracking.uri={redact(uri)} cannot be reached ({type(e).__name__}: "
                                f"{first[0] if first else ''}); check the server, user and password") from None


def check_writable(key: str, folder: Path, shown: str | None = None) -> None:
    """Create `folder` if needed and prove we can write there, or fail with one line."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_probe_", dir=folder)  # unique: threads may probe at once
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise TrackingError(f"{key}={shown or folder}: cannot write to {folder} ({e.strerror or e}); "
                            "choose a writable folder") from None


def connect(tracking) -> tuple[MlflowClient, str]:
    """Client and experiment id; creates the experiment (with its artifact root) on first use."""
    check_reachable(tracking.uri)
    use_wal(tracking.uri)  # the MLflow UI reading the file must not block this run's writes
    client = MlflowClient(tracking_uri=tracking.uri)
    try:
        exp = client.get_experiment_by_name(tracking.experiment)
        if exp is not None:
            close_stale_runs(client, exp.experiment_id)
            return client, exp.experiment_id
        location = tracking.artifact_location
        if location and "://" not in location:
            Path(location).mkdir(parents=True, exist_ok=True)
            location = Path(location).resolve().as_uri()
        try:
            return client, client.create_experiment(tracking.experiment, artifact_location=location or None)
        except Exception:  # created meanwhile by a parallel worker
            exp = client.get_experiment_by_name(tracking.experiment)
            if exp is None:
                raise
            return client, exp.experiment_id
    except TrackingError:
        raise
    except Exception as e:  # noqa: BLE001
        raise TrackingError(f"tracking.uri={redact(tracking.uri)} cannot be used: {type(e).__name__}: "
                            f"{redact(str(e)).splitlines()[0] if str(e) else ''}") from None


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
        client.log_batch(run_id, params=items[i:i + 100])


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int) -> None:
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


MAX_BATCH_METRICS = 1000  # MLflow's limit on the metrics of one log_batch call


def log_steps(client: MlflowClient, run_id: str, rows: dict[int, dict[str, float]]) -> None:
    """Many steps' metrics (step -> {name: value}, e.g. a curve) in as few log_batch calls as MLflow allows."""
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, step) for step, m in rows.items() for k, v in m.items()]
    for i in range(0, len(metrics), MAX_BATCH_METRICS):
        client.log_batch(run_id, metrics=metrics[i:i + MAX_BATCH_METRICS])


def log_text(client: MlflowClient, run_id: str, text: str, path: str) -> None:
    client.log_text(run_id, redact(text), path)


DATASET_CONTEXT = "mlflow.data.context"  # the input tag `mlflow.log_input(..., context=)` writes and the UI shows


def dataset_inputs(records) -> list[DatasetInput]:
    """data.load.SplitRecord -> MLflow dataset inputs: name and digest, the raw files' SHA-256s as the
    source, sizes and split seed as the profile, the split's use as context (the UI's Dataset column)."""
    return [DatasetInput(Dataset(name=r.name, digest=r.digest, source_type="local", source=json.dumps(r.source),
                                 profile=json.dumps(r.profile)),
                         tags=[InputTag(DATASET_CONTEXT, r.context)]) for r in records]


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


def start_run(client: MlflowClient, experiment_id: str, name: str, tags: dict[str, Any],
              parent_run_id: str | None = None):
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
    for r in client.search_runs([experiment_id], f"attributes.status = 'RUNNING' and tags.host = '{host}'",
                                max_results=1000):
        pid = r.data.tags.get("pid", "")
        if procid.gone(r.data.tags):
            terminate(client, r.info.run_id, "KILLED", error=f"process {pid} on {host} died while the run was in progress")
            stale.append(r.info.run_id)
    return stale


def write_parent(sweep_dir: str | Path, run_id: str, sweep_id: str) -> None:
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    (Path(sweep_dir) / PARENT_FILE).write_text(json.dumps({"run_id": run_id, "sweep_id": sweep_id}))


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
    client, experiment_id = connect(tracking)
    parent_id, sweep_id = find_parent(sweep_dir)
    run = Run(client, start_run(client, experiment_id, name, {"sweep_id": tracking.sweep_id or sweep_id, **tags},
                                parent_run_id=parent_id).info.run_id)
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
        terminate(client, run.id, status, error)


def status_name(status: int) -> str:
    return RunStatus.to_string(status)


__all__ = ["Run", "job_run", "connect", "start_run", "log_metrics", "log_steps", "log_text", "set_tags", "terminate",
           "params_from_config",
           "find_parent", "write_parent", "log_params", "TrackingError", "PARENT_FILE", "redact_obj", "git_commit", "status_name"]
