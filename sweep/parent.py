"""Hydra callback: one MLflow parent run per multirun, whatever the sweeper or launcher.

The parent's id goes into the sweep folder, where every job (in this process, a joblib worker or
a SLURM node sharing the folder) finds it. At the end the parent gets a CSV of its children's
final metrics and a plot of train/test accuracy and the gap against dropout, and the console shows the
table of points (sweep.analysis.end_of_sweep_text). If the sweep dies
with an exception, an exit hook still closes the parent as FAILED with what was done so far.

Several workers (processes or machines) given one `tracking.sweep_id` share one parent: the lookup
and the creation happen under a lock every worker can reach (a PostgreSQL advisory lock, MySQL's
GET_LOCK or an flock beside a SQLite file, on the MLflow store itself when it is a database, else
on the Optuna storage), so workers starting in the same instant cannot create two. Each worker ends
the shared parent when it ends, with a summary of every child finished by then, re-read until it
no longer changes; so the status and summary left on it are those of the last worker to end.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
from pathlib import Path
from typing import Iterator

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from sweep import signals, sweepdir, track
from sweep.dblock import db_lock, lockable

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
        self.tracking_uri: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if not config.tracking.enabled:
            return
        self.sweep_dir = Path(config.hydra.sweep.dir)
        self.tracking_uri = config.tracking.uri
        sweep_id = config.tracking.sweep_id or self.sweep_dir.name
        self.client, exp_id = track.connect(config.tracking)
        overrides = " ".join(config.hydra.overrides.task)
        tags = {"sweep_id": sweep_id, "sweep_role": "parent", "sweep_dir": str(self.sweep_dir),
                "overrides": overrides, "sweeper": config.hydra.sweeper.get("_target_", "").rsplit(".", 1)[-1],
                "launcher": config.hydra.launcher.get("_target_", "").rsplit(".", 1)[-1]}
        hold = sweepdir.Hold(self.client, self.sweep_dir, config.tracking.sweep_id)  # no silent take-over
        if config.tracking.sweep_id:
            with parent_lock(_lock_urls(config), f"{config.tracking.experiment}/{sweep_id}") as held:
                self.parent_id = self._shared_parent(exp_id, sweep_id)
                if self.parent_id is None:
                    mine = track.start_run(self.client, exp_id, f"sweep {sweep_id}", tags).info.run_id
                    self.parent_id = mine if held else self._converge(exp_id, sweep_id, mine)
        else:
            self.parent_id = track.start_run(self.client, exp_id, f"sweep {sweep_id}", tags).info.run_id
        track.write_parent(self.sweep_dir, self.parent_id, sweep_id)
        hold.release()
        _OPEN.append(self)
        log.info("MLflow parent run %s (sweep %s) in %s", self.parent_id, sweep_id, track.redact(config.tracking.uri))

    def _shared_parent(self, exp_id: str, sweep_id: str) -> str | None:
        """Workers given the same tracking.sweep_id share the oldest parent run with that id."""
        runs = self.client.search_runs([exp_id], f"tags.sweep_id = '{sweep_id}' and tags.sweep_role = 'parent'",
                                       order_by=["attributes.start_time ASC"], max_results=100)
        runs = sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))
        return runs[0].info.run_id if runs else None

    def _converge(self, exp_id: str, sweep_id: str, mine: str) -> str:
        """No lock could be taken: if another worker created a parent meanwhile, keep the oldest, delete ours.
        (Best effort: two workers whose creations cross within milliseconds may still keep one each.)"""
        oldest = self._shared_parent(exp_id, sweep_id) or mine
        if oldest != mine:
            log.info("another worker created the parent of sweep %s first: using %s", sweep_id, oldest)
            self.client.delete_run(mine)
        return oldest

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if self in _OPEN:
            _OPEN.remove(self)
        self._close("FINISHED")

    def _close(self, status: str) -> None:
        if self.parent_id is None:
            return
        parent, self.parent_id = self.parent_id, None
        if status != "FINISHED":  # no child of ours left RUNNING (a joblib worker stopped mid-job)
            with contextlib.suppress(Exception):
                signals.end_orphaned_children(self.client, parent)
        try:
            from sweep.analysis import children_frame, end_of_sweep_text, summarize_children

            for _ in range(3):  # a worker sharing the parent may end a child (or write its summary) meanwhile
                df = summarize_children(self.client, parent, self.sweep_dir)
                if _states(children_frame(self.client, parent)) == _states(df):
                    break
            print("\n" + end_of_sweep_text(df, parent, self.sweep_dir, self.tracking_uri), flush=True)
        except Exception as e:  # noqa: BLE001 - a failed summary must not hide the sweep's own outcome
            log.warning("could not summarise sweep %s: %s", parent, e)
        track.terminate(self.client, parent, status)


def _states(df) -> set[tuple[str, str]]:
    return set(zip(df.run_id, df.status))


# ------------------------------------------------------------------------------------- the parent lock
def _lock_urls(config: DictConfig) -> list[str]:
    """Databases every worker of a shared sweep reaches, best first: the MLflow store (when it is a
    database), the Optuna sweeper's storage, tracking.optuna_storage."""
    out = []
    for key in ("tracking.uri", "hydra.sweeper.storage", "tracking.optuna_storage"):
        try:
            url = OmegaConf.select(config, key, default=None)
        except Exception:  # noqa: BLE001 - e.g. an ${oc.env:...} that is not set: not a lock candidate
            continue
        if isinstance(url, str) and lockable(url) and url not in out:
            out.append(url)
    return out


@contextlib.contextmanager
def parent_lock(urls: list[str], name: str, timeout: float = 60) -> Iterator[str | None]:
    """Hold a lock named `name` on the first of `urls` that can take one; yields that URL, or None."""
    with contextlib.ExitStack() as stack:
        held = None
        for url in urls:
            try:
                stack.enter_context(db_lock(url, name, timeout))
                held = url
                break
            except Exception as e:  # noqa: BLE001 - try the next database, else go on unlocked
                log.warning("could not lock %s for the shared parent run: %s", track.redact(url),
                            track.redact(str(e)).splitlines()[0] if str(e) else type(e).__name__)
        if held is None:
            log.warning("no database to lock for sweep %s: workers starting in the same instant might "
                        "create two parent runs", name)
        yield held
