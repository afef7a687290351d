"""dropout-sweep: measure what dropout does.

    conf/ -> sweep/run.py (entry, pre-flight) -> sweep/job.py (one job) -> data/, models/, sweep/train.py, sweep/track.py
    sweep/parent.py   one MLflow parent run per multirun (a Hydra callback)
    sweep/search/     the Optuna search behind hydra/sweeper=optuna (the plugin is a thin shim over it)
    sweep/analysis.py runs -> tables and figures (parent summary, notebook, report)

Importing the package is cheap: nothing heavy is imported here.
"""
