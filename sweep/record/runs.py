"""A job's MLflow run through an explicit `MlflowClient` (no fluent global state, so several jobs in one
process, or a parent and its children, never step on each other's active run).

`job_run` is a job's whole MLflow lifecycle: connect (sweep/record/store.py: set-up once per process), start,
then FINISHED, FAILED (with an `error` tag) or KILLED (Ctrl-C) whatever happens inside it, including a write
that fails. With tracking off it yields a `Run` whose writes do nothing, so the job has one code path. Also: a
FAILED run for a job that died before its own run began, and the writes the parent run and the sweepers make.
"""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunStatus
from mlflow.tracking import MlflowClient

from sweep import keys as K
from sweep.record import outage
from sweep.record.ending import set_tags, terminate
from sweep.record.parent_file import find_parent
from sweep.record.store import TrackingError, connect
from sweep.util import procid
from sweep.util.paths import PROJECT_ROOT
from sweep.util.redact import learn, redact


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


def start_run(
    client: MlflowClient, experiment_id: str, name: str, tags: dict[str, Any], parent_run_id: str | None = None
):
    tags = {k: redact(str(v)) for k, v in tags.items() if v is not None}
    if parent_run_id:
        tags[K.PARENT_RUN_TAG] = parent_run_id
    if git_commit():
        tags["mlflow.source.git.commit"] = git_commit()
    tags.update(host=socket.gethostname(), **procid.tags())  # lets a later start-up spot a dead process
    return client.create_run(experiment_id, run_name=redact(name), tags=tags)


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
        self.set_tags({K.ERROR_TAG: error, **tags})

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
        raise outage.TrackingLost(str(e), tracking.uri, sweep_dir) from None
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
        raise (outage.lost(tracking, "before the run could start", e, sweep_dir) or e) from None
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
            lost = outage.lost(tracking, f"during run {run.id}", e, sweep_dir)
            if lost is None:  # it answers again: end the run now (what was raising goes on)
                terminate(client, run.id, status, error)
            else:  # ended with the reason once the store answers (sweep/run.py), else KILLED by the next start-up
                outage.UNENDED.append(
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


def log_files(client: MlflowClient, run_id: str, paths: list[str | Path]) -> None:
    """Files as artifacts of a run (the parent's results files, a study's plan)."""
    for path in paths:
        client.log_artifact(run_id, str(path))


def delete_run(client: MlflowClient, run_id: str) -> None:
    """Remove a run this process created by mistake (a parent another worker created first: sweep/parent.py)."""
    client.delete_run(run_id)
