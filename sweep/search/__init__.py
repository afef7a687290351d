"""The Optuna search behind `hydra/sweeper=optuna`.

    space.py    Hydra override grammar <-> Optuna distributions
    loop.py     the ask/tell loop over Hydra's launcher (study, locks, heartbeats)
    trial.py    the job's side: storage, pruner, per-epoch reports (pruning)
    results.py  what a search leaves behind: results files, plots, the best configuration

`hydra_plugins/dropout_optuna_sweeper` only registers the config and forwards to `loop`; the
pre-flight check calls `check_sweep`. Nothing heavy is imported until a function needs it.
"""
from __future__ import annotations

import inspect
from typing import Any


def check_sweep(options: dict[str, Any], arguments: list[str], config: Any) -> None:
    """Every check a sweep makes before its first trial, without opening the study or starting a run: the
    options (an unknown key included), the search space of `params` and the command line's sweep overrides
    `arguments`, direction against objective (from the composed `config`), the grid, the enqueued points.
    Raises SweeperError with one line."""
    from sweep.search.loop import OptunaSweeperImpl
    from sweep.search.space import SweeperError

    allowed = [p for p in inspect.signature(OptunaSweeperImpl.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise SweeperError(f"hydra.sweeper.{unknown[0]} is not an option of the Optuna sweeper; allowed: "
                           f"{', '.join(allowed)}")
    sweeper = OptunaSweeperImpl(**options)
    sweeper.config = config  # what setup() gives it in a sweep: the objective and the typed overrides
    sweeper.plan(arguments)
