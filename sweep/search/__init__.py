"""The Optuna search behind `hydra/sweeper=optuna`.

    space.py    Hydra override grammar <-> Optuna distributions
    loop.py     the ask/tell loop over Hydra's launcher (study, locks, heartbeats)
    trial.py    the job's side: storage, pruner, per-epoch reports (pruning)
    results.py  what a search leaves behind: results files, plots, the best configuration

`hydra_plugins/dropout_optuna_sweeper` only registers the config and forwards to `loop`; the
pre-flight check calls `check_options`. Nothing heavy is imported until a function needs it.
"""
from __future__ import annotations

from typing import Any


def check_options(options: dict[str, Any]) -> None:
    """Validate the sweeper's own options (sampler, direction, n_trials, storage...); raises SweeperError."""
    from sweep.search.loop import OptunaSweeperImpl

    OptunaSweeperImpl(**options)
