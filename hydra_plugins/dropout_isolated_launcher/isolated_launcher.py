"""The public launcher class Hydra discovers; the work is in `sweep.search.isolated` (imported lazily)."""

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class IsolatedLauncherConf:
    _target_: str = "hydra_plugins.dropout_isolated_launcher.isolated_launcher.IsolatedLauncher"
    n_jobs: Optional[int] = -1  # jobs at once, as joblib reads it: -1 every core, -2 all but one


ConfigStore.instance().store(
    group="hydra/launcher", name="isolated", node=IsolatedLauncherConf, provider="dropout_isolated_launcher"
)


class IsolatedLauncher(Launcher):
    def __init__(self, n_jobs: Optional[int] = -1) -> None:
        self.n_jobs = n_jobs
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        # Hydra imports every plugin at start-up: the implementation loads when used
        from sweep.search.isolated import launch

        return launch(self.config, self.hydra_context, self.task_function, self.n_jobs, job_overrides, initial_job_idx)
