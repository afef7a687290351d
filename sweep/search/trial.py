"""The job's side of the Optuna sweeper: report each epoch to the job's own trial, stop when pruned,
and tell the trial what only the job knows.

When the application's config has an `optuna` node with `storage`, `study_name` and `trial_number`
(this project's `sweep/config.py:OptunaTrialConf`), the sweeper (sweep/search/loop.py) fills them
for every job, and the job, in whatever process or machine the launcher put it, opens the same
storage with a `TrialReporter`: it rebuilds the study's pruner from the description the sweeper
stored in the study's user attributes, reports its objective after every epoch, and records in the
trial's user attributes its number of epochs (`max_epochs`) and its MLflow run id (`mlflow_run_id`),
so that whatever reads the study later (the app's sweeper hook, a notebook) is told rather than
searching. Only public Optuna APIs are used.

Shared with the sweeper: `open_storage` (engine settings that suit several processes) and
`build_pruner` (one description, the same pruner on both sides; the pruners are listed in choices.py).
Every call either side makes to the storage rides out an outage (sweep/search/retry.py): `open_storage`
returns an RDBStorage whose public methods retry.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

from sweep.search import retry
from sweep.search.choices import build_pruner
from sweep.util.sqlite_wal import use_wal

PRUNER_ATTR = "dropout_sweeper.pruner"  # study user attribute: {"name": ..., "args": {...}}
MAX_EPOCHS_ATTR = "max_epochs"  # trial user attribute: the epochs the job will train
RUN_ID_ATTR = "mlflow_run_id"  # trial user attribute: the job's MLflow run
PRUNED_ATTR = "pruned_epoch"  # trial user attribute: the epoch after which the job stopped


def engine_kwargs(url: str, *, pooled: bool = True) -> dict[str, Any]:
    """SQLAlchemy engine settings: SQLite waits for the file lock instead of failing at once (several
    processes write to it); a job's short-lived storage holds no pooled connections (PostgreSQL)."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 60}
    elif pooled:
        kwargs["pool_pre_ping"] = True
    if not pooled:
        from sqlalchemy.pool import NullPool

        kwargs["poolclass"] = NullPool
    return kwargs


def open_storage(url: str, *, pooled: bool = True, **heartbeat: Any):
    """An RDBStorage for `url` whose every call retries through an outage (heartbeat_interval,
    grace_period, ... pass through)."""
    return retry.call(_open_storage, url, pooled=pooled, url=url, **heartbeat)


def _open_storage(url: str, *, pooled: bool = True, **heartbeat: Any):
    import warnings

    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    if pooled:  # the sweeper, which creates the database: optuna-dashboard reading it must not block writes
        use_wal(url)
    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # a job opens a storage the sweeper has already created and checked
                return _retrying_storage()(
                    url,
                    engine_kwargs=engine_kwargs(url, pooled=pooled),
                    skip_compatibility_check=not pooled,
                    skip_table_creation=not pooled,
                    **heartbeat,
                )
        except (IntegrityError, OperationalError) as e:
            # Optuna stamps its schema version on every open, even a read-only one; another program
            # (a dashboard, a notebook, a second worker) opening a brand-new database at the same
            # moment stamps it first ("UNIQUE constraint", or SQLite's "table alembic_version already
            # exists"). The database is then initialised: opening again succeeds.
            if attempt == 2 or (isinstance(e, OperationalError) and "already exists" not in str(e)):
                raise
            time.sleep(0.2 * (attempt + 1))


RETRIED = ("record_heartbeat",)  # RDBStorage's public methods beyond BaseStorage's that touch the database


@functools.cache
def _retrying_storage():
    """optuna.storages.RDBStorage with every public method retried by `retry.call` (a subclass, so Optuna's
    own checks, its cache and its heartbeat support see the RDBStorage they expect)."""
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError

    base = optuna.storages.RDBStorage

    def retried(name: str):
        @functools.wraps(getattr(base, name))
        def method(self, *args, **kwargs):
            return retry.call(getattr(base, name), self, *args, url=self.url, **kwargs)

        return method

    def set_trial_state_values(self, trial_id, state, values=None):
        tries = []

        def attempt():
            tries.append(1)
            try:
                return base.set_trial_state_values(self, trial_id, state, values)
            except UpdateFinishedTrialError:
                if len(tries) == 1:
                    raise
                return True  # an earlier attempt was written; only its answer was lost with the connection

        return retry.call(attempt, url=self.url)

    names = [n for n in dir(optuna.storages.BaseStorage) if not n.startswith("_") and n != "remove_session"]
    attrs = {n: retried(n) for n in (*names, *RETRIED) if callable(getattr(base, n, None))}
    attrs["set_trial_state_values"] = set_trial_state_values
    attrs["__doc__"] = _retrying_storage.__doc__
    return type("RetryingRDBStorage", (base,), attrs)


class TrialReporter:
    """One job's handle on its Optuna trial (created and finished by the sweeper)."""

    def __init__(self, storage: str, study_name: str, trial_number: int, max_epochs: int | None = None):
        import optuna

        self.study_name, self.trial_number = study_name, int(trial_number)
        self._storage = open_storage(storage, pooled=False)
        study_id = self._storage.get_study_id_from_name(study_name)
        pruner = build_pruner(self._storage.get_study_user_attrs(study_id).get(PRUNER_ATTR))
        # the job never samples: a RandomSampler keeps loading the study cheap
        self.study = optuna.load_study(
            study_name=study_name, storage=self._storage, pruner=pruner, sampler=optuna.samplers.RandomSampler()
        )
        trial_id = self._storage.get_trial_id_from_study_id_trial_number(study_id, self.trial_number)
        self.trial = optuna.trial.Trial(self.study, trial_id)
        self.multi_objective = len(self.study.directions) > 1
        if max_epochs is not None:
            self.trial.set_user_attr(MAX_EPOCHS_ATTR, int(max_epochs))
        self.max_epochs = self.trial.user_attrs.get(MAX_EPOCHS_ATTR)

    def record_run(self, run_id: str) -> None:
        """The job's MLflow run: the sweeper's hook tags it with the trial's state, or ends it KILLED
        when the job's process dies (stale trial), without searching MLflow for it."""
        self.trial.set_user_attr(RUN_ID_ATTR, run_id)

    def tags(self) -> dict:
        return {"optuna_study": self.study_name, "optuna_trial": self.trial_number}

    def should_stop(self, epoch: int, value) -> bool:
        """Report `value` for `epoch`; True when the study's pruner says to stop this trial.

        Multi-objective studies cannot be pruned (Optuna): nothing is reported for a list of values.
        """
        if self.multi_objective or isinstance(value, (list, tuple)) or value is None:
            return False
        value = float(value)
        if not math.isfinite(value):
            return False  # a diverging run stops on its own and ends FAIL
        self.trial.report(value, step=int(epoch))
        if self.max_epochs is not None and epoch >= self.max_epochs:
            return False  # the last epoch: stopping now saves nothing, and the trial ends COMPLETE
        return bool(self.trial.should_prune())

    def pruned(self, epoch: int) -> BaseException:
        """The exception that tells the sweeper this trial was pruned (raise it)."""
        import optuna

        self.trial.set_user_attr(PRUNED_ATTR, int(epoch))
        return optuna.TrialPruned(f"trial {self.trial_number} of study {self.study_name} pruned after epoch {epoch}")
