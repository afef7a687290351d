"""The parent-run file: the multirun callback writes its parent run's id into the sweep folder, where every job
(in this process, a joblib worker, a SLURM node sharing the folder) finds it."""

from __future__ import annotations

import json
from pathlib import Path

from sweep.keys import PARENT_FILE
from sweep.util import atomic


def write_parent(sweep_dir: str | Path, run_id: str, sweep_id: str) -> None:
    atomic.write_text(Path(sweep_dir) / PARENT_FILE, json.dumps({"run_id": run_id, "sweep_id": sweep_id}))


def find_parent(sweep_dir: str | Path | None) -> tuple[str | None, str | None]:
    """(parent run id, sweep id) written by the multirun callback, or (None, None)."""
    path = Path(sweep_dir) / PARENT_FILE if sweep_dir else None
    if path is None or not path.exists():
        return None, None
    info = json.loads(path.read_text())
    return info["run_id"], info["sweep_id"]
