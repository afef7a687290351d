"""The one retry policy for the Optuna storage: ride out a database outage, then stop with one line.

A PostgreSQL restart, a fail-over or a network blip of a few seconds to a minute must not kill a
search that has run for hours. Every storage call of the sweeper and of its jobs (study loading, ask,
tell, per-epoch reports and should_prune, heartbeats, user attributes, the study lock) goes through
`call`: a *transient* error (the server cannot be reached, the connection dropped) is retried with
exponential back-off (0.5 s doubling to 5 s) for `budget()` seconds in all, then `StorageUnavailable`
says in one line which storage (password masked) did not answer for how long. Anything else (an
IntegrityError, a missing table, a bug) is raised at once: retrying cannot fix it.

The budget is `hydra.sweeper.storage_retry_seconds` (default 60); the sweeper passes it to its jobs
in the environment (`DROPOUT_STORAGE_RETRY_SECONDS`), like the storage URL, so joblib workers and
SLURM jobs (`--export=ALL`) retry as long as the sweeper does.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, TypeVar

from sweep.search.space import SweeperError
from sweep.util.redact import redact

log = logging.getLogger(__name__)

ENV = "DROPOUT_STORAGE_RETRY_SECONDS"
DEFAULT_SECONDS = 60.0
FIRST_WAIT, MAX_WAIT = 0.5, 5.0
# OperationalError also covers errors no retry fixes; these are refused at once
_PERMANENT = (
    "no such table",
    "no such column",
    "already exists",
    "syntax error",
    "duplicate column",
    "does not exist",
    "readonly database",
    "read-only",
    "permission denied",
    "authentication failed",
    "password authentication",
    "unable to open database file",
)

T = TypeVar("T")
_state = threading.local()
_recovered = {"at": None}  # time.monotonic() when a call last succeeded after an outage (any thread)


class StorageUnavailable(SweeperError):
    """The storage did not answer for the whole retry budget."""


def budget() -> float:
    """Seconds to keep retrying (the environment's DROPOUT_STORAGE_RETRY_SECONDS, else 60)."""
    try:
        return max(0.0, float(os.environ.get(ENV, DEFAULT_SECONDS)))
    except ValueError:
        return DEFAULT_SECONDS


def set_budget(seconds: float) -> None:
    """This process and every job it starts retry for `seconds`."""
    os.environ[ENV] = f"{float(seconds):g}"


def transient(e: BaseException) -> bool:
    """True for errors that mean "the database is not reachable right now"."""
    import sqlalchemy.exc as sa
    from optuna.exceptions import StorageInternalError

    if isinstance(e, StorageInternalError) and e.__cause__ is not None:
        return transient(e.__cause__)  # Optuna's wrapper ("invalid data ... exceeding max length") of any commit error
    if isinstance(e, (sa.DisconnectionError, sa.InterfaceError)):
        return True
    if isinstance(e, sa.DBAPIError) and e.connection_invalidated:
        return True
    if isinstance(e, sa.OperationalError):
        text = str(e.orig if e.orig is not None else e).lower()
        return not any(p in text for p in _PERMANENT)
    try:  # psycopg raised outside SQLAlchemy (e.g. while connecting)
        import psycopg2

        if isinstance(e, (psycopg2.OperationalError, psycopg2.InterfaceError)):
            return not any(p in str(e).lower() for p in _PERMANENT)
    except ImportError:
        pass
    return isinstance(e, (ConnectionError, TimeoutError))


def recovered_within(seconds: float) -> bool:
    """Whether this process saw the storage come back less than `seconds` ago: other workers' heartbeats
    were blocked by the same outage, so their trials must not be judged stale yet."""
    at = _recovered["at"]
    return at is not None and time.monotonic() - at < seconds


def call(
    fn: Callable[..., T],
    *args: Any,
    what: str = "the storage",
    url: str | None = None,
    seconds: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    **kwargs: Any,
) -> T:
    """`fn(*args, **kwargs)`, retried through transient errors for `seconds` (default `budget()`).
    A retry inside a retry (a storage method calling another) does not wait twice: only the outer one waits."""
    if getattr(_state, "depth", 0):
        return fn(*args, **kwargs)
    total = budget() if seconds is None else seconds
    started, wait, failures = clock(), FIRST_WAIT, 0
    while True:
        _state.depth = 1
        try:
            out = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - sorted below
            if not transient(e):
                raise
            elapsed = clock() - started
            if elapsed >= total:
                shown = redact(url) if url else what
                first = redact(str(getattr(e, "orig", None) or e)).strip().splitlines()
                raise StorageUnavailable(
                    f"hydra.sweeper.storage={shown} did not answer for {elapsed:.0f} s "
                    f"(hydra.sweeper.storage_retry_seconds={total:g}): {type(e).__name__}: "
                    f"{first[0] if first else ''}"
                ) from None
            if failures == 0:
                log.warning(
                    "the Optuna storage %s does not answer (%s); retrying for up to %g s",
                    redact(url) if url else what,
                    type(e).__name__,
                    total,
                )
            failures += 1
            sleep(min(wait, max(0.0, total - elapsed)))
            wait = min(wait * 2, MAX_WAIT)
            continue
        finally:
            _state.depth = 0
        if failures:
            _recovered["at"] = clock()
            log.warning("the Optuna storage answers again (after %.0f s)", clock() - started)
        return out
