"""End a finished process without the interpreter's teardown.

After its last exit handler, Python tears down every module it imported; with torch, its compiler (which
torch.optim imports) and MLflow that is ~4,000 modules and ~1.5 s per process on a 2-core CPU, paid again by
every job of a sweep run one process each (bench/trial.py measures the whole process). Everything a run
keeps is written by then: the exit handlers still run here (logging flushes and closes Hydra's log file,
open parent runs are ended, joblib stops its workers), then stdout and stderr are flushed, then `os._exit`.
When a thread that Python would wait for is still running, the ordinary exit (which waits) is kept.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading


def waiting_threads() -> list[threading.Thread]:
    """Live non-daemon threads other than this one: an ordinary exit would wait for them."""
    me = threading.current_thread()
    return [t for t in threading.enumerate() if t is not me and t.is_alive() and not t.daemon]


def exit_now(code: int = 0) -> None:
    """Exit with `code` after the exit handlers and a flush of stdout/stderr, skipping module teardown."""
    if waiting_threads():
        sys.exit(code)
    atexit._run_exitfuncs()  # what an ordinary exit runs first (LIFO), then it would tear the modules down
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # closed or replaced by a caller: nothing left to flush
            pass
    os._exit(code)
