"""dropout-sweep: measure what dropout does.

The house, top to bottom (one line per module: README "Layout"; tests/test_layers.py keeps the arrows down):

    entry   run.py, preflight.py, report.py, crosscheck.py
    app     job.py, parent.py, optuna_hook.py, study.py
    schema  config.py
    parts   training/ (pure torch), record/ (the only MLflow writer), analysis/ (the reader), search/ (Optuna)
    base    keys.py, protocol.py, util/ (leaves), models/, data/

Importing the package is cheap: nothing heavy is imported here.
"""
