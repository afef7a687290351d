"""Publishing a sweep's summary (sweep/analysis/summary.py computes it): its files are written aside, then
copied into the sweep folder (each renamed into place, sweep/util/atomic.py) and logged onto the parent run, and
its tags and metrics set there. Each place gets what it can take: a full sweep folder still leaves MLflow the
summary, and the first failure is raised at the end."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from mlflow.tracking import MlflowClient

from sweep.util import atomic


def publish(
    client: MlflowClient,
    parent_id: str,
    sweep_dir: Path | None,
    files: dict[str, Callable[[Path], None]],
    tags: dict[str, str],
    metrics: dict[str, float],
    extra: Iterable[Path] = (),
) -> None:
    """`files` (name -> writer) into `sweep_dir` and onto the parent, `extra` files onto the parent only (a
    study's plan, which is in the folder already), then `tags` and `metrics` on the parent."""
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp)
        for name, write in files.items():
            write(staged / name)

        def into_sweep_folder() -> None:
            for name in files if sweep_dir else ():
                atomic.copy(staged / name, Path(sweep_dir) / name)

        def onto_parent() -> None:
            for path in [staged / name for name in files] + list(extra):
                client.log_artifact(parent_id, str(path))

        def summary_values() -> None:
            for k, v in tags.items():
                client.set_tag(parent_id, k, v)
            for k, v in metrics.items():
                client.log_metric(parent_id, k, v)

        failed: list[Exception] = []
        for step in (into_sweep_folder, onto_parent, summary_values):
            try:
                step()
            except Exception as e:  # noqa: BLE001
                failed.append(e)
        if failed:
            raise failed[0]
