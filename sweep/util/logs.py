"""Tracebacks go to a log file, not the console.

When a store fails mid-sweep (a full disk, a database restarting), MLflow and SQLAlchemy log every failed call
with its traceback, and each job's error chains a few more: hundreds of lines around the one line that says what
happened and what to run next. So the console shows each logged record without its traceback, plus where the
traceback is written: the job's own log (Hydra's `<sweep dir>/<job>/<name>.log`) or, in the sweep's main
process, `<sweep dir>/multirun.log`. MLflow's loggers, which print on their own handler, are routed through the
same console. DROPOUT_DEBUG=1 (or HYDRA_FULL_ERROR=1) keeps every traceback on the console as well.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

LIBRARY_LOGGERS = ("mlflow", "alembic", "sqlalchemy")  # loggers that print tracebacks of their own


def debug() -> bool:
    return bool(os.environ.get("DROPOUT_DEBUG") or os.environ.get("HYDRA_FULL_ERROR"))


class LibraryTracebacks(logging.Filter):
    """Keeps off the console what a library logs with a traceback (MLflow logging every failed database call):
    the program's own line says what failed; the file keeps the library's record."""

    def filter(self, record: logging.LogRecord) -> bool:
        library = record.name.split(".")[0] in LIBRARY_LOGGERS
        return not (library and (record.exc_info or record.exc_text))


class QuietConsole(logging.Formatter):
    """A console formatter that leaves the traceback out and says which file holds it."""

    def __init__(self, base: logging.Formatter | None, where: str | None) -> None:
        super().__init__()
        self.base, self.where = base or logging.Formatter("%(message)s"), where

    def format(self, record: logging.LogRecord) -> str:
        if not (record.exc_info or record.exc_text or record.stack_info):
            return self.base.format(record)
        quiet = logging.makeLogRecord(record.__dict__)
        quiet.exc_info = quiet.exc_text = quiet.stack_info = None
        first = quiet.getMessage().strip().splitlines()
        quiet.msg, quiet.args = (first[0] if first else ""), None
        where = f"; traceback in {self.where}" if self.where else ""
        return f"{self.base.format(quiet)} ({_cause(record)}{where}; DROPOUT_DEBUG=1 prints it here)"


def _cause(record: logging.LogRecord) -> str:
    exc = record.exc_info[1] if record.exc_info else None
    if exc is None:
        return "traceback"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _console(handler: logging.Handler) -> bool:
    return (
        isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
        and getattr(handler, "stream", None) in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    )


def log_file() -> str | None:
    """The file the root logger writes to (where quiet_tracebacks sends tracebacks), or None."""
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    return files[0].baseFilename if files else None


def quiet_tracebacks(log_file: str | Path | None = None) -> None:
    """Console handlers of the root logger drop tracebacks and name `log_file` (else the root logger's own
    file handler) as where they are; library loggers print through the root logger, so their tracebacks reach
    that file too. With `log_file` and no file handler yet, one is added at DEBUG level."""
    if debug():
        return
    root = logging.getLogger()
    files = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
    if log_file is not None and not files:
        try:
            Path(log_file).parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(log_file)
        except OSError:  # a full or read-only folder: the console keeps its one-line records all the same
            handler = None
        if handler is not None:
            handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
            root.addHandler(handler)
            files = [handler]
    where = files[0].baseFilename if files else None
    for handler in root.handlers:
        if _console(handler) and not isinstance(handler.formatter, QuietConsole):
            handler.setFormatter(QuietConsole(handler.formatter, where))
            handler.addFilter(LibraryTracebacks())
    for name in LIBRARY_LOGGERS:  # their own console handler (MLflow's writes to a stream of its own) would
        lib = logging.getLogger(name)  # print the traceback anyway: they go through the root logger instead
        for handler in [h for h in lib.handlers if not isinstance(h, logging.FileHandler)]:
            lib.removeHandler(handler)
        lib.propagate = True
