"""The store stops answering mid-sweep: the sweep stops (TrackingLost), and the runs it could not end are
ended with the reason once the store answers again (`end_unended`, from sweep/run.py)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from sweep.record.ending import terminate
from sweep.record.store import TrackingError, check_reachable
from sweep.util.redact import first_line, redact


class TrackingLost(BaseException):
    """The store stopped answering during a sweep, after MLflow's own HTTP retries. Not an
    Exception on purpose: Hydra records a job's Exception and starts the next point, which would meet the
    same dead server and leave no record; this one stops the sweep, as Ctrl-C does (sweep/run.py)."""

    def __init__(self, message: str, uri: str, sweep_dir: str | Path | None) -> None:
        super().__init__(message)
        self.uri, self.sweep_dir = uri, sweep_dir


WAIT_ENV = "DROPOUT_TRACKING_WAIT_SECONDS"  # how long a stopped sweep waits for the store to end its runs
UNENDED: list[tuple[str, str, str, str | None]] = []  # (uri, run id, status, error): runs the store could not end


def lost(tracking, what: str, e: BaseException | None, sweep_dir) -> TrackingLost | None:
    """A TrackingLost when the store does not answer now, else None (the failure was something else)."""
    try:
        check_reachable(tracking.uri)
        return None
    except TrackingError:
        pass
    why = first_line(str(e) if e is not None else None, default=type(e).__name__)[:300]
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
    if UNENDED:
        print(
            f"waiting up to {wait:g} s for tracking.uri={redact(UNENDED[0][0])} to answer, to end the runs "
            f"it left RUNNING ({WAIT_ENV})",
            file=sys.stderr,
            flush=True,
        )
    while UNENDED:
        uri, run_id, status, error = UNENDED[0]
        try:
            check_reachable(uri)
            terminate(MlflowClient(tracking_uri=uri), run_id, status, error)
            UNENDED.pop(0)
        except Exception:  # noqa: BLE001 - still down: wait and try again
            if time.monotonic() > deadline:
                break
            time.sleep(2)
    return [run_id for _, run_id, _, _ in UNENDED]
