"""The Optuna search behind `hydra/sweeper=optuna`: a generic Hydra sweeper, usable by any Hydra app.

    choices.py  the samplers, pruners and directions offered, and the code that builds them
    space.py    Hydra override grammar <-> Optuna distributions
    loop.py     the ask/tell loop over Hydra's launcher (study, locks, heartbeats)
    hook.py     how an app adds its own behaviour (named in its config), and the node that receives a trial
    trial.py    the job's side: storage, pruner, per-epoch reports (pruning), what the job tells its trial
    results.py  what a search leaves behind: results files, plots, the best configuration

`hydra_plugins/dropout_optuna_sweeper` only registers the config and forwards to `loop`; the
pre-flight check calls `check_options`. This project's own parts (objective names, threads, MLflow)
are in `sweep/optuna_hook.py`, which nothing here imports. Nothing heavy is imported until a function
needs it.
"""
from __future__ import annotations

from typing import Any


def check_options(options: dict[str, Any]) -> None:
    """Validate the sweeper's own options (sampler, direction, n_trials, storage...); raises SweeperError
    (one line per refused key)."""
    from sweep.search.loop import OptunaSweeperImpl

    OptunaSweeperImpl(**{k: v for k, v in options.items() if not k.startswith("_")})  # _target_, _recursive_
