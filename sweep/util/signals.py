"""SIGTERM is Ctrl-C with another exit code.

SLURM, `timeout`, `docker stop` and Kubernetes end a program with SIGTERM, whose default action kills
Python on the spot: no `finally`, so the current MLflow run, the sweep's parent and the Optuna trial
would stay RUNNING. Here SIGTERM raises `Terminated`, a KeyboardInterrupt, so it takes the path Ctrl-C
takes everywhere (the job ends its run KILLED, the Optuna sweeper FAILs the trials in flight, the
entry point closes the parent with its summary), and the program exits 143 (128 + 15) instead of 130.

Every process of a sweep installs the handler: the main one (sweep/run.py) and each job's process
(sweep/job.py), so a joblib/loky worker that gets SIGTERM ends its own run KILLED too. The worker's
`Terminated` travels back to the sweep like any job's exception and stops the whole sweep the same
way: a scheduler's SIGTERM to any process of the sweep means "stop", never "skip this point".
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

from sweep.util import procid

log = logging.getLogger("sweep")

EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT), the shell's 128 + 2
EXIT_TERMINATED = 143  # SIGTERM, the shell's 128 + 15


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; handled exactly like Ctrl-C."""

    def __init__(self, what: str = "SIGTERM") -> None:
        super().__init__(what)


_RECEIVED = False  # a SIGTERM reached this process


def _on_sigterm(signum, frame) -> None:
    # one clean-up: a second SIGTERM (SLURM and some supervisors repeat it) must not cut the first's short;
    # whoever sends it follows up with SIGKILL when it stops waiting
    global _RECEIVED
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _RECEIVED = True
    raise Terminated()


def received() -> bool:
    """Whether a SIGTERM reached this process."""
    return _RECEIVED


def check() -> None:
    """Raise `Terminated` again when a SIGTERM has arrived and ordinary work still goes on.

    Python drops an exception raised while it runs a `__del__` method, a weakref callback or a garbage
    collector callback ("Exception ignored in ..."). A SIGTERM whose handler ran at such a moment (SQLAlchemy's
    pool returns connections from weakref callbacks, during every MLflow write) was lost, and with SIGTERM
    ignored from then on, the sweep trained on until SIGKILL. Work that only runs when nobody is stopping (each
    epoch, each job's start, a wait for another process) calls this, so a lost interrupt is raised again
    within one epoch. Clean-up code never calls it."""
    if _RECEIVED:
        raise Terminated()


def install() -> None:
    """Make SIGTERM raise `Terminated` in this process (idempotent; only the main thread can)."""
    if threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGTERM)
    if current is _on_sigterm or current is signal.SIG_IGN:
        return  # installed already, or this process is ending and ignores further SIGTERMs
    signal.signal(signal.SIGTERM, _on_sigterm)


SWEEP_PID_ENV = "DROPOUT_SWEEP_PID"  # set by sweep/run.py; a job in another process watches that process


def die_with_the_sweep(interval: float = 1.0) -> None:
    """In a job that runs in a process of its own (a joblib/loky worker, hydra/launcher=isolated): when the
    sweep's process dies without stopping it (kill -9, a crash), SIGTERM this process, so its run ends KILLED
    instead of training on as an orphan that records a FINISHED run nobody waits for. A daemon thread notices
    the death within `interval` seconds: the job's parent changes (the orphan is re-parented) or the sweep's
    process is gone. Nothing happens in the sweep's own process (the basic launcher) or outside a sweep."""
    sweep_pid = os.environ.get(SWEEP_PID_ENV, "")
    if not sweep_pid.isdigit() or int(sweep_pid) == os.getpid() or getattr(die_with_the_sweep, "_on", False):
        return
    parent, sweep = os.getppid(), int(sweep_pid)
    me = os.getpid()

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent or not procid.alive(sweep):
                log.error("the sweep's process %d is gone: stopping this job (its run ends KILLED)", sweep)
                os.kill(me, signal.SIGTERM)
                return

    threading.Thread(target=watch, name="die-with-the-sweep", daemon=True).start()
    die_with_the_sweep._on = True


def exit_code(exc: BaseException) -> int:
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def describe(exc: BaseException) -> str:
    return "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
