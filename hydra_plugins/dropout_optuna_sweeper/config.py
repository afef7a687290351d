"""Typed configuration of the Optuna sweeper, registered as `hydra/sweeper=optuna`.

Imported by Hydra's plugin scan on every start, so it stays light: no Optuna import here.
Sampler and pruner names are Enums, so OmegaConf rejects an unknown name while the config is
composed (by the pre-flight check, before any job), with one line naming the key and the allowed
values.
"""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore


class Sampler(Enum):
    tpe = 1
    random = 2
    grid = 3
    cmaes = 4
    nsgaii = 5


class Pruner(Enum):
    none = 1
    median = 2
    hyperband = 3
    successive_halving = 4


@dataclass
class SamplerArgs:
    """Optional sampler settings; each sampler takes the ones it knows and ignores the rest."""
    n_startup_trials: Optional[int] = None  # tpe (Optuna's default 10), cmaes: random trials before modelling
    multivariate: bool = False              # tpe
    constant_liar: bool = True              # tpe: keeps trials running at the same time apart
    population_size: Optional[int] = None   # nsgaii (default 50), cmaes (popsize)


@dataclass
class PrunerArgs:
    """Settings of the pruner; a step is an epoch. Each pruner takes the ones it knows."""
    n_startup_trials: int = 2    # median: trials that must finish before any is pruned
    n_warmup_steps: int = 2      # median: epochs a trial always runs before it can be pruned
    interval_steps: int = 1      # median
    min_resource: int = 1        # hyperband, successive_halving: epochs before the first rung
    max_resource: Optional[int] = None  # hyperband: null = trainer.epochs
    reduction_factor: int = 3    # hyperband, successive_halving
    min_early_stopping_rate: int = 0    # successive_halving


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.dropout_optuna_sweeper.optuna_sweeper.OptunaSweeper"

    sampler: Sampler = Sampler.tpe
    seed: Optional[int] = 777           # the sampler's seed (null = not reproducible)
    sampler_args: SamplerArgs = field(default_factory=SamplerArgs)
    # "maximize" | "minimize", or one per objective for a multi-objective study (objective=[a,b]).
    # Default: what the objective means (sweep.train.METRIC_DIRECTIONS): accuracies up, losses and gap down
    direction: Any = "${objective_direction:${oc.select:objective,null}}"
    # finished trials (COMPLETE + PRUNED) the study should hold: resuming or adding workers never exceeds it
    n_trials: int = 20
    n_jobs: int = 1                     # trials handed to the launcher at once
    # tracking.optuna_storage when the project config has it (so tracking=server moves both stores), else runs/optuna.db
    storage: str = "${oc.select:tracking.optuna_storage,'sqlite:///${root:}/runs/optuna.db'}"
    study_name: str = "dropout"
    pruner: Pruner = Pruner.median
    pruner_args: PrunerArgs = field(default_factory=PrunerArgs)
    # stop once more than max_failure_rate * n_trials trials of this run have failed
    max_failure_rate: float = 0.2
    # seconds between heartbeats of running trials; a trial silent for grace_period seconds
    # (its process was killed) is marked FAIL. null switches the detection off.
    heartbeat_interval: Optional[int] = 5
    grace_period: Optional[int] = 30
    # search space: key -> Hydra override value (interval(a,b), choice(...), range(a,b,step), tag(log, ...)),
    # usually set by a conf/search/*.yaml file; plain values are passed to every job
    params: Optional[Dict[str, Any]] = None
    # fixed configurations evaluated first, e.g. [{drop_prob: 0.3, input_drop_prob: 0.0}]
    enqueue: List[Dict[str, Any]] = field(default_factory=list)


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf,
                             provider="dropout_optuna_sweeper")
