"""Hydra sweeper plugin on current Optuna: `python sweep/run.py -m hydra/sweeper=optuna +search=dropout`.

Only what Hydra discovers lives here: `config.OptunaSweeperConf` (registered as `hydra/sweeper=optuna`)
and `optuna_sweeper.OptunaSweeper`, which forwards to `sweep.search` (imported lazily, when the
sweeper is used, so Hydra's plugin scan on every start stays fast).
"""
