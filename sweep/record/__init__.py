"""The only writer of the MLflow store: reaching it and setting it up once per process (store.py), a job's run
from start to end and every other write (runs.py), how runs end, dead ones included (ending.py), a store that
stops answering mid-sweep (outage.py), the parent-run file (parent_file.py), the query behind grid resume
(resume.py) and the publishing of a sweep's summary (summary.py). Imports sweep.keys, sweep.util, MLflow and
SQLAlchemy; never the config, the app or the analysis (tests/test_layers.py)."""

from sweep.keys import PARENT_FILE
from sweep.record.ending import (
    close_stale_runs,
    end_killed,
    end_orphaned_children,
    set_tags,
    terminate,
)
from sweep.record.outage import TrackingLost, end_unended
from sweep.record.parent_file import find_parent, write_parent
from sweep.record.resume import claim
from sweep.record.runs import (
    Run,
    delete_run,
    git_commit,
    job_run,
    log_files,
    log_metrics,
    log_params,
    log_steps,
    log_text,
    params_from_config,
    record_failed_run,
    runs_started,
    start_run,
    status_name,
)
from sweep.record.store import (
    TrackingError,
    check_artifact_location,
    check_reachable,
    check_writable,
    connect,
    open_store,
)
from sweep.record.summary import publish

__all__ = [
    "PARENT_FILE",
    "Run",
    "TrackingError",
    "TrackingLost",
    "check_artifact_location",
    "check_reachable",
    "check_writable",
    "claim",
    "close_stale_runs",
    "connect",
    "delete_run",
    "end_killed",
    "end_orphaned_children",
    "end_unended",
    "find_parent",
    "git_commit",
    "job_run",
    "log_files",
    "log_metrics",
    "log_params",
    "log_steps",
    "log_text",
    "open_store",
    "params_from_config",
    "publish",
    "record_failed_run",
    "runs_started",
    "set_tags",
    "start_run",
    "status_name",
    "terminate",
    "write_parent",
]
