"""The real CLI started in the background, for tests that signal it mid-run (tests/test_signals.py,
tests/test_resume.py, tests/test_sweep_dirs.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from helpers.cli import ROOT, mlflow_runs, tiny_overrides

# How long the runs are that tests signal mid-way, in epochs of the tiny data (~40 ms an epoch here; 300 epochs
# once outlasted a joblib pool's start-up, and stopped doing so when training got faster):
LONG_EPOCHS = 3000  # a run a test interrupts: still training when the signal lands, on any machine
CATCHABLE_EPOCHS = 200  # a run a test must catch mid-way (a few seconds) and that must also finish


def start(
    args: list[str],
    out: Path,
    tiny_root: Path,
    epochs: int,
    log_name: str = "cli.log",
    multirun: bool = True,
    tiny: bool = True,
) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    env.pop("DROPOUT_DEBUG", None)
    log = open(out / log_name, "w")  # a file, not a pipe: a full pipe would stall the child
    flags = ["-m"] if multirun else []
    base = tiny_overrides(tiny_root, out, epochs) if tiny else []
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "sweep" / "run.py"), *flags, *base, *args],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    proc.out, proc.log_name = out, log_name  # where end() finds its log
    return proc


def epoch_logged(out: Path, log_name: str = "cli.log") -> bool:
    """The child logged an epoch, so it has created the store: opening the store before that can break
    the child's first migration of a fresh SQLite file (two processes creating the tables at once)."""
    path = out / log_name
    return path.exists() and "epoch 1/" in path.read_text(errors="replace")


def runs_with_metrics(out: Path, ready: Path | None = None, log_name: str = "cli.log"):
    """MLflow runs that recorded an epoch; [] while the store is not ready (created by the child)."""
    if ready is not None and not ready.exists():
        return []
    if not epoch_logged(out, log_name):
        return []
    try:
        _, runs = mlflow_runs(out)
    except Exception:  # noqa: BLE001 - the store may be mid-migration
        return []
    return [r for r in runs if "test_acc" in r.data.metrics]


def wait_for(predicate, out: Path, timeout: float = 300, log_name: str = "cli.log", what: str = "an epoch"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"no {what} in time:\n" + (out / log_name).read_text()[-3000:])


def wait_for_epoch(out: Path, n_runs: int = 1, ready: Path | None = None, timeout: float = 300):
    return wait_for(lambda: len(runs_with_metrics(out, ready)) >= n_runs, out, timeout)


def init_store(out: Path) -> None:
    """Create the MLflow tables once, before processes that start together use the store."""
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow.db").search_experiments()


def log_tail(out, chars: int = 3000) -> str:
    """The end of the CLI log a `start`ed process writes (for assertion messages)."""
    return (out / "cli.log").read_text()[-chars:]


def end(proc, timeout: float = 90, out: Path | None = None) -> int:
    """Wait for a `start`ed process and return its exit code; never leave it running. When it does not end in
    time, it is asked for a stack dump of every thread first (SIGUSR1: faulthandler, sweep/run.py), and the
    failure shows where it waited, with the end of its log when `out` is given."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        import signal

        proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
        out = out if out is not None else getattr(proc, "out", None)
        log_name = getattr(proc, "log_name", "cli.log")
        tail = (out / log_name).read_text(errors="replace")[-8000:] if out is not None else "(no log)"
        raise AssertionError(
            f"the process had not ended {timeout:.0f} s after the signal; its log and the stack "
            f"dump it printed:\n{tail}"
        ) from None
    finally:
        proc.kill()


def optuna_args(out, *extra: str) -> list[str]:
    """A small +search=dropout Optuna sweep with its storage in the test's folder and no pruning."""
    return [
        "hydra/sweeper=optuna",
        "+search=dropout",
        f"hydra.sweeper.storage=sqlite:///{out}/optuna.db",
        "hydra.sweeper.study_name=t",
        "hydra.sweeper.pruner=none",
        *extra,
    ]
