"""Hydra callback: one MLflow parent run per multirun, whatever the sweeper or launcher.

The parent's id goes into the sweep folder, where every job (in this process, a joblib worker or
a SLURM node sharing the folder) finds it. At the end the parent gets a CSV of its children's
final metrics and a plot of train/test accuracy and the gap against dropout. If the sweep dies
with an exception, an exit hook still closes the parent as FAILED with what was done so far.
"""
from __future__ import annotations

import atexit
import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sweep import track

log = logging.getLogger("sweep")
_OPEN: list["MlflowSweepCallback"] = []  # parents this process has not closed yet


def close_open_parents(status: str) -> None:
    """End every parent run still open in this process: KILLED after Ctrl-C, FAILED after a crash."""
    while _OPEN:
        _OPEN.pop()._close(status)


atexit.register(close_open_parents, "FAILED")  # runs only if on_multirun_end never did


class MlflowSweepCallback(Callback):
    def __init__(self) -> None:
        self.client = None
        self.parent_id: str | None = None
        self.sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if not config.tracking.enabled:
            return
        self.sweep_dir = Path(config.hydra.sweep.dir)
        sweep_id = config.tracking.sweep_id or self.sweep_dir.name
        self.client, exp_id = track.connect(config.tracking)
        overrides = " ".join(config.hydra.overrides.task)
        tags = {"sweep_id": sweep_id, "sweep_role": "parent", "sweep_dir": str(self.sweep_dir),
                "overrides": overrides, "sweeper": config.hydra.sweeper.get("_target_", "").rsplit(".", 1)[-1],
                "launcher": config.hydra.launcher.get("_target_", "").rsplit(".", 1)[-1]}
        self.parent_id = self._shared_parent(exp_id, sweep_id) if config.tracking.sweep_id else None
        if self.parent_id is None:
            self.parent_id = track.start_run(self.client, exp_id, f"sweep {sweep_id}", tags).info.run_id
        track.write_parent(self.sweep_dir, self.parent_id, sweep_id)
        _OPEN.append(self)
        log.info("MLflow parent run %s (sweep %s) in %s", self.parent_id, sweep_id, track.redact(config.tracking.uri))

    def _shared_parent(self, exp_id: str, sweep_id: str) -> str | None:
        """Workers given the same tracking.sweep_id share the oldest parent run with that id."""
        runs = self.client.search_runs([exp_id], f"tags.sweep_id = '{sweep_id}' and tags.sweep_role = 'parent'",
                                       order_by=["attributes.start_time ASC"], max_results=1)
        return runs[0].info.run_id if runs else None

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if self in _OPEN:
            _OPEN.remove(self)
        self._close("FINISHED")

    def _close(self, status: str) -> None:
        if self.parent_id is None:
            return
        parent, self.parent_id = self.parent_id, None
        try:
            from sweep.summary import summarize_children

            summarize_children(self.client, parent, self.sweep_dir)
        except Exception as e:  # noqa: BLE001 - a failed summary must not hide the sweep's own outcome
            log.warning("could not summarise sweep %s: %s", parent, e)
        track.terminate(self.client, parent, status)
