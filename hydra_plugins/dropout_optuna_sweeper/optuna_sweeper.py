"""The public sweeper class: a thin shell that Hydra discovers and instantiates.

Everything it does is in `sweep.search.loop.OptunaSweeperImpl` (imported here lazily: Hydra imports this module
on every start, with or without the sweeper selected, and Optuna takes a while to import).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from .config import PrunerArgs, SamplerArgs


class OptunaSweeper(Sweeper):
    """Ask-and-tell Optuna search over Hydra overrides; see hydra_plugins/dropout_optuna_sweeper/config.py."""

    def __init__(
        self,
        sampler: Any = "tpe",
        seed: Optional[int] = 777,
        sampler_args: Any = None,
        direction: Any = "minimize",
        n_trials: int = 20,
        n_jobs: int = 1,
        storage: Optional[str] = None,
        study_name: Optional[str] = None,
        pruner: Any = "median",
        pruner_args: Any = None,
        max_failure_rate: float = 0.2,
        heartbeat_interval: Optional[int] = 5,
        grace_period: Optional[int] = 30,
        params: Optional[Dict[str, Any]] = None,
        enqueue: Optional[List[Dict[str, Any]]] = None,
        custom_search_space: Optional[str] = None,
        storage_retry_seconds: float = 60,
    ) -> None:
        # checked in setup(): an error raised here would reach the user wrapped in Hydra's instantiate message
        self._options = dict(
            sampler=sampler,
            seed=seed,
            sampler_args=sampler_args or SamplerArgs(),
            direction=direction,
            n_trials=n_trials,
            n_jobs=n_jobs,
            storage=storage,
            study_name=study_name,
            pruner=pruner,
            pruner_args=pruner_args or PrunerArgs(),
            max_failure_rate=max_failure_rate,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            params=params,
            enqueue=enqueue,
            custom_search_space=custom_search_space,
            storage_retry_seconds=storage_retry_seconds,
        )
        self._impl = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        # Hydra imports every plugin at start-up: the implementation loads when used
        from sweep.search.loop import OptunaSweeperImpl

        self._impl = OptunaSweeperImpl(**self._options)
        self._impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        return self._impl.sweep(arguments)
