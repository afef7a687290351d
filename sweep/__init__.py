"""dropout-sweep: measure what dropout does.

    conf/ -> sweep/run.py (entry, pre-flight) -> sweep/job.py (one job) -> data/, models/, sweep/training/train.py,
    sweep/track.py

    run.py        `python sweep/run.py [-m] key=value`: preflight, then Hydra calls job.run
    job.py        one job: validate -> data -> model -> fit -> record -> objective
    config.py     the typed schema, validate(), run names and ${root:}
    paths.py      PROJECT_ROOT, once (a leaf)
    preflight.py  command-line checks before any job
    train.py      the pure torch loop; allowed precisions, devices, optimizers, metrics and their directions
    schedules.py  learning-rate schedules (none, cosine, step; warm-up), stepped per batch
    calibration.py  NLL, ECE, Brier; MC-dropout evaluation (T passes with dropout on)
    track.py      MLflow: a job's run lifecycle (job_run), connect (tables made once), stale-run cleanup
                  (procid.py: who a process is)
    parent.py     one MLflow parent run per multirun (a Hydra callback): folder in use, orphans, outages; sweepdir.py:
                  one folder per sweep and its flock
    resume.py     grids resume from the runs that FINISHED in the sweep
    signals.py    SIGTERM handled like Ctrl-C
    analysis.py   runs -> settings and replicates -> tables, figures, the parent's summary (stats.py: the statistics)
    report.py     `python -m sweep.report`: analysis.ipynb -> HTML
    redact.py, dblock.py, sqlite_wal.py   secrets masking, a lock on a shared database, SQLite WAL mode
    atomic.py     results files written to a temporary file and renamed: never truncated
    optuna_hook.py  this app's hook into the generic Optuna sweeper
    search/       the Optuna search behind hydra/sweeper=optuna (the plugin is a thin shim over it)
    study.py      hydra/sweeper=study: exploratory phase, a design fixed from it, confirmatory phase
    protocol.py   the verdict words, smallest effects of interest and study phases (imports nothing)
    machine.py    the CPU model, oneDNN ISA family and versions every run records
    crosscheck.py `python -m sweep.crosscheck a b`: two runs of one study compared verdict by verdict

Importing the package is cheap: nothing heavy is imported here. No module imports in a circle, and the leaves
(paths, atomic, dblock, redact, sqlite_wal, procid, signals, fastexit, logs, protocol) import only each other:
tests/test_layers.py reads every import, those inside functions too.
"""
