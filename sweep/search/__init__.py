"""The Optuna search behind `hydra/sweeper=optuna`: a generic Hydra sweeper, usable by any Hydra app.

    choices.py  the samplers, pruners and directions offered, and the code that builds them
    space.py    Hydra override grammar <-> Optuna distributions
    loop.py     the ask/tell loop over Hydra's launcher (study, locks, heartbeats)
    hook.py     how an app adds its own behaviour (named in its config), and the node that receives a trial
    trial.py    the job's side: storage, pruner, per-epoch reports (pruning), what the job tells its trial
    retry.py    one retry policy for every storage call (a database outage of a minute is ridden out)
    isolated.py a launcher that runs each job in its own process (one dead job costs one trial)
    results.py  what a search leaves behind: results files, plots, the best configuration

`hydra_plugins/dropout_optuna_sweeper` only registers the config and forwards to `loop`; the
pre-flight check calls `check_sweep`. This project's own parts (objective names, threads, MLflow)
are in `sweep/optuna_hook.py`, which nothing here imports. Nothing heavy is imported until a function
needs it.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any


def check_sweep(options: dict[str, Any], arguments: list[str], config: Any) -> None:
    """Every check a sweep makes before its first trial, without opening the study or starting a run: the
    options (an unknown key included), the search space of `params` and the command line's sweep overrides
    `arguments`, direction against objective (from the composed `config`), the grid, the enqueued points, and an
    existing study with the same name that the sweep could not continue (other directions or objectives, or a
    parameter drawn from another kind of distribution). Raises SweeperError with one line."""
    # Hydra imports the plugin at every start-up: optuna loads only when a sweep is checked
    from sweep.search.loop import OptunaSweeperImpl
    from sweep.search.space import SweeperError

    options = {k: v for k, v in options.items() if not k.startswith("_")}  # _target_, _recursive_
    allowed = [p for p in inspect.signature(OptunaSweeperImpl.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise SweeperError(
            f"hydra.sweeper.{unknown[0]} is not an option of the Optuna sweeper; allowed: {', '.join(allowed)}"
        )
    sweeper = OptunaSweeperImpl(**options)
    sweeper.config = config  # what setup() gives it in a sweep: the objective and the typed overrides
    # plan()'s warnings are the sweep's to print when it runs; a refused command prints its one line alone
    quiet = logging.getLogger("sweep.search.loop")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        space, names, _, _ = sweeper.plan(arguments)
    finally:
        quiet.setLevel(level)
    sweeper.check_existing_study(space, names)  # read-only: an existing study this sweep cannot continue
