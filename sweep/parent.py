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
import json
import logging
import sys
from pathlib import Path
from typing import Iterator

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from sweep import analysis, record
from sweep import protocol as P
from sweep.config import run_name, validate
from sweep.util import logs, sweepdir
from sweep.util.dblock import LockTimeout, db_lock, lockable
from sweep.util.redact import first_line, redact

log = logging.getLogger("sweep")
_OPEN: list["MlflowSweepCallback"] = []  # parents this process has not closed yet


def close_open_parents(status: str) -> None:
    """End every parent run still open in this process: KILLED after Ctrl-C, FAILED after a crash."""
    while _OPEN:
        _OPEN[-1]._close(status)  # it leaves the list once ended (or once ending it failed)


def _at_exit() -> None:
    """The exit hook: a parent the program could not close (the store is gone or full) is logged in one line;
    the next start-up on this host ends it KILLED."""
    try:
        close_open_parents("FAILED")
    except Exception as e:  # noqa: BLE001
        log.warning("could not end the sweep's parent run: %s", e, exc_info=True)


atexit.register(_at_exit)  # runs only if on_multirun_end never did


class MlflowSweepCallback(Callback):
    def __init__(self) -> None:
        self.client = None
        self.parent_id: str | None = None
        self.sweep_dir: Path | None = None
        self.tracking_uri: str | None = None
        self.store: tuple[Path, int] | None = None  # a SQLite store's file and inode (_store_identity)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        """Find or create the sweep's parent run. Hydra only warns when a callback raises, and the jobs would
        then train as orphans: a failure here ends the program with one line (exit 1) before any job."""
        if not config.tracking.enabled:
            return
        try:
            self._start(config)
        except Exception as e:  # noqa: BLE001 - every cause means the same to the user
            print(
                f"error: no MLflow parent run for this sweep, so no job was started: {type(e).__name__}: "
                f"{first_line(str(e), default='')}",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(1) from None  # not an Exception: Hydra's callback runner lets it through

    def _start(self, config: DictConfig) -> None:
        self.sweep_dir = Path(config.hydra.sweep.dir)
        logs.quiet_tracebacks(self.sweep_dir / "multirun.log")  # the sweep's own tracebacks: a file, not the console
        self.tracking_uri = config.tracking.uri
        sweep_id = config.tracking.sweep_id or self.sweep_dir.name
        self.client, exp_id = record.connect(config.tracking)
        overrides = " ".join(config.hydra.overrides.task)
        tags = {
            "sweep_id": sweep_id,
            "sweep_role": "parent",
            "sweep_dir": str(self.sweep_dir),
            "overrides": overrides,
            "sweeper": config.hydra.sweeper.get("_target_", "").rsplit(".", 1)[-1],
            "launcher": config.hydra.launcher.get("_target_", "").rsplit(".", 1)[-1],
        }
        hold = sweepdir.Hold(self.sweep_dir)
        if not config.tracking.sweep_id:  # workers sharing a sweep id share the parent on purpose
            _refuse_a_folder_in_use(self.client, self.sweep_dir, hold)  # no silent take-over
        if config.tracking.sweep_id:
            with parent_lock(_lock_urls(config), f"{config.tracking.experiment}/{sweep_id}") as held:
                self.parent_id = self._shared_parent(exp_id, sweep_id)
                if self.parent_id is None:
                    mine = record.start_run(self.client, exp_id, f"sweep {sweep_id}", tags).info.run_id
                    self.parent_id = mine if held else self._converge(exp_id, sweep_id, mine)
        else:
            self.parent_id = record.start_run(self.client, exp_id, f"sweep {sweep_id}", tags).info.run_id
        self.store = _store_identity(config.tracking.uri)
        _OPEN.append(self)  # from here on an exit hook ends the parent, whatever happens
        record.write_parent(self.sweep_dir, self.parent_id, sweep_id)
        hold.release()
        log.info("MLflow parent run %s (sweep %s) in %s", self.parent_id, sweep_id, redact(config.tracking.uri))

    def _shared_parent(self, exp_id: str, sweep_id: str) -> str | None:
        """Workers given the same tracking.sweep_id share the oldest parent run with that id."""
        runs = self.client.search_runs(
            [exp_id],
            f"tags.sweep_id = '{sweep_id}' and tags.sweep_role = 'parent'",
            order_by=["attributes.start_time ASC"],
            max_results=100,
        )
        runs = sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))
        return runs[0].info.run_id if runs else None

    def _converge(self, exp_id: str, sweep_id: str, mine: str) -> str:
        """No lock could be taken: if another worker created a parent meanwhile, keep the oldest, delete ours.
        (Best effort: two workers whose creations cross within milliseconds may still keep one each.)"""
        oldest = self._shared_parent(exp_id, sweep_id) or mine
        if oldest != mine:
            log.info("another worker created the parent of sweep %s first: using %s", sweep_id, oldest)
            record.delete_run(self.client, mine)
        return oldest

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        self._close("FINISHED")

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        self._runs_before_job = record.runs_started()

    def on_job_end(self, config: DictConfig, job_return, **kwargs) -> None:
        """A job that raised before its MLflow run began (out of memory building the model, data that cannot
        be read) still gets a run, FAILED with the error: every job the sweep launched is counted."""
        if (
            job_return.status != JobStatus.FAILED
            or not config.tracking.enabled
            or record.runs_started() != getattr(self, "_runs_before_job", record.runs_started())
        ):
            return
        e = _job_error(job_return)
        hc = config.hydra
        tags = {
            "job_num": hc.job.get("num"),
            "overrides": " ".join(hc.overrides.task),
            "optuna_trial": OmegaConf.select(config, "optuna.trial_number", default=None),
            "optuna_study": OmegaConf.select(config, "optuna.study_name", default=None),
        }
        try:
            name, params = _job_identity(config)
            record.record_failed_run(config.tracking, name, tags, hc.sweep.dir, f"{type(e).__name__}: {e}", params)
        except Exception as err:  # noqa: BLE001 - the job's own error is what the user must see
            log.warning(
                "could not record the failed job in MLflow: %s",
                first_line(str(err), default=type(err).__name__),
            )

    def _close(self, status: str) -> None:
        """Summarise, then end the parent with `status`; KILLED when Ctrl-C comes during the summary. The parent
        leaves the open list only once it has ended, so an interrupt at any point still ends it."""
        if self.parent_id is None:
            if self in _OPEN:
                _OPEN.remove(self)
            return
        parent = self.parent_id
        gone = _store_gone(self.store)
        if gone:  # `rm -rf runs/` while the sweep ran: there is no parent left to end, and no summary to make
            self.parent_id = None
            if self in _OPEN:
                _OPEN.remove(self)
            print(
                f"error: {gone}: the runs this sweep recorded there are lost; run the command again to train "
                "them again",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(1)
        try:
            if status != "FINISHED":  # no child of ours left RUNNING (a joblib worker stopped mid-job)
                with contextlib.suppress(Exception):
                    record.end_orphaned_children(self.client, parent)
            try:
                for _ in range(3):  # a worker sharing the parent may end a child (or write its summary) meanwhile
                    df = summarize_sweep(self.client, parent, self.sweep_dir)
                    if _states(analysis.children_frame(self.client, parent)) == _states(df):
                        break
                print(
                    "\n"
                    + analysis.end_of_sweep_text(df, parent, self.sweep_dir, self.tracking_uri, _plan(self.sweep_dir)),
                    flush=True,
                )
            except Exception as e:  # noqa: BLE001 - a failed summary must not hide the sweep's own outcome
                log.warning(
                    "could not summarise sweep %s: %s: %s", parent, type(e).__name__, first_line(str(e), default="")
                )
                with contextlib.suppress(Exception):
                    record.set_tags(self.client, parent, {"summary_error": f"{type(e).__name__}: {e}"})
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            try:
                record.terminate(self.client, parent, status)
            finally:
                self.parent_id = None
                if self in _OPEN:
                    _OPEN.remove(self)


def _job_identity(config: DictConfig) -> tuple[str, dict[str, str]]:
    """The name and params the job's own run would have had (so the summary can place it), or its number
    and the raw params when its config is the problem."""
    task = OmegaConf.to_container(OmegaConf.masked_copy(config, [k for k in config if k != "hydra"]), resolve=True)
    params = record.params_from_config(task)
    try:
        c = validate(config)  # drops the hydra node itself
        params.update({f"layer{i}_drop_prob": str(p) for i, p in enumerate(c.layer_rates, start=1)})
        return run_name(c), params
    except Exception:  # noqa: BLE001
        return f"job {config.hydra.job.get('num')}", params


def _job_error(job_return) -> BaseException:
    """The exception a failed job raised (Hydra re-raises it from `return_value`)."""
    try:
        job_return.return_value
    except BaseException as e:  # noqa: BLE001
        return e
    return RuntimeError("the job failed")


def _store_identity(uri: str) -> tuple[Path, int] | None:
    """A SQLite store's file and inode at the start of the sweep (None for a server or another database)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri.removeprefix("sqlite:///"))
    try:
        return path, path.stat().st_ino
    except OSError:
        return None


def _store_gone(identity: tuple[Path, int] | None) -> str | None:
    """Why the store the sweep started on is no longer there (deleted, or deleted and made anew), or None."""
    if identity is None:
        return None
    path, inode = identity
    try:
        now = path.stat().st_ino
    except OSError:
        return f"the MLflow store {path} was deleted while the sweep ran"
    return None if now == inode else f"the MLflow store {path} was deleted and made anew while the sweep ran"


def summarize_sweep(client, parent_id: str, sweep_dir: Path | None):
    """The parent run's summary: computed by the reader from the parent's children, published through the
    store's writer into the sweep folder and onto the parent (a study's plan too); the children's frame."""
    df = analysis.children_frame(client, parent_id)
    s = analysis.summarize(df)
    plan = Path(sweep_dir) / P.PLAN_ARTIFACT if sweep_dir else None
    extra = [plan] if plan is not None and plan.is_file() else []  # a study's frozen design
    record.publish(client, parent_id, sweep_dir, s.files(), s.tags, s.metrics, extra)
    return df


def _plan(sweep_dir: Path | None) -> dict | None:
    """A study's plan (sweep/study.py writes it into the sweep folder before its confirmatory phase), or None."""
    path = sweep_dir / P.PLAN_ARTIFACT if sweep_dir else None
    try:
        return json.loads(path.read_text()) if path is not None and path.is_file() else None
    except (OSError, ValueError):
        return None


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
def parent_lock(urls: list[str], name: str, timeout: float | None = -1) -> Iterator[str | None]:
    """Hold a lock named `name` on the first of `urls` that can take one; yields that URL, or None.
    A lock another process keeps past the timeout (sweep/util/dblock.py) is an error, not a reason to go on unlocked."""
    with contextlib.ExitStack() as stack:
        held = None
        for url in urls:
            try:
                stack.enter_context(db_lock(url, name, timeout))
                held = url
                break
            except LockTimeout:
                raise
            except Exception as e:  # noqa: BLE001 - try the next database, else go on unlocked
                log.warning(
                    "could not lock %s for the shared parent run: %s",
                    redact(url),
                    first_line(str(e), default=type(e).__name__),
                )
        if held is None:
            log.warning(
                "no database to lock for sweep %s: workers starting in the same instant might create two parent runs",
                name,
            )
        yield held


def stop_after_outage(lost: record.TrackingLost) -> int:
    """The sweep stops after `lost`: once the store answers again (waiting as `end_unended` does), the run
    it could not end and the sweep's parent end FAILED with the reason, the parent with its summary.
    Prints one line; returns the exit status, 1."""
    left = record.end_unended()
    parent_id, _ = record.find_parent(lost.sweep_dir)
    if not left:
        with contextlib.suppress(Exception):
            if parent_id:
                record.set_tags(MlflowClient(tracking_uri=lost.uri), parent_id, {"error": f"TrackingLost: {lost}"})
        after = "its runs and the sweep's parent are recorded FAILED with the reason"
    else:
        after = (
            f"runs {', '.join(left)} and the sweep's parent stay RUNNING: the next start-up on this host "
            "ends them KILLED"
        )
    with contextlib.suppress(Exception):  # before the line below, so that it is the last thing printed
        close_open_parents("FAILED")
    details = f"; tracebacks: {logs.log_file()}" if logs.log_file() else ""
    print(
        f"error: {lost}; the sweep stopped there, {after}; rerun the same command to finish it{details}",
        file=sys.stderr,
    )
    return 1


class FolderInUse(SystemExit):
    """Raised from the multirun callback (Hydra turns an Exception there into a warning; not this)."""


def _refuse_a_folder_in_use(client, sweep_dir: Path, hold: sweepdir.Hold) -> None:
    """Exit 2 with one line when the folder's parent run is still RUNNING (in a live process: start-up has
    already ended the runs of dead ones), releasing `hold` first."""
    parent_id, sweep_id = record.find_parent(sweep_dir)
    if parent_id is None:
        return
    try:
        run = client.get_run(parent_id)
    except Exception:  # noqa: BLE001 - a parent from another store or a deleted run: nothing to protect
        return
    if run.info.status != "RUNNING":
        return
    tags = run.data.tags
    hold.release()
    print(
        f"error: hydra.sweep.dir={sweep_dir} is in use by sweep {sweep_id} (parent run {parent_id}, RUNNING in "
        f"process {tags.get('pid', '?')} on {tags.get('host', '?')}); choose another hydra.sweep.dir, or give every "
        "worker the same tracking.sweep_id to share its parent run",
        file=sys.stderr,
    )
    raise FolderInUse(2)
