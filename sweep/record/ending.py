"""How runs end: `terminate` with a status and the reason, and the one way a run whose process cannot end it
(killed, stopped by the sweep, gone from this host) is ended: `end_killed`. Start-up ends the runs of dead
processes (`close_stale_runs`), a stopped sweep those of its own processes (`end_orphaned_children`), the
Optuna sweeper those of failed or stale trials (sweep/optuna_hook.py)."""

from __future__ import annotations

import os
import socket
from typing import Any

from mlflow.tracking import MlflowClient

from sweep import keys as K
from sweep.util import procid
from sweep.util.redact import redact

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
            set_tags(client, run_id, {K.ERROR_TAG: error})
    finally:
        client.set_terminated(run_id, status=status)


def end_killed(client: MlflowClient, run: Any, why: str | None) -> bool:
    """End `run` (an MLflow Run, or its id) KILLED with `why` if it is still RUNNING; whether it did."""
    if isinstance(run, str):
        run = client.get_run(run)
    if run.info.status != "RUNNING":
        return False
    terminate(client, run.info.run_id, "KILLED", error=why)
    return True


def close_stale_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """Runs left RUNNING by a process of this host that no longer exists (kill -9, power loss) end KILLED;
    a reused PID does not pass for the run's process (sweep/util/procid.py)."""
    host = socket.gethostname()
    stale = []
    for r in client.search_runs(
        [experiment_id], f"attributes.status = 'RUNNING' and tags.host = '{host}'", max_results=1000
    ):
        pid = r.data.tags.get("pid", "")
        if procid.gone(r.data.tags) and end_killed(
            client, r, f"process {pid} on {host} died while the run was in progress"
        ):
            stale.append(r.info.run_id)
    return stale


def end_orphaned_children(client: MlflowClient, parent_id: str) -> list[str]:
    """A sweep that stops abnormally (a signal, a crash) ends KILLED the children of its parent that are
    still RUNNING in a process of its own: itself, a worker it started (joblib stops its workers when a
    job is interrupted, before they can end their runs), or one already gone from this host. Children
    that live processes elsewhere train under a shared parent are left alone."""
    host, me = socket.gethostname(), os.getpid()
    parent = client.get_run(parent_id)
    ours = {me} | procid.descendants(me)
    ended = []
    for run in client.search_runs(
        [parent.info.experiment_id],
        f"tags.{K.PARENT_RUN_TAG} = '{parent_id}' and attributes.status = 'RUNNING'",
        max_results=1000,
    ):
        pid = run.data.tags.get("pid", "")
        if run.data.tags.get("host") != host or not pid.isdigit():
            continue
        if (int(pid) in ours or not procid.alive(int(pid))) and end_killed(
            client, run, "killed: the sweep stopped while it ran"
        ):
            ended.append(run.info.run_id)
    return ended
