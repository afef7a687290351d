"""Interrupts and dying workers under the process launchers (issue 11), through the real CLI.

- Ctrl-C (SIGINT to the whole process group, as a terminal sends it) under `hydra/launcher=joblib` leaves
  no run RUNNING.
- `kill -9` of one job's process (what the out-of-memory killer does) under `hydra/launcher=isolated`
  costs that one trial (FAIL, its run KILLED); its sibling finishes and the search goes on.
- Under `hydra/launcher=joblib` one dead worker takes loky's whole pool, the healthy sibling included: the
  sweeper runs each job of that batch again on its own, so a one-off kill costs no trial and a job whose
  process dies again costs its own trial only; the lost attempts' runs end KILLED, the search goes on.
"""

from __future__ import annotations

import os
import signal

import optuna
import pytest

from helpers.cli import mlflow_runs
from helpers.proc import CATCHABLE_EPOCHS, LONG_EPOCHS, end, log_tail, optuna_args, runs_with_metrics, start, wait_for

pytestmark = pytest.mark.slow


def _log(out) -> str:
    return log_tail(out, 4000)


def _end(proc, timeout=300) -> int:
    return end(proc, timeout)


_optuna = optuna_args


def _trials(out):
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{out}/optuna.db")
    return study.get_trials(deepcopy=False)


def _both_training(out):
    ready = out / "sweep" / "mlflow_parent.json"
    return wait_for(
        lambda: len(runs_with_metrics(out, ready)) >= 2 and runs_with_metrics(out, ready),
        out,
        what="an epoch in both workers",
    )


def test_ctrl_c_under_joblib_leaves_no_run_running(tiny_root, tmp_path):
    proc = start(
        _optuna(
            tmp_path,
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "hydra.sweeper.n_jobs=2",
            "hydra.sweeper.n_trials=4",
        ),
        tmp_path,
        tiny_root,
        epochs=LONG_EPOCHS,
    )
    runs = _both_training(tmp_path)
    workers = {int(r.data.tags["pid"]) for r in runs}
    for pid in [proc.pid, *workers]:  # a terminal's Ctrl-C: SIGINT to every process of the foreground group
        os.kill(pid, signal.SIGINT)
    assert _end(proc) == 130, _log(tmp_path)
    _, runs = mlflow_runs(tmp_path)
    assert "RUNNING" not in {r.info.status for r in runs}, [(r.info.run_name, r.info.status) for r in runs]
    assert {t.state.name for t in _trials(tmp_path)} == {"FAIL"}


def test_kill_9_of_one_isolated_job_costs_one_trial(tiny_root, tmp_path):
    proc = start(
        _optuna(
            tmp_path,
            "hydra/launcher=isolated",
            "hydra.launcher.n_jobs=2",
            "hydra.sweeper.n_jobs=2",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.max_failure_rate=0.5",
        ),
        tmp_path,
        tiny_root,
        epochs=CATCHABLE_EPOCHS,
    )
    runs = _both_training(tmp_path)
    victim, sibling = runs[0], runs[1]
    assert int(victim.data.tags["pid"]) != proc.pid  # it trains in a process of its own
    os.kill(int(victim.data.tags["pid"]), signal.SIGKILL)
    assert _end(proc) == 0, _log(tmp_path)
    trials = _trials(tmp_path)
    states = sorted(t.state.name for t in trials)
    assert states == ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL"], states  # the search went on to 3 finished
    _, runs = mlflow_runs(tmp_path)
    by_id = {r.info.run_id: r for r in runs}
    assert by_id[victim.info.run_id].info.status == "KILLED"
    assert "process died" in by_id[victim.info.run_id].data.tags["error"]
    assert by_id[victim.info.run_id].data.tags["optuna_state"] == "FAIL"
    assert by_id[sibling.info.run_id].info.status == "FINISHED"  # the healthy sibling was not lost
    children = [r for r in runs if r.data.tags.get("sweep_role") != "parent"]
    assert sorted(r.info.status for r in children) == ["FINISHED"] * 3 + ["KILLED"]
    log = (tmp_path / "cli.log").read_text()
    assert "job #" in log and "its process died" in log


def _trial_of(run) -> int:
    return int(run.data.tags["optuna_trial"])


def test_kill_9_of_one_joblib_worker_costs_at_most_its_own_trial(tiny_root, tmp_path):
    proc = start(
        _optuna(
            tmp_path,
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "hydra.sweeper.n_jobs=2",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.max_failure_rate=0.5",
        ),
        tmp_path,
        tiny_root,
        epochs=CATCHABLE_EPOCHS,
    )
    runs = _both_training(tmp_path)
    victim, sibling = runs[0], runs[1]
    os.kill(int(victim.data.tags["pid"]), signal.SIGKILL)  # loky's pool breaks: both jobs are lost
    # the victim's job runs again on its own, under the same trial; it dies again: now it costs its trial
    ready = tmp_path / "sweep" / "mlflow_parent.json"
    again = wait_for(
        lambda: [
            r
            for r in runs_with_metrics(tmp_path, ready)
            if _trial_of(r) == _trial_of(victim) and r.info.run_id != victim.info.run_id
        ],
        tmp_path,
        what="the victim's job running again",
    )
    os.kill(int(again[0].data.tags["pid"]), signal.SIGKILL)
    assert _end(proc) == 0, _log(tmp_path)

    trials = {t.number: t for t in _trials(tmp_path)}
    states = sorted(t.state.name for t in trials.values())
    assert states == ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL"], states  # the search went on to 3 finished
    assert trials[_trial_of(victim)].state.name == "FAIL"
    assert trials[_trial_of(sibling)].state.name == "COMPLETE"  # the healthy sibling lost only time
    _, runs = mlflow_runs(tmp_path)
    children = [r for r in runs if r.data.tags.get("sweep_role") != "parent"]
    assert "RUNNING" not in {r.info.status for r in runs}, [(r.info.run_name, r.info.status) for r in runs]
    by_id = {r.info.run_id: r for r in runs}
    for lost in (victim, sibling):  # the first attempts, lost with the pool
        run = by_id[lost.info.run_id]
        assert run.info.status == "KILLED" and run.data.tags["optuna_state"] == "LOST", run.data.tags
    # ended by the sweeper (attempt_lost) or, first, by the next job's start-up finding its process gone
    assert "died" in by_id[victim.info.run_id].data.tags["error"]
    second = by_id[again[0].info.run_id]
    assert second.info.status == "KILLED" and second.data.tags["optuna_state"] == "FAIL"
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert len(finished) == 3 and _trial_of(sibling) in {_trial_of(r) for r in finished}
    log = (tmp_path / "cli.log").read_text()
    assert "running each again on its own" in log and "its job's process died again" in log
