"""Results files are replaced, never truncated: write a temporary file beside the target, then rename it.

A full disk or a Ctrl-C in the middle of a write leaves the previous file whole (and a stray temporary
file at worst, removed when the write fails); readers never see half a file. Used for every results
and summary file the project writes: sweep_results.csv, sweep_settings.csv, the gap plot, mlflow_parent.json
and the Optuna search's results files.

    with atomic.path(folder / "sweep_results.csv") as tmp:
        frame.to_csv(tmp, index=False)          # any writer that takes a path (savefig too: the suffix is kept)
    atomic.write_text(folder / "x.json", text)
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path in `target`'s folder (same suffix); on success it replaces `target` in one
    rename, on any error it is removed and `target` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp{target.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # on disk before the rename: a crash cannot leave an empty target
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text(target: str | Path, text: str) -> None:
    with path(target) as tmp:
        tmp.write_text(text)


def copy(source: str | Path, target: str | Path) -> None:
    """Copy a finished file into place atomically."""
    import shutil

    with path(target) as tmp:
        shutil.copyfile(source, tmp)
