"""This app's hook into the Optuna sweeper (named by `optuna.hook` in sweep/config.py; see sweep/search/hook.py).

What the generic sweeper cannot know about this app:
  - the objective's names (`objective`) and a trial's resource for hyperband (`trainer.epochs`);
  - torch threads per job when the joblib launcher trains several trials at once (`trainer.threads`);
  - MLflow: every job records its run id in its trial (TrialReporter.record_run); the hook tags that run
    with the trial's state, ends it FAILED/KILLED when the trial failed or went stale, and logs the
    study's results on the sweep's parent run (sweep/parent.py).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sweep.search.hook import SweepHook
from sweep.search.trial import RUN_ID_ATTR
from sweep.util.redact import first_line

log = logging.getLogger(__name__)


class DropoutHook(SweepHook):
    def __init__(self, config: DictConfig | None, sweeper: Any) -> None:
        super().__init__(config, sweeper)
        self._client: Any = False  # False: not connected yet; None: tracking off or unreachable

    def metric_names(self) -> list[str] | None:
        objective = OmegaConf.select(self.config, "objective", default=None)
        if objective is None:
            return None
        objective = OmegaConf.to_container(objective, resolve=True) if OmegaConf.is_config(objective) else objective
        return [objective] if isinstance(objective, str) else [str(x) for x in objective]

    def metric_direction(self, name: str) -> str | None:
        from sweep.config import objective_direction  # accuracies up; losses and gaps down

        return objective_direction(name)

    def max_resource(self) -> int | None:
        epochs = OmegaConf.select(self.config, "trainer.epochs", default=None)
        return epochs if isinstance(epochs, int) else None  # a trial's resource is its epochs

    def threads_per_job(self) -> int | None:
        """torch threads for each job when the joblib launcher trains several at once and the user left
        trainer.threads unset: the machine's cores shared out."""
        cfg = self.config
        trainer = OmegaConf.select(cfg, "trainer", default=None)
        if not isinstance(trainer, DictConfig) or "threads" not in trainer or trainer.threads is not None:
            return None
        target = str(OmegaConf.select(cfg, "hydra.launcher._target_", default="")).lower()
        if "joblib" not in target and "isolated" not in target:  # the launchers that train jobs side by side here
            return None
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        jl = OmegaConf.select(cfg, "hydra.launcher.n_jobs", default=-1)
        jl = cores + 1 + jl if isinstance(jl, int) and jl < 0 else (jl or cores)
        parallel = max(1, min(self.sweeper.n_jobs, jl))
        return max(1, cores // parallel)

    def job_overrides(self) -> list[str]:
        threads = self.threads_per_job()
        return [f"trainer.threads={threads}"] if threads is not None else []

    # ---------------------------------------------------------------------------------------- MLflow
    def _mlflow(self):
        if self._client is False:
            self._client = None
            if OmegaConf.select(self.config, "tracking.enabled", default=False):
                try:
                    from mlflow.tracking import MlflowClient

                    self._client = MlflowClient(tracking_uri=self.config.tracking.uri)
                except Exception as e:  # noqa: BLE001 - tracking trouble must not stop the search
                    log.warning("MLflow not available to the sweeper: %s", _why(e))
        return self._client

    def trial_finished(self, trial: Any, error: str | None) -> None:
        run_id, client = trial.user_attrs.get(RUN_ID_ATTR), self._mlflow()
        if not run_id or client is None:
            return
        try:
            from sweep import record  # MLflow's writer, imported only when tracking is on

            run = client.get_run(run_id)
            record.set_tags(client, run_id, {"optuna_state": trial.state.name})
            if trial.state.name == "FAIL" and run.info.status == "RUNNING":  # its process died
                record.end_killed(client, run, f"killed: {error}" if error else None)
            elif trial.state.name == "FAIL" and run.info.status not in ("FAILED", "KILLED"):  # KILLED: ended already
                keep = "error" in run.data.tags  # the job's own error says more than the sweeper's
                record.terminate(client, run_id, "FAILED", error=None if keep else error)
        except Exception as e:  # noqa: BLE001
            log.warning("could not tag the MLflow run of trial %d: %s", trial.number, _why(e))

    def trial_interrupted(self, trial: Any) -> None:
        self._end_killed(trial, "killed: the sweep was interrupted while it ran")

    def trial_stale(self, trial: Any) -> None:
        self._end_killed(trial, "killed: its process stopped sending heartbeats")

    def attempt_lost(self, trial: Any) -> None:
        self._end_killed(
            trial,
            "killed: a worker process of the launcher's pool died (out of memory or killed), "
            "which ends every job of its batch; this job ran again on its own",
            state=None,
        )

    def _end_killed(self, trial: Any, why: str, state: str | None = "FAIL") -> None:
        """The run of a trial whose job could not end it (its process was killed, or the sweep stopped it) is
        left RUNNING (unless the tracking code has ended it already): end it KILLED, and say the trial FAILed
        (`state`; None for an attempt whose trial runs again: the run is tagged `optuna_state=LOST`)."""
        run_id, client = trial.user_attrs.get(RUN_ID_ATTR), self._mlflow()
        if not run_id or client is None:
            return
        try:
            from sweep import record  # MLflow's writer, imported only when tracking is on

            run = client.get_run(run_id)
            if run.data.tags.get("optuna_state") not in (None, "FAIL"):
                return  # finished by its own sweep
            record.set_tags(client, run_id, {"optuna_state": state or "LOST"})
            record.end_killed(client, run, why)
        except Exception as e:  # noqa: BLE001
            log.warning("could not end the MLflow run of trial %d: %s", trial.number, _why(e))

    def study_finished(self, folder: Path, files: list[str], metrics: dict[str, float], tags: dict[str, Any]) -> None:
        client = self._mlflow()
        if client is None:
            return
        try:
            from sweep import record  # MLflow's writer, imported only when tracking is on

            parent_id, _ = record.find_parent(OmegaConf.select(self.config, "hydra.sweep.dir"))
            if not parent_id:
                return
            record.log_metrics(client, parent_id, metrics, step=0)
            record.set_tags(client, parent_id, tags)
            record.log_files(client, parent_id, [folder / name for name in files if (folder / name).exists()])
        except Exception as e:  # noqa: BLE001
            log.warning("could not log the study's results to the MLflow parent run: %s", _why(e))


def _why(e: BaseException) -> str:
    return first_line(str(e), default=type(e).__name__)
