"""The Optuna sweeper's logic: ask-and-tell over Hydra's launcher, with public Optuna and Hydra APIs only.

One loop per sweeping process (a "worker"; several may share a study through one storage):

    under the study lock: fail stale trials, count, enqueue fixed configurations, ask <= n_jobs trials
    launch the batch through the configured Hydra launcher (basic, joblib, submitit, ...)
    tell each trial COMPLETE / PRUNED / FAIL; give it to the app's hook (sweep/search/hook.py)

`n_trials` is the number of finished (COMPLETE + PRUNED) trials the *study* should hold: a resumed
run or a second worker only adds what is missing. Trials RUNNING in other live workers count as
on their way, so workers never over-ask; the count and the ask happen under a lock shared by every
worker of the study (a PostgreSQL/MySQL advisory lock, or a file lock next to a SQLite file).
While the sweep's trials run, a background thread records their heartbeats; a RUNNING trial whose
heartbeat stopped for `grace_period` seconds (its process was killed) is marked FAIL, the hook is
told, and another trial is asked in its place. `storage: null` is an in-memory study, as in
hydra-optuna-sweeper: no resume, no second worker, and jobs cannot reach it (no pruning).

Nothing here reads the application's own keys: what the app knows (its metric names, a trial's
resource, extra job overrides, MLflow) comes from the hook its config names, and jobs receive their
trial only when the app's config has the node for it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import sys
import threading
import time
import warnings
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.trial import TrialState

from sweep.search import hook as _hook
from sweep.search import results as _report
from sweep.search import retry
from sweep.search import space as _space
from sweep.search.choices import (
    DIRECTIONS,
    PRUNER_ARGS,
    PRUNERS,
    SAMPLERS,
    SINGLE_OBJECTIVE,
    TARGETS,
    default_warmup,
    make_sampler,
    sampler_keywords,
)
from sweep.search.isolated import JobProcessDied
from sweep.search.space import SearchSpace, SweeperError
from sweep.search.trial import PRUNER_ATTR, build_pruner, open_storage
from sweep.util import signals
from sweep.util.dblock import db_lock, lockable
from sweep.util.redact import redact

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
SPACE_ATTR = "dropout_sweeper.search_space"
BEAT_ATTR = "dropout_sweeper.heartbeat"  # on a trial: this sweeper has recorded its heartbeat
STORAGE_ENV = "DROPOUT_OPTUNA_STORAGE"
_STUDY_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
SAMPLER_SEED_MAX = 2**32 - 1  # Optuna's samplers seed numpy's RandomState, which takes [0, 2**32 - 1]


def _name(value: Any) -> str:
    """An Enum member (from the typed config) or a plain string."""
    return str(getattr(value, "name", value))


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return value


def _flat(directions: list[str]) -> str:
    return directions[0] if len(directions) == 1 else "[" + ",".join(directions) + "]"


def _check_int(key: str, value: Any, minimum: int, allow_none: bool = False, maximum: int | None = None) -> None:
    if value is None and allow_none:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise SweeperError(
            f"hydra.sweeper.{key}={value!r} is invalid: must be an integer {allowed}"
            + (" or null" if allow_none else "")
        )


def _sampler(value: Any, sampler_args: dict[str, Any]) -> tuple[str, int | None, dict[str, Any]]:
    """(name, seed or None, extra keywords) of `hydra.sweeper.sampler`: a name (`sampler=gp`), or a
    node as the `hydra/sweeper/sampler=<name>` group and hydra-optuna-sweeper configs write it
    (`sampler: {seed: 123}`, `_target_: optuna.samplers.TPESampler`). A node's keys that are
    `sampler_args` go there; other keywords of the Optuna class pass through; anything else is
    refused, one line per key."""
    value = _plain(value)
    if not isinstance(value, dict):
        name = _name(value)
        if name not in SAMPLERS:
            raise SweeperError(f"hydra.sweeper.sampler={name} is invalid; allowed: {', '.join(SAMPLERS)}")
        return name, None, {}
    node = dict(value)
    node.pop("_partial_", None)
    target, name = node.pop("_target_", None), node.pop("name", None)
    if target is not None:  # a class, as hydra-optuna-sweeper names it, says more than the group's default name
        name = TARGETS.get(str(target))
        if name is None:
            raise SweeperError(
                f"hydra.sweeper.sampler._target_={target} is not offered here; use "
                f"hydra.sweeper.sampler=<name>, one of: {', '.join(SAMPLERS)}"
            )
    if name is None:  # the group always names one: the node was replaced, e.g. by +hydra.sweeper.sampler.<key>=...
        raise SweeperError(
            f"hydra.sweeper.sampler={node} names no sampler; choose one with "
            f"hydra/sweeper/sampler=<name> and then set hydra.sweeper.sampler.<key>, or use "
            f"hydra.sweeper.sampler=<name> with hydra.sweeper.sampler_args.*; names: {', '.join(SAMPLERS)}"
        )
    name = _name(name)
    if name not in SAMPLERS:
        raise SweeperError(f"hydra.sweeper.sampler.name={name} is invalid; allowed: {', '.join(SAMPLERS)}")
    seed = node.pop("seed", None)
    spec, extra, refused = SAMPLERS[name], {}, []
    known = sampler_keywords(name) if node else set()
    for key, v in node.items():
        if v is None:
            continue  # hydra-optuna-sweeper writes null for "the sampler's default"
        if key in spec.args:
            sampler_args[key] = v
        elif key in known and key not in spec.fixed and key not in spec.args.values():
            extra[key] = v
        else:
            options = sorted(set(spec.args) | (known - set(spec.args.values()) - set(spec.fixed)))
            refused.append(
                f"hydra.sweeper.sampler.{key} is not an option of sampler {name} here; "
                f"its options: seed, {', '.join(options)}"
            )
    if refused:
        raise SweeperError("\n".join(refused))
    return name, seed, extra


class StopSweep(SweeperError):
    """The sweep stopped early (too many failures); what finished stays in the study."""


class OptunaSweeperImpl:
    def __init__(
        self,
        *,
        sampler: Any,
        seed: int | None,
        sampler_args: Any,
        direction: Any,
        n_trials: int,
        n_jobs: int,
        storage: str | None,
        study_name: str | None,
        pruner: Any,
        pruner_args: Any,
        max_failure_rate: float,
        heartbeat_interval: int | None,
        grace_period: int | None,
        params: Any,
        enqueue: Any,
        custom_search_space: str | None = None,
        storage_retry_seconds: float = retry.DEFAULT_SECONDS,
    ) -> None:
        self.sampler_args = dict(_plain(sampler_args) or {})
        self.sampler_name, sampler_seed, self.sampler_extra = _sampler(sampler, self.sampler_args)
        if sampler_seed is not None:
            seed = sampler_seed  # hydra-optuna-sweeper's spelling of hydra.sweeper.seed
        if self.sampler_name == "cmaes":
            try:
                import cmaes  # noqa: F401 - Optuna's CmaEsSampler needs it, and would only say so mid-sweep
            except ImportError:
                raise SweeperError(
                    "hydra.sweeper.sampler=cmaes needs the `cmaes` package (pip install cmaes)"
                ) from None
        self.pruner_name = _name(pruner)
        if self.pruner_name not in PRUNERS:
            raise SweeperError(f"hydra.sweeper.pruner={self.pruner_name} is invalid; allowed: {', '.join(PRUNERS)}")
        _check_int("seed", seed, 0, allow_none=True, maximum=SAMPLER_SEED_MAX)
        _check_int("n_trials", n_trials, 1)
        _check_int("n_jobs", n_jobs, 1)
        _check_int("heartbeat_interval", heartbeat_interval, 1, allow_none=True)
        _check_int("grace_period", grace_period, 1, allow_none=True)
        if (
            isinstance(storage_retry_seconds, bool)
            or not isinstance(storage_retry_seconds, (int, float))
            or not 0 <= storage_retry_seconds < math.inf
        ):
            raise SweeperError(
                f"hydra.sweeper.storage_retry_seconds={storage_retry_seconds!r} is invalid: "
                "must be a number of seconds >= 0"
            )
        if (
            isinstance(max_failure_rate, bool)
            or not isinstance(max_failure_rate, (int, float))
            or not 0.0 <= max_failure_rate <= 1.0
        ):
            raise SweeperError(f"hydra.sweeper.max_failure_rate={max_failure_rate!r} is invalid: must be in [0, 1]")
        if storage is not None:  # null: an in-memory study, as in hydra-optuna-sweeper
            if not storage or not isinstance(storage, str):
                raise SweeperError(
                    "hydra.sweeper.storage is empty: give a database URL such as sqlite:///runs/optuna.db "
                    "or postgresql://user@host/db (jobs report to the study through it), or null "
                    "for an in-memory study"
                )
            try:
                import sqlalchemy

                sqlalchemy.engine.make_url(storage)
            except Exception:  # noqa: BLE001 - any parse failure means the same to the user
                raise SweeperError(
                    f"hydra.sweeper.storage={redact(storage)} is not a database URL; "
                    "e.g. sqlite:///runs/optuna.db or postgresql://user@host/db"
                ) from None
        if study_name is not None and (not isinstance(study_name, str) or not _STUDY_NAME.match(study_name)):
            raise SweeperError(
                f"hydra.sweeper.study_name={study_name!r} is invalid: use letters, digits, '_', '-' and '.'"
            )
        direction = _plain(direction)
        direction = _name(direction) if not isinstance(direction, list) else [_name(d) for d in direction]
        self.directions = [direction] if isinstance(direction, str) else list(direction or [])
        if not self.directions or any(d not in DIRECTIONS for d in self.directions):
            raise SweeperError(
                f"hydra.sweeper.direction={direction!r} is invalid; allowed: maximize, minimize, "
                "or a list of them (one per objective)"
            )
        enqueue = _plain(enqueue) or []
        if not isinstance(enqueue, list):
            raise SweeperError(f"hydra.sweeper.enqueue={enqueue!r} is invalid: give a list of mappings")
        self.custom_search_space = None
        if custom_search_space:
            from hydra.utils import get_method

            try:
                self.custom_search_space = get_method(custom_search_space)
            except Exception as e:  # noqa: BLE001
                raise SweeperError(
                    f"hydra.sweeper.custom_search_space={custom_search_space} cannot be imported: "
                    f"{str(e).splitlines()[0]}"
                ) from None
        self.seed = seed
        self.pruner_args = _plain(pruner_args) or {}
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.storage_url, self.study_name = storage, study_name
        self.max_failure_rate = float(max_failure_rate)
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.storage_retry_seconds = float(storage_retry_seconds)
        self.params = _plain(params) or {}
        self.enqueue = enqueue
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context: HydraContext | None = None
        self.job_idx = 0
        self._hook: _hook.SweepHook | None = None

    @property
    def hook(self) -> _hook.SweepHook:
        """The app's hook (its config's `optuna.hook`), or the no-op one."""
        if self._hook is None or self._hook.config is not self.config:
            self._hook = _hook.load(self.config, self)
        return self._hook

    # ------------------------------------------------------------------------------------------ Hydra API
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        # a rerun in the same folder numbers its jobs after the ones already there
        existing = [int(p.name) for p in self.sweep_dir.glob("*") if p.is_dir() and p.name.isdigit()]
        self.job_idx = max(existing) + 1 if existing else 0

    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return _Run(self, arguments).run()

    # ------------------------------------------------------------------------------------ construction
    def objective_names(self) -> list[str]:
        names = self.hook.metric_names()
        if names is None:
            return ["value"] if len(self.directions) == 1 else [f"value{i}" for i in range(len(self.directions))]
        return list(names)

    def plan(
        self, arguments: list[str]
    ) -> tuple[SearchSpace, list[str], list[dict[str, Any]] | None, list[dict[str, Any]]]:
        """(search space, objective names, grid points or None, enqueued configurations): every check that
        needs the search space or the objective, made before any study or MLflow run exists. The pre-flight
        check runs it too (sweep.search.check_sweep), so a mistake stops the command before it starts."""
        space = _space.parse(self.params, arguments)
        if not space.distributions:
            raise SweeperError(
                "nothing to search: set hydra.sweeper.params (this project: e.g. +search=dropout) or "
                "give a sweep override such as drop_prob=interval(0,0.5)"
            )
        names = self.objective_names()
        if len(names) != len(self.directions):
            raise SweeperError(
                f"hydra.sweeper.direction={self.directions} has {len(self.directions)} "
                f"entries but objective={names} has {len(names)}: give one direction per objective"
            )
        self._check_directions(names)
        if len(names) > 1 and self.sampler_name in SINGLE_OBJECTIVE:
            raise SweeperError(
                f"hydra.sweeper.sampler={self.sampler_name} cannot optimise several objectives; "
                "use nsgaii, tpe or random"
            )
        grid = space.grid() if self.sampler_name == "grid" else None
        if grid is not None and self.custom_search_space is not None:
            raise SweeperError(
                "hydra.sweeper.custom_search_space cannot add dimensions to a grid; "
                "write them in hydra.sweeper.params, or use another sampler"
            )
        fixed = (
            []
            if grid is not None
            else [space.check_params(p, f"hydra.sweeper.enqueue[{i}]") for i, p in enumerate(self.enqueue)]
        )
        return space, names, grid, fixed

    def check_existing_study(self, space: SearchSpace, names: list[str]) -> None:
        """Refuse, before any trial and without writing anything, a study this sweep cannot continue: one that
        optimises other directions or other objectives, or whose trials drew a parameter from a distribution
        of another kind (Optuna would raise inside `ask` and leave a trial RUNNING). Reads the storage only
        when it already holds the study."""
        url = self.storage_url
        if url is None:
            return
        try:
            storage = optuna.storages.RDBStorage(url, skip_table_creation=True, skip_compatibility_check=True)
        except Exception:  # noqa: BLE001 - no database yet (a new SQLite file): nothing to be compatible with
            return
        try:
            try:
                study_id = storage.get_study_id_from_name(self.study_name) if self.study_name else None
            except Exception:  # noqa: BLE001 - KeyError: no such study; an empty database has no tables yet
                return
            if study_id is None:
                return
            study = f"study {self.study_name!r} in {redact(url)}"
            have = [d.name.lower() for d in storage.get_study_directions(study_id)]
            if have != self.directions:
                raise SweeperError(
                    f"{study} optimises {have}, not {self.directions}; choose another "
                    "hydra.sweeper.study_name or the study's direction"
                )
            metric_names = storage.get_study_system_attrs(study_id).get("study:metric_names")
            if metric_names is not None and list(metric_names) != list(names):
                raise SweeperError(
                    f"{study} optimises objective={list(metric_names)}, not {names}; choose another "
                    "hydra.sweeper.study_name"
                )
            seen: dict[str, Any] = {}
            for t in storage.get_all_trials(study_id, deepcopy=False):
                for name, old in t.distributions.items():
                    seen.setdefault(name, old)
            for name, new in space.distributions.items():
                old = seen.get(name)
                if old is None:
                    continue
                try:
                    optuna.distributions.check_distribution_compatibility(old, new)
                except ValueError:
                    raise SweeperError(
                        f"hydra.sweeper.params.{name}: {study} drew it from "
                        f"{_space.describe_distribution(old)}; now {_space.describe_distribution(new)}: "
                        "a parameter cannot change its kind within a study; use a new "
                        "hydra.sweeper.study_name"
                    ) from None
        finally:
            storage.remove_session()
            with contextlib.suppress(Exception):
                storage.engine.dispose()

    def _check_directions(self, names: list[str]) -> None:
        """A direction against what its objective means (the app hook's metric_direction): the app's default
        follows the objective; a config file's direction that contradicts it is refused; one typed on the
        command line (hydra.sweeper.direction=...) is an explicit override and is used as given."""
        meant = [self.hook.metric_direction(n) for n in names]
        wrong = [(n, d, want) for n, d, want in zip(names, self.directions, meant) if want and d != want]
        if not wrong:
            return
        typed = [
            o
            for o in OmegaConf.select(self.config, "hydra.overrides.hydra", default=None) or []
            if str(o).lstrip("+~").split("=", 1)[0].split(".")[:3] == ["hydra", "sweeper", "direction"]
        ]
        said = ", ".join(
            f"objective={n} is a {'loss or gap' if want == 'minimize' else 'accuracy'} to {want}"
            for n, _, want in wrong
        )
        if typed:
            log.warning("hydra.sweeper.direction=%s as typed, although %s", _flat(self.directions), said)
            return
        raise SweeperError(
            f"hydra.sweeper.direction={_flat(self.directions)} contradicts the objective: {said}; "
            "leave direction out to take it from the objective, or type "
            f"hydra.sweeper.direction={_flat(self.directions)} on the command line to force it"
        )

    def pruner_description(self) -> dict[str, Any]:
        a = self.pruner_args
        args = {k: a[k] for k in PRUNER_ARGS[self.pruner_name] if a.get(k) is not None}
        if self.pruner_name == "hyperband" and not args.get("max_resource"):
            resource = self.hook.max_resource()
            if isinstance(resource, int):
                args["max_resource"] = resource
        if self.pruner_name == "median" and args.get("n_warmup_steps") is None:
            args["n_warmup_steps"] = default_warmup(self.hook.max_resource())  # 2/3 of a trial's epochs
        return {"name": self.pruner_name, "args": args}

    def make_sampler(self, search_space: SearchSpace, offset: int) -> optuna.samplers.BaseSampler:
        """A fresh sampler for the next ask, seeded with seed + the trial's index in the study (samplers
        that draw a sequence keep one seed; see choices.py)."""
        reseed = SAMPLERS[self.sampler_name].reseed
        seed = None if self.seed is None else (self.seed + (offset if reseed else 0)) % (SAMPLER_SEED_MAX + 1)
        return make_sampler(self.sampler_name, seed, self.sampler_args, self.sampler_extra)


# ---------------------------------------------------------------------------------------------- locking
@contextlib.contextmanager
def study_lock(url: str | None, study_name: str | None):
    """Mutual exclusion between every process sweeping this study (count + ask happen inside).
    Storages that cannot hold a lock get none (workers might then over-ask by up to n_jobs - 1 trials);
    an in-memory study (url None) has one process. Taking the lock rides out an outage (retry.py); a
    lock whose connection dropped meanwhile is gone with it (the server released it), so failing to
    release it is no error."""
    if not url or not lockable(url):
        yield
        return

    def take():
        held = db_lock(url, f"optuna-study:{study_name or ''}")  # bounded: a stopped holder is named, then refused
        held.__enter__()
        return held

    held = retry.call(take, url=url)
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            held.__exit__(*sys.exc_info())
        raise
    try:
        held.__exit__(None, None, None)
    except Exception as e:  # noqa: BLE001 - sorted below
        if not retry.transient(e):
            raise
        log.warning(
            "the study lock's connection to %s dropped (the lock went with it): %s", redact(url), type(e).__name__
        )


class _Heartbeat:
    """Records a heartbeat for every trial this process has in flight, every `interval` seconds."""

    def __init__(self, storage, interval: int | None) -> None:
        self.storage, self.interval = storage, interval
        self.ids: set[int] = set()
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval:
            self.thread = threading.Thread(target=self._loop, name="optuna-heartbeat", daemon=True)
            self.thread.start()

    def add(self, trial_id: int) -> None:
        if self.interval:
            self.storage.record_heartbeat(trial_id)
            self.storage.set_trial_system_attr(trial_id, BEAT_ATTR, True)  # sent at least one (_fail_beatless)
            with self.lock:
                self.ids.add(trial_id)

    def discard(self, trial_id: int) -> None:
        with self.lock:
            self.ids.discard(trial_id)

    def _loop(self) -> None:
        while not self.stop_event.wait(self.interval):
            with self.lock:
                ids = sorted(self.ids)
            for trial_id in ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as e:  # noqa: BLE001 - a missed beat is retried at the next interval
                    log.debug("heartbeat of trial id %s failed: %s", trial_id, e)

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=10)


# -------------------------------------------------------------------------------------------- one sweep
class _Run:
    """State of one `sweep()` call."""

    def __init__(self, sweeper: OptunaSweeperImpl, arguments: list[str]) -> None:
        self.s = sweeper
        self.cfg = sweeper.config
        self.space, self.names, self.grid, self.fixed_configs = sweeper.plan(arguments)
        self.multi = len(self.names) > 1
        retry.set_budget(sweeper.storage_retry_seconds)  # this process and its jobs (retry.py)
        if self.grid is not None and sweeper.enqueue:
            log.info("grid sampler: hydra.sweeper.enqueue is ignored (every grid point is evaluated anyway)")
        self.target = sweeper.n_trials if self.grid is None else min(sweeper.n_trials, len(self.grid))
        self.hook = sweeper.hook
        self.extra_overrides = list(self.hook.job_overrides())
        self.heartbeat_interval = sweeper.heartbeat_interval if sweeper.storage_url else None  # RDB storages only
        # jobs get their trial only when the app's config has the node for it and can reach the study
        self.sends_trial = _hook.receives_trial(self.cfg) and sweeper.storage_url is not None
        if not self.sends_trial and sweeper.pruner_name != "none":
            why = (
                "the study is in memory: hydra.sweeper.storage=null"
                if sweeper.storage_url is None
                else f"the app's config has no `{_hook.NODE}` node with {', '.join(_hook.RECEIVER_KEYS)}"
            )
            log.info(
                "hydra.sweeper.pruner=%s: jobs cannot report to their trials (%s), so none is pruned",
                sweeper.pruner_name,
                why,
            )
        self.storage_override = self._storage_override() if self.sends_trial else None
        for name, dist in self.space.distributions.items():
            _warn_if_range_differs(self.space.sources[name], dist)
        self.returns: list[JobReturn] = []
        self.launched = self.failed = 0
        self.failed_points: list[dict[str, Any]] = []  # grid points that failed in this run: not retried
        self.stop_reason: str | None = None

    # ------------------------------------------------------------------------------------ study
    def _open_study(self) -> None:
        s = self.s
        url = s.storage_url  # a SQLite file's folder is made by the study lock and open_storage
        hb = {}
        if self.heartbeat_interval:
            hb = {
                "heartbeat_interval": s.heartbeat_interval,
                "grace_period": s.grace_period,
                "heartbeat_stale_trial_callback": self._on_stale,
            }
        self.pruner_description = s.pruner_description()
        with self.lock():  # workers starting together on a new database: one creates the tables
            s.check_existing_study(self.space, self.names)
            try:
                self.storage = open_storage(url, **hb) if url else optuna.storages.InMemoryStorage()
            except Exception as e:  # noqa: BLE001
                raise SweeperError(
                    f"hydra.sweeper.storage={redact(url)} cannot be opened: {type(e).__name__}: "
                    f"{redact(str(e)).splitlines()[0] if str(e) else ''}"
                ) from None
            self.study = optuna.create_study(
                storage=self.storage,
                study_name=s.study_name,
                directions=s.directions,
                sampler=s.make_sampler(self.space, 0),
                pruner=build_pruner(self.pruner_description),
                load_if_exists=True,
            )
            self.study_name = self.study.study_name  # Optuna names a study created with study_name=null
            have = [d.name.lower() for d in self.study.directions]
            if have != s.directions:
                raise SweeperError(
                    f"study {self.study_name!r} in {redact(url)} optimises {have}, not {s.directions}; "
                    "choose another hydra.sweeper.study_name or the study's direction"
                )
            attrs = self.study.user_attrs
            old_space = attrs.get(SPACE_ATTR)
            if old_space is not None and old_space != self.space.describe():
                log.warning(
                    "study %r was searched over %s before; now %s (its trials stay, the sampler sees both; "
                    "use a new hydra.sweeper.study_name to start afresh)",
                    s.study_name,
                    old_space,
                    self.space.describe(),
                )
            self.study.set_user_attr(SPACE_ATTR, self.space.describe())
            self.study.set_user_attr(PRUNER_ATTR, self.pruner_description)
            if self.study.metric_names is None:
                self.study.set_metric_names(self.names)
            elif list(self.study.metric_names) != self.names:
                raise SweeperError(
                    f"study {self.study_name!r} in {redact(url)} optimises objective={self.study.metric_names}, "
                    f"not {self.names}; choose another hydra.sweeper.study_name"
                )
        self.study_id = self.storage.get_study_id_from_name(self.study_name)
        self.heartbeat = _Heartbeat(self.storage, self.heartbeat_interval)

    def lock(self):
        return study_lock(self.s.storage_url, self.s.study_name)

    def _on_stale(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        log.warning(
            "trial %d of study %r stopped sending heartbeats (its process was killed?): marked FAIL",
            trial.number,
            study.study_name,
        )
        self.hook.trial_stale(trial)

    def _fail_stale(self) -> None:
        # after an outage every worker's heartbeats are old: give them grace_period to beat again first
        if self.heartbeat_interval and not retry.recovered_within(self.s.grace_period or 0):
            retry.call(optuna.storages.fail_stale_trials, self.study, url=self.s.storage_url)
            retry.call(self._fail_beatless, url=self.s.storage_url)

    def _fail_beatless(self) -> None:
        """Optuna's stale-trial check only sees trials that once sent a heartbeat. A trial RUNNING for longer
        than grace_period that never sent one was left by a process that failed between creating it and its
        first beat (this sweeper beats a trial the moment `ask` returns it): FAIL it, or every run of the study
        would wait for it for ever."""
        now = time.time()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            started = t.datetime_start.timestamp() if t.datetime_start else now
            if now - started > (self.s.grace_period or 0) and t.system_attrs.get(BEAT_ATTR) is None:
                log.warning(
                    "trial %d of study %r has been RUNNING for %.0f s without a heartbeat (its process failed "
                    "before the first): marked FAIL",
                    t.number,
                    self.study_name,
                    now - started,
                )
                self.study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
                self.hook.trial_stale(t)

    # ------------------------------------------------------------------------------------- loop
    def run(self) -> list[JobReturn]:
        s = self.s
        self._open_study()
        log.info(
            "Optuna study %r in %s: sampler=%s pruner=%s directions=%s, %d finished trials wanted",
            self.study_name,
            redact(s.storage_url) if s.storage_url else "memory",
            s.sampler_name,
            s.pruner_name,
            s.directions,
            self.target,
        )
        log.info("search space: %s", ", ".join(self.space.describe().values()))
        self.heartbeat.start()
        try:
            self._loop()
        finally:
            self.heartbeat.stop()
        results = _report.report(
            self.study, self.space, self.names, s, self.cfg, self.hook, self.stop_reason, self.launched, self.failed
        )
        if self.stop_reason:
            raise StopSweep(self.stop_reason + f"; see {results}")
        return self.returns

    def _loop(self) -> None:
        waited_since = None
        while True:
            with self.lock():
                self._fail_stale()
                trials = self.study.get_trials(deepcopy=False)
                batch, done, elsewhere = self._ask_batch(trials)
            if done:
                return
            if not batch:
                if not self.heartbeat_interval:
                    log.info("%d trials are still running in other processes; leaving them to finish there", elsewhere)
                    return
                if waited_since is None:
                    waited_since = time.time()
                    log.info(
                        "waiting for %d trials running in other processes (or for their heartbeats to stop)", elsewhere
                    )
                time.sleep(min(self.heartbeat_interval, 5))
                signals.check()  # a SIGTERM whose interrupt was lost does not leave the sweep waiting
                continue
            waited_since = None
            self._launch(batch)
            if self.failed > self.s.max_failure_rate * self.target:
                finished = sum(t.state in FINISHED for t in self.study.get_trials(deepcopy=False))
                self.stop_reason = (
                    f"stopped: {self.failed} of the {self.launched} trials this run launched failed, "
                    f"more than max_failure_rate={self.s.max_failure_rate:g} x n_trials={self.target} "
                    f"allows; the study's {finished} finished trials stay in study "
                    f"{self.study_name!r}" + (" (run the same command again to resume)" if self.s.storage_url else "")
                )
                log.error(self.stop_reason)
                return

    def _ask_batch(self, trials) -> tuple[list, bool, int]:
        """(trials asked, whether the study is done, trials running elsewhere) -- called under the lock."""
        running = sum(t.state == TrialState.RUNNING for t in trials)
        if self.grid is None:
            finished = sum(t.state in FINISHED for t in trials)
            if finished >= self.target:
                return [], True, 0
            want = min(self.s.n_jobs, self.target - finished - running)
            fixed = self._pending_fixed(trials, max(0, want - sum(t.state == TrialState.WAITING for t in trials)))
        else:
            finished = sum(1 for p in self.grid if self._has(trials, p, FINISHED))
            todo = [
                p
                for p in self.grid
                if not self._has(trials, p, LIVE) and not any(_same(p, f) for f in self.failed_points)
            ]
            waiting = [p for p in self.grid if self._has(trials, p, (TrialState.WAITING,))]
            if finished >= self.target or (not todo and not waiting and not running):
                return [], True, 0
            want = min(self.s.n_jobs, self.target - finished - running, len(todo) + len(waiting))
            fixed = todo[: max(0, want - len(waiting))]
        if want <= 0:
            return [], False, running
        for params in fixed:
            self.study.enqueue_trial(params)
        batch = []
        for _ in range(want):
            self.study.sampler = self.s.make_sampler(self.space, len(trials) + len(batch))
            before = {t.number for t in self.study.get_trials(deepcopy=False)}
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*Heartbeat.*")
                    trial = self.study.ask(fixed_distributions=self.space.distributions)
            except BaseException:  # ask created a trial, then failed: FAIL it, so no run of the study waits for it
                for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    if t.number not in before:
                        self.study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
                raise
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)
            self.heartbeat.add(trial_id)
            batch.append((trial, trial_id))
            if self.s.custom_search_space is not None:
                try:  # hydra-optuna-sweeper's extension: fn(config, trial) suggests more parameters
                    self.s.custom_search_space(self.cfg, trial)
                except Exception:
                    for t, t_id in batch:
                        self.study.tell(t, state=TrialState.FAIL, skip_if_finished=True)
                        self.heartbeat.discard(t_id)
                    raise
        return batch, False, running

    def _pending_fixed(self, trials, n: int) -> list[dict[str, Any]]:
        """The next `n` configurations of hydra.sweeper.enqueue the study has not run, nor is running."""
        out = []
        for params in self.fixed_configs:
            if len(out) >= n:
                break
            if not self._has(trials, params, LIVE) and not any(_same(params, p) for p in out):
                out.append(params)
        return out

    @staticmethod
    def _has(trials, params: dict[str, Any], states) -> bool:
        for t in trials:
            if t.state in states:
                have = t.system_attrs.get("fixed_params", t.params) if t.state == TrialState.WAITING else t.params
                if _same(params, have):
                    return True
        return False

    def _storage_override(self) -> str:
        """The storage URL as a job override. A URL with a secret in it (a password in its user part or in its
        query, `?password=`, a token, or any value redaction knows) goes through an environment variable
        (jobs inherit it: in-process, joblib workers, submitit/SLURM with the default --export=ALL), so the
        password never appears in a command line, Hydra's job log or .hydra/overrides.yaml."""
        import sqlalchemy

        url = self.s.storage_url
        if sqlalchemy.engine.make_url(url).password or redact(url) != url:  # a password anywhere: userinfo, query
            os.environ[STORAGE_ENV] = url
            return f"'${{oc.env:{STORAGE_ENV}}}'"
        return _space.quote(url)

    def _job_overrides(self, trial: optuna.trial.Trial) -> list[str]:
        out = _report.overrides(self.space, trial.params)
        if self.sends_trial:
            node = _hook.NODE
            out += [
                f"{node}.storage={self.storage_override}",
                f"{node}.study_name={_space.quote(self.study_name)}",
                f"{node}.trial_number={trial.number}",
            ]
        return out + self.extra_overrides

    def _launch(self, batch) -> None:
        overrides = [self._job_overrides(t) for t, _ in batch]
        for (t, _), o in zip(batch, overrides):
            log.info(
                "trial %d: %s", t.number, " ".join(_report.overrides(self.space, t.params)[len(self.space.fixed) :])
            )
        self.launched += len(batch)
        try:
            try:
                returns = self.s.launcher.launch(overrides, initial_job_idx=self.s.job_idx)
            except Exception as e:  # noqa: BLE001 - sorted here
                if not pool_broken(e):
                    raise
                returns = self._run_alone(batch, overrides, e)
        except BaseException:
            # Ctrl-C or a launcher failure: these trials will never report; finish them now
            for trial, trial_id in batch:
                with contextlib.suppress(Exception):
                    self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                self.heartbeat.discard(trial_id)
                with contextlib.suppress(Exception):  # its run says so too, and is never left RUNNING
                    self.hook.trial_interrupted(self.storage.get_trial(trial_id))
            raise
        self.s.job_idx += len(returns)
        self.returns.extend(returns)
        for (trial, trial_id), ret in zip(batch, returns):
            state, values, why = self._outcome(ret)
            try:
                self.study.tell(trial, values=values, state=state, skip_if_finished=True)
            finally:
                self.heartbeat.discard(trial_id)
            frozen = self.storage.get_trial(trial_id)  # with the user attributes the job recorded
            state = frozen.state  # FAIL if a stale check got there first
            if state == TrialState.FAIL:
                self.failed += 1
                if self.grid is not None:
                    self.failed_points.append(dict(trial.params))
                log.warning("trial %d failed: %s", trial.number, redact(why or "unknown"))
            elif state == TrialState.PRUNED:
                log.info("trial %d pruned", trial.number)
            else:
                shown = ", ".join(f"{n}={v:.6g}" for n, v in zip(self.names, values or []))
                log.info("trial %d finished: %s", trial.number, shown)
            self.hook.trial_finished(frozen, why)

    def _run_alone(self, batch, overrides: list[list[str]], error: BaseException) -> list[JobReturn]:
        """One worker process of a shared pool died (joblib's loky: `kill -9`, the out-of-memory killer) and the
        pool took the whole batch with it, the healthy jobs included. Each job of the batch runs again on its
        own, under the same trial; only a job whose process dies again fails (JobProcessDied), so one dying
        job costs at most its own trial and the search goes on. The lost attempts' runs end KILLED."""
        log.warning(
            "a worker process died (%s); the launcher lost its whole batch of %d jobs: running each again "
            "on its own, so that only a job whose process dies again fails",
            _last_line(error),
            len(batch),
        )
        returns = []
        for i, ((trial, trial_id), o) in enumerate(zip(batch, overrides)):
            with contextlib.suppress(Exception):
                self.hook.attempt_lost(self.storage.get_trial(trial_id))
            try:
                returns += self.s.launcher.launch([o], initial_job_idx=self.s.job_idx + i)
            except Exception as e:  # noqa: BLE001 - sorted here
                if not pool_broken(e):
                    raise
                log.error("trial %d: its job's process died again (%s)", trial.number, _last_line(e))
                returns.append(
                    JobReturn(
                        overrides=list(o),
                        status=JobStatus.FAILED,
                        _return_value=JobProcessDied(
                            "the job's process died before it answered, twice, out of memory or killed "
                            f"({_last_line(e)})"
                        ),
                    )
                )
        return returns

    def _outcome(self, ret: JobReturn) -> tuple[TrialState, list[float] | None, str | None]:
        if ret.status != JobStatus.COMPLETED:
            exc = _job_error(ret)
            if isinstance(exc, optuna.TrialPruned):
                return TrialState.PRUNED, None, None
            return TrialState.FAIL, None, f"{type(exc).__name__}: {exc}" if exc is not None else "the job failed"
        value = ret.return_value
        raw = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
        if len(raw) != len(self.names):
            return (
                TrialState.FAIL,
                None,
                f"the job returned {value!r}; expected {len(self.names)} value(s) for {self.names}",
            )
        try:
            values = [float(v) for v in raw]
        except (TypeError, ValueError):
            return TrialState.FAIL, None, f"the job returned {value!r}, not a number"
        if not all(math.isfinite(v) for v in values):
            return TrialState.FAIL, None, f"the objective is {values if self.multi else values[0]} (diverged?)"
        return TrialState.COMPLETE, values, None


def pool_broken(e: BaseException) -> bool:
    """Whether a launcher's error says a worker process of its pool died (loky's TerminatedWorkerError and
    BrokenProcessPool, concurrent.futures' BrokenProcessPool): the batch is lost, not the search."""
    return any(c.__name__ in ("TerminatedWorkerError", "BrokenProcessPool") for c in type(e).__mro__)


def _last_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[-1] if lines else type(e).__name__


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The same configuration (on a's keys; floats compared with a tolerance)."""
    for k, v in a.items():
        if k not in b:
            return False
        w = b[k]
        if (
            isinstance(v, (int, float))
            and isinstance(w, (int, float))
            and not isinstance(v, bool)
            and not isinstance(w, bool)
        ):
            if not math.isclose(float(v), float(w), rel_tol=1e-9, abs_tol=1e-12):
                return False
        elif v != w:
            return False
    return True


def _job_error(ret: JobReturn) -> BaseException | None:
    """The exception a failed job raised, through JobReturn's public `return_value` (which raises it).
    That property also prints the job's overrides to stderr; they are kept from it (the sweeper logs its
    own, redacted, line): a user's command line may hold a credential."""
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            ret.return_value
        except Exception as e:  # noqa: BLE001 - whatever the job raised
            return e
    return None


def _warn_if_range_differs(source: str, dist: Any) -> None:
    """hydra-optuna-sweeper reads range(a,b,step) as Optuna's step distribution, b included; here b is
    excluded, as in Hydra's basic sweeper. Say so where the two differ (b lies on the step), rather
    than change a ported config's meaning silently."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import RangeSweep

    try:
        value = OverridesParser.create().parse_override(source).value()
    except Exception:  # noqa: BLE001 - the space was parsed already; nothing to add
        return
    step = getattr(dist, "step", None)
    if not isinstance(value, RangeSweep) or step is None or value.stop is None:
        return
    edge = dist.high + step if value.step > 0 else dist.low - step
    if math.isclose(edge, value.stop, rel_tol=1e-9, abs_tol=1e-12):
        log.info(
            "%s: %s is excluded, as in Hydra's basic sweeper (hydra-optuna-sweeper includes it; for that, "
            "write the stop one step further: %s)",
            source,
            _space.format_value(value.stop),
            _space.format_value(value.stop + value.step),
        )
