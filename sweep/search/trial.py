"""The job's side of the Optuna sweeper: report each epoch to the job's own trial, stop when pruned.

The sweeper (sweep/search/loop.py) asks a trial, passes
`optuna.storage=... optuna.study_name=... optuna.trial_number=N` to the job, and tells the result.
The job, in whatever process or machine the launcher put it, opens the same storage, rebuilds the
study's pruner from the description the sweeper stored in the study's user attributes, and reports
`value` after every epoch. Only public Optuna APIs are used.

Shared with the sweeper: `open_storage` (engine settings that suit several processes) and
`build_pruner` (one description, the same pruner on both sides).
"""
from __future__ import annotations

import math
import time
from typing import Any

from sweep.sqlite_wal import use_wal

PRUNER_ATTR = "dropout_sweeper.pruner"  # study user attribute: {"name": ..., "args": {...}}
MAX_EPOCHS_ATTR = "max_epochs"          # trial user attribute: the job's trainer.epochs
# the arguments each pruner takes (a step is an epoch), with the defaults a description may leave out
PRUNER_ARGS: dict[str, dict[str, Any]] = {
    "none": {},
    "median": {"n_startup_trials": 5, "n_warmup_steps": 0, "interval_steps": 1},
    "hyperband": {"min_resource": 1, "max_resource": "auto", "reduction_factor": 3},
    "successive_halving": {"min_resource": 1, "reduction_factor": 3, "min_early_stopping_rate": 0},
}
PRUNERS = tuple(PRUNER_ARGS)


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
    """An `optuna.storages.RDBStorage` for `url` (heartbeat_interval, grace_period, ... pass through)."""
    import warnings

    import optuna
    from sqlalchemy.exc import IntegrityError

    if pooled:  # the sweeper, which creates the database: optuna-dashboard reading it must not block writes
        use_wal(url)
    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # a job opens a storage the sweeper has already created and checked
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url, pooled=pooled),
                                                  skip_compatibility_check=not pooled,
                                                  skip_table_creation=not pooled, **heartbeat)
        except IntegrityError:
            # Optuna stamps its schema version on every open, even a read-only one; another program
            # (a dashboard, a notebook, a second worker) opening a brand-new database at the same
            # moment stamps it first. The database is then initialised: opening again succeeds.
            if attempt == 2:
                raise
            time.sleep(0.2 * (attempt + 1))


def build_pruner(description: dict[str, Any] | None):
    """The pruner a description names: {"name": "median", "args": {"n_warmup_steps": 2, ...}}."""
    import optuna

    description = description or {}
    name = description.get("name") or "none"
    if name not in PRUNER_ARGS:
        raise ValueError(f"hydra.sweeper.pruner={name!r} is unknown; allowed: {', '.join(PRUNERS)}")
    given = description.get("args") or {}
    kwargs = {k: default if given.get(k) is None else given[k] for k, default in PRUNER_ARGS[name].items()}
    return {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
            "hyperband": optuna.pruners.HyperbandPruner,
            "successive_halving": optuna.pruners.SuccessiveHalvingPruner}[name](**kwargs)


class TrialReporter:
    """One job's handle on its Optuna trial (created and finished by the sweeper)."""

    def __init__(self, storage: str, study_name: str, trial_number: int):
        import optuna

        self.study_name, self.trial_number = study_name, int(trial_number)
        self._storage = open_storage(storage, pooled=False)
        study_id = self._storage.get_study_id_from_name(study_name)
        pruner = build_pruner(self._storage.get_study_user_attrs(study_id).get(PRUNER_ATTR))
        # the job never samples: a RandomSampler keeps loading the study cheap
        self.study = optuna.load_study(study_name=study_name, storage=self._storage, pruner=pruner,
                                       sampler=optuna.samplers.RandomSampler())
        trial_id = self._storage.get_trial_id_from_study_id_trial_number(study_id, self.trial_number)
        self.trial = optuna.trial.Trial(self.study, trial_id)
        self.multi_objective = len(self.study.directions) > 1
        self.max_epochs = self.trial.user_attrs.get(MAX_EPOCHS_ATTR)

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
        import optuna

        return optuna.TrialPruned(f"trial {self.trial_number} of study {self.study_name} pruned after epoch {epoch}")
