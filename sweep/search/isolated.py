"""A launcher that gives every job its own process: one job's death costs that job only.

Hydra's joblib launcher runs a batch as one `joblib.Parallel` call over loky's shared pool of worker
processes. When the kernel kills one worker (the out-of-memory killer's SIGKILL, `kill -9`), loky
declares the whole pool broken: every job of the batch is lost, the healthy sibling included, and the
launcher raises TerminatedWorkerError, which ends the search. Here each job runs in a one-worker loky
executor of its own, at most `n_jobs` at once: a job whose process dies comes back as a FAILED job
(`JobProcessDied`), its siblings run on, and the sweeper tells that one trial FAIL and goes on
(its MLflow run, left RUNNING by the dead process, is ended KILLED by the app's hook).

A job that raises, Ctrl-C and SIGTERM behave as under joblib: a job's exception is that job's failure;
an interrupt (KeyboardInterrupt, SIGTERM's `Terminated`) in any job stops the whole sweep.
Used as `hydra/launcher=isolated` (hydra_plugins/dropout_isolated_launcher); jobs pay one process
start each (a second or two), which matters only for jobs much shorter than that.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


class JobProcessDied(RuntimeError):
    """The job's process ended without an answer: killed (SIGKILL, the out-of-memory killer) or crashed."""


def _execute(
    idx: int,
    overrides: Sequence[str],
    hydra_context: HydraContext,
    config: DictConfig,
    task_function: TaskFunction,
    singleton_state: dict[Any, Any],
) -> JobReturn:
    """One job in its own process, as Hydra's joblib launcher runs one."""
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    HydraConfig.instance().set_config(sweep_config)
    return run_job(
        hydra_context=hydra_context,
        config=sweep_config,
        task_function=task_function,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


def workers(n_jobs: int | None, n: int) -> int:
    """Jobs at once: n_jobs as joblib reads it (-1: every core, -2: all but one, ...)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    want = cores + 1 + n_jobs if n_jobs is not None and n_jobs < 0 else (n_jobs or cores)
    return max(1, min(want, n))


def launch(
    config: DictConfig,
    hydra_context: HydraContext,
    task_function: TaskFunction,
    n_jobs: int | None,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
) -> list[JobReturn]:
    from joblib.externals.loky.process_executor import BrokenProcessPool, ProcessPoolExecutor

    setup_globals()
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    at_once = workers(n_jobs, len(job_overrides))
    log.info("Isolated launcher: %d jobs, %d at a time, each in its own process", len(job_overrides), at_once)
    for i, overrides in enumerate(job_overrides):
        log.info("\t#%d : %s", i, " ".join(filter_overrides(overrides)))
    state = Singleton.get_state()
    todo = list(enumerate(job_overrides))
    running: dict[concurrent.futures.Future, tuple[int, Sequence[str], Any]] = {}
    results: list[JobReturn | None] = [None] * len(job_overrides)
    try:
        while todo or running:
            while todo and len(running) < at_once:
                i, overrides = todo.pop(0)
                executor = ProcessPoolExecutor(max_workers=1)
                future = executor.submit(
                    _execute, initial_job_idx + i, overrides, hydra_context, config, task_function, state
                )
                running[future] = (i, overrides, executor)
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                i, overrides, executor = running.pop(future)
                try:
                    results[i] = future.result()
                except BrokenProcessPool as e:  # this job's process died; the others run on
                    why = str(e).strip().splitlines()
                    log.error(
                        "job #%d: its process died (%s)", initial_job_idx + i, why[-1] if why else type(e).__name__
                    )
                    results[i] = JobReturn(
                        overrides=list(overrides),
                        status=JobStatus.FAILED,
                        _return_value=JobProcessDied(
                            f"the job's process died before it answered, out of memory or killed "
                            f"({why[-1] if why else type(e).__name__})"
                        ),
                    )
                finally:
                    executor.shutdown(wait=False)
    except BaseException:  # an interrupt (here or in a job): stop every job still running, then pass it on
        for _, _, executor in running.values():
            executor.shutdown(wait=False, kill_workers=True)
        raise
    return [r for r in results if r is not None]
