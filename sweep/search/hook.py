"""How an application adds its own behaviour to the Optuna sweeper, without the sweeper importing it.

The sweeper is a plain Hydra plugin: an app with `hydra/sweeper=optuna` and a `params:` search space
needs nothing else. An app that wants more says so in its own config, under an `optuna` node:

    optuna:
      hook: mypackage.module.MyHook   # a SweepHook subclass (or any class with these methods)
      sweeper: {direction: maximize, storage: sqlite:///..., study_name: ...}   # its defaults for hydra.sweeper.*
      storage: null                   # present: the sweeper fills these three for every job, so the
      study_name: null                #   job can report epochs to its own trial (pruning) with
      trial_number: null              #   sweep.search.trial.TrialReporter

The hook is built once per sweep as `MyHook(config, sweeper)` (the composed config and the
sweeper's options) and called at the points below. Hydra's own plugins take app behaviour the same
way: a dotted path in the config (hydra-optuna-sweeper's `custom_search_space`), not an import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sweep.search.space import SweeperError

NODE = "optuna"  # the app config's node the sweeper looks at
RECEIVER_KEYS = ("storage", "study_name", "trial_number")


class SweepHook:
    """The no-op hook a plain app gets; override what applies."""

    def __init__(self, config: DictConfig | None, sweeper: Any) -> None:
        self.config, self.sweeper = config, sweeper

    def metric_names(self) -> list[str] | None:
        """Names of the values a job returns (the study's metric names); None: value, or value0, value1..."""
        return None

    def metric_direction(self, name: str) -> str | None:
        """ "maximize"/"minimize" when the app knows what metric `name` means (a direction that contradicts it
        is refused unless typed on the command line); None: any direction goes."""
        return None

    def max_resource(self) -> int | None:
        """The most steps a trial reports (hyperband's max_resource when not given, and the median pruner's
        default warm-up, 2/3 of it); None: Optuna's "auto", and no warm-up."""
        return None

    def job_overrides(self) -> list[str]:
        """Overrides added to every job's command line."""
        return []

    def trial_finished(self, trial: Any, error: str | None) -> None:
        """After the sweeper told the study a trial's outcome (a FrozenTrial, with the job's user attributes)."""

    def trial_interrupted(self, trial: Any) -> None:
        """A trial of the batch in flight when the sweep was interrupted (Ctrl-C, SIGTERM, a launcher failure),
        just marked FAIL."""

    def trial_stale(self, trial: Any) -> None:
        """A RUNNING trial whose process stopped sending heartbeats, just marked FAIL."""

    def attempt_lost(self, trial: Any) -> None:
        """A trial whose job was lost with its launcher's shared worker pool (one worker died): the job is about to
        run again on its own under the same trial; whatever its lost attempt left open should be closed."""

    def study_finished(self, folder: Path, files: list[str], metrics: dict[str, float], tags: dict[str, Any]) -> None:
        """The results files written in `folder`, with the study's summary figures."""


def load(config: DictConfig | None, sweeper: Any) -> SweepHook:
    """The hook the app config names (`optuna.hook`), else the no-op one."""
    path = OmegaConf.select(config, f"{NODE}.hook", default=None) if config is not None else None
    if not path:
        return SweepHook(config, sweeper)
    from hydra.utils import get_class

    try:
        cls = get_class(str(path))
    except Exception as e:  # noqa: BLE001 - any import failure means the same to the user
        raise SweeperError(f"{NODE}.hook={path} cannot be imported: {str(e).splitlines()[0]}") from None
    return cls(config, sweeper)


def receives_trial(config: DictConfig | None) -> bool:
    """Whether the app's config has the node that receives each job's trial (storage, study, number)."""
    node = OmegaConf.select(config, NODE, default=None) if config is not None else None
    return isinstance(node, DictConfig) and all(k in node for k in RECEIVER_KEYS)
