"""Every sweep its own folder and its own parent run, unless the user shares one on purpose.

Hydra's default `runs/multirun/${now:...}` gives two sweeps started in the same second one folder:
one `mlflow_parent.json` (all runs under one parent), one `.hydra/`, one `sweep_results.csv`. So:

- `${sweep_dir:<parent folder>}` (conf/config.yaml's default `hydra.sweep.dir`) claims
  `<parent>/<time>` with an atomic mkdir, and `<time>-2`, `<time>-3`... when another sweep has it.
  The claim is made once per process (pre-flight and Hydra both resolve the folder; they get the same
  one) and travels to every job through the config's resolver cache, which Hydra copies into each
  job's config (the basic launcher, joblib/loky workers, submitit jobs) just as it does for `${now:}`.
- A sweep started in a folder whose parent run is still RUNNING (in a live process: start-up has
  already ended the runs of dead ones, `track.close_stale_runs`) refuses with one line, exit 2
  (sweep/parent.py),
  unless `tracking.sweep_id` is given, which is how workers share a parent on purpose. The check
  and the writing of `mlflow_parent.json` happen under an flock on the folder, so two sweeps
  started together in one explicit `hydra.sweep.dir` cannot both pass it.
  A rerun in the same `hydra.sweep.dir` after the first one ended is fine (the Optuna resume).
"""

from __future__ import annotations

import datetime
import fcntl
import logging
import os
import threading
from pathlib import Path

from omegaconf import OmegaConf

log = logging.getLogger("sweep")

TIME_FORMAT = "%Y-%m-%d_%H-%M-%S"
LOCK_FILE = ".mlflow_parent.lock"
_claimed: dict[tuple[str, str], str] = {}
_claim_lock = threading.Lock()


def claim(parent: str, fmt: str = TIME_FORMAT) -> str:
    """`<parent>/<now>`, or `<now>-2`, `-3`... if taken; the same answer for the rest of this process."""
    key = (str(parent), str(fmt))
    with _claim_lock:
        if key not in _claimed:
            stamp = datetime.datetime.now().strftime(fmt)
            base = Path(parent)
            try:
                base.mkdir(parents=True, exist_ok=True)
                n = 1
                while True:
                    path = base / (stamp if n == 1 else f"{stamp}-{n}")
                    try:
                        path.mkdir()
                        break
                    except FileExistsError:
                        n += 1
            except OSError:  # not writable: pre-flight's writability check reports it in one line
                path = base / stamp
            _claimed[key] = str(path)
        return _claimed[key]


OmegaConf.register_new_resolver("sweep_dir", claim, use_cache=True, replace=True)


class Hold:
    """An flock on the sweep folder, held from the in-use check (sweep/parent.py) until `mlflow_parent.json` is
    written, so that two sweeps started together in one folder cannot both pass the check."""

    def __init__(self, sweep_dir: Path) -> None:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(sweep_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None
