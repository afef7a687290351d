"""The public sweeper class Hydra discovers; the work is in `sweep.study` (imported lazily)."""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class StudySweeperConf:
    """`hydra/sweeper=study`. The phases, replicates and design are the app's `study.*` keys (sweep/config.py)."""

    _target_: str = "hydra_plugins.dropout_study_sweeper.study_sweeper.StudySweeper"
    params: Optional[Dict[str, Any]] = None  # the settings' grid, as Hydra's basic sweeper reads it (no seed)
    # settings that are no grid, e.g. [{drop_prob: 0, input_drop_prob: 0}, {drop_prob: 0.5}]: each entry is one
    # setting's overrides, combined with every point of `params`
    settings: Optional[List[Dict[str, Any]]] = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="study", node=StudySweeperConf, provider="dropout_study_sweeper"
)


class StudySweeper(Sweeper):
    """An exploratory phase, a design fixed from it, a confirmatory phase on fresh replicates (sweep/study.py)."""

    def __init__(
        self, params: Optional[Dict[str, Any]] = None, settings: Optional[List[Dict[str, Any]]] = None
    ) -> None:
        self.params, self.settings = params, settings
        self._impl = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        # Hydra imports every plugin at start-up: the implementation loads when used
        from sweep.study import StudySweeperImpl

        self._impl = StudySweeperImpl(self.params, self.settings)
        self._impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        return self._impl.sweep(arguments)
