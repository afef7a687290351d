"""Typed configuration of the Optuna sweeper, registered as `hydra/sweeper=optuna`.

Imported by Hydra's plugin scan on every start, so it stays light: the names of the samplers and
pruners come from `sweep.search.choices` (no Optuna import there). The pruner is an Enum, so
OmegaConf rejects an unknown name while the config is composed, with one line naming the key and the
allowed values. The sampler is a name (`sampler=gp`) or, as in hydra-optuna-sweeper, a node chosen
with the `hydra/sweeper/sampler=<name>` group (`sampler: {seed: 123}`); the sweeper checks either.

Defaults follow hydra-optuna-sweeper where a default changes what a result means (`direction:
minimize`, `storage: null` = an in-memory study, `study_name: null`); an app proposes its own under
its config's `optuna.sweeper` node (this project: maximize, runs/optuna.db, "dropout").
"""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from sweep.search.choices import PRUNERS, SAMPLERS

Pruner = Enum("Pruner", [(name, i) for i, name in enumerate(PRUNERS, start=1)])


@dataclass
class SamplerArgs:
    """Optional sampler settings; each sampler takes the ones it knows and ignores the rest."""

    n_startup_trials: Optional[int] = None  # tpe, gp (Optuna's default 10), cmaes: random trials before modelling
    multivariate: bool = False  # tpe
    constant_liar: bool = True  # tpe: keeps trials running at the same time apart
    population_size: Optional[int] = None  # nsgaii (default 50), cmaes (popsize)


@dataclass
class PrunerArgs:
    """Settings of the pruner; a step is an epoch. Each pruner takes the ones it knows."""

    # median: trials that must finish before any is pruned (Optuna's default; with 2, the median of two
    # early trials pruned most high dropout rates: README, Pruning)
    n_startup_trials: int = 5
    # median: epochs a trial always runs before it can be pruned; null = two thirds of its epochs (the app
    # hook's max_resource; 0 when the app does not say): high dropout rates are behind early (README, Pruning)
    n_warmup_steps: Optional[int] = None
    interval_steps: int = 1  # median
    min_resource: int = 1  # hyperband, successive_halving: epochs before the first rung
    max_resource: Optional[int] = None  # hyperband: null = the app hook's (trainer.epochs), else auto
    reduction_factor: int = 3  # hyperband, successive_halving
    min_early_stopping_rate: int = 0  # successive_halving


def _app_default(key: str, default: str) -> str:
    return f"${{oc.select:optuna.sweeper.{key},{default}}}"


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.dropout_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    _recursive_: bool = False  # a `sampler._target_` (hydra-optuna-sweeper's spelling) is read, not instantiated
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])

    sampler: Any = MISSING  # a name, or the node hydra/sweeper/sampler=<name> puts here
    seed: Optional[int] = 777  # the sampler's seed (null = not reproducible); sampler.seed wins
    sampler_args: SamplerArgs = field(default_factory=SamplerArgs)
    # "maximize" | "minimize", or one per objective for a multi-objective study (objective=[a,b])
    direction: Any = _app_default("direction", "minimize")
    # finished trials (COMPLETE + PRUNED) the study should hold: resuming or adding workers never exceeds it
    n_trials: int = 20
    n_jobs: int = 1  # trials handed to the launcher at once
    # a database URL (jobs report to the study through it), or null: an in-memory study
    storage: Optional[str] = _app_default("storage", "null")
    study_name: Optional[str] = _app_default("study_name", "null")  # null: Optuna names a new study
    pruner: Pruner = Pruner.median
    pruner_args: PrunerArgs = field(default_factory=PrunerArgs)
    # stop once more than max_failure_rate * n_trials trials of this run have failed
    max_failure_rate: float = 0.2
    # seconds between heartbeats of running trials; a trial silent for grace_period seconds
    # (its process was killed) is marked FAIL. null switches the detection off.
    heartbeat_interval: Optional[int] = 5
    grace_period: Optional[int] = 30
    # seconds every storage call (ask, tell, epoch reports, heartbeats) keeps retrying while the database
    # does not answer (a restart, a fail-over), before the sweep stops with one line (sweep/search/retry.py)
    storage_retry_seconds: float = 60
    # search space: key -> Hydra override value (interval(a,b), choice(...), range(a,b,step), tag(log, ...)),
    # usually set by a conf/search/*.yaml file; plain values are passed to every job
    params: Optional[Dict[str, Any]] = None
    # fixed configurations evaluated first, e.g. [{drop_prob: 0.3, input_drop_prob: 0.0}]
    enqueue: List[Dict[str, Any]] = field(default_factory=list)
    # hydra-optuna-sweeper's extension: a dotted path to fn(config, trial) that suggests more parameters
    custom_search_space: Optional[str] = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="dropout_optuna_sweeper"
)
for _name, _spec in SAMPLERS.items():  # `- override hydra/sweeper/sampler: tpe`, as hydra-optuna-sweeper writes it;
    # null = the sweeper's own setting (seed, sampler_args); more keywords of the Optuna class with +key=...
    ConfigStore.instance().store(
        group="hydra/sweeper/sampler",
        name=_name,
        provider="dropout_optuna_sweeper",
        node={"name": _name, "seed": None, **{k: None for k in _spec.args}},
    )
