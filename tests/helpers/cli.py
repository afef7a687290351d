"""The real CLI as a subprocess, kept small and inside a test's own folder, and the MLflow store it wrote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sweep.config import PROJECT_ROOT as ROOT


def tiny_overrides(data_root: Path, out: Path, epochs: int = 2) -> list[str]:
    """Keep a real CLI run small and inside `out` (its own MLflow and Optuna stores, sweep and run folders)."""
    return [
        f"data.root={data_root}",
        "data.verify=false",
        "data.download=false",
        "data.val_size=100",
        "data.train_eval_size=200",
        f"trainer.epochs={epochs}",
        "trainer.progress=false",
        "trainer.threads=1",
        f"tracking.uri=sqlite:///{out}/mlflow.db",
        f"tracking.artifact_location={out}/mlartifacts",
        f"tracking.optuna_storage=sqlite:///{out}/optuna.db",
        f"hydra.sweep.dir={out}/sweep",
        f"hydra.run.dir={out}/run",
    ]


_FLAGS_WITH_VALUE = {"-cd", "--config-dir", "-cp", "--config-path", "-cn", "--config-name", "-p", "--package"}


def split_flags(args) -> tuple[list[str], list[str]]:
    """(flags, overrides) of a test's arguments, a flag's value (`-cd DIR`) kept beside its flag."""
    flags, rest, args = [], [], list(args)
    while args:
        a = args.pop(0)
        if a.startswith("-"):
            flags.append(a)
            if a in _FLAGS_WITH_VALUE and args:
                flags.append(args.pop(0))
        else:
            rest.append(a)
    return flags, rest


def run_cli(args: list[str], timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    full_env.pop("DROPOUT_DEBUG", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "sweep" / "run.py"), *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def mlflow_runs(out: Path, experiment: str = "dropout"):
    """All runs of the store a test's CLI wrote, as MLflow Run objects."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    return client, ([] if exp is None else client.search_runs([exp.experiment_id], max_results=1000))
