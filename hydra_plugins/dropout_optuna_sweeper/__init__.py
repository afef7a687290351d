"""Hydra sweeper plugin on current Optuna: `python sweep/run.py -m hydra/sweeper=optuna +search=dropout`.

`optuna_sweeper.OptunaSweeper` is the public class Hydra discovers; the logic lives in `_impl`
(search-space translation in `_space`, end-of-sweep reporting in `_report`), imported only when the
sweeper is used, so Hydra's plugin scan stays fast.
"""
