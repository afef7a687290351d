"""End to end: `python sweep/run.py -m hydra/sweeper=optuna ...` as subprocesses on tiny IDX data,
then the Optuna storage and the MLflow store read back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from helpers.cli import ROOT, mlflow_runs, tiny_overrides
from helpers.pg import postgres_server, postgres_url  # noqa: F401  (fixtures)
from helpers.proc import CATCHABLE_EPOCHS

pytestmark = pytest.mark.slow


def sweep_args(out: Path, *extra: str, study: str = "t") -> list[str]:
    return [
        "hydra/sweeper=optuna",
        f"hydra.sweeper.storage=sqlite:///{out}/optuna.db",
        f"hydra.sweeper.study_name={study}",
        *extra,
    ]


def load(out: Path, study: str = "t", url: str | None = None) -> optuna.Study:
    # never create tables: a sweep that is starting may be doing it
    storage = optuna.storages.RDBStorage(
        url or f"sqlite:///{out}/optuna.db", skip_table_creation=True, skip_compatibility_check=True
    )
    return optuna.load_study(study_name=study, storage=storage)


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials(deepcopy=False)]


def children_by_trial(out: Path):
    client, runs = mlflow_runs(out)
    return client, {int(r.data.tags["optuna_trial"]): r for r in runs if "optuna_trial" in r.data.tags}


def parent_run(out: Path):
    client, runs = mlflow_runs(out)
    parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    return client, parents


def ok(res: subprocess.CompletedProcess) -> None:
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]


def sweep_ok(cli, *extra: str, epochs: int = 2) -> tuple[subprocess.CompletedProcess, optuna.Study]:
    """Run an Optuna multirun that must succeed; return its output and the study it wrote."""
    res = cli("-m", *sweep_args(cli.out, *extra), epochs=epochs)
    ok(res)
    return res, load(cli.out)


def test_tpe_search_runs_enqueued_points_first_and_resumes_to_the_total(cli):
    out = cli.out
    res, study = sweep_ok(cli, "+search=dropout", "hydra.sweeper.n_trials=4", "hydra.sweeper.pruner=none")
    assert states(study) == ["COMPLETE"] * 4
    params = [t.params for t in study.trials]
    assert params[:3] == [
        {"drop_prob": 0.3, "input_drop_prob": 0.0},
        {"drop_prob": 0.0, "input_drop_prob": 0.0},
        {"drop_prob": 0.5, "input_drop_prob": 0.2},
    ]
    assert 0 <= params[3]["drop_prob"] <= 0.5 and 0 <= params[3]["input_drop_prob"] <= 0.3
    # the results file, the printed best configuration and the MLflow records
    results = yaml.safe_load((out / "sweep" / "optimization_results.yaml").read_text())
    best = max(study.trials, key=lambda t: t.value)
    assert results["best_value"] == pytest.approx(best.value) and results["best_params"] == best.params
    assert results["trials"]["COMPLETE"] == 4 and results["sampler"] == "tpe"
    assert "Best trial" in res.stdout and results["best_overrides"] in res.stdout
    client, kids = children_by_trial(out)
    assert sorted(kids) == [0, 1, 2, 3]
    for n, r in kids.items():
        assert r.info.status == "FINISHED" and r.data.tags["optuna_study"] == "t"
        assert r.data.tags["optuna_state"] == "COMPLETE"
        assert r.data.metrics["val_acc"] == pytest.approx(study.trials[n].value)
        assert "optuna.storage" not in r.data.params and "optuna.trial_number" not in r.data.params
    _, (parent,) = parent_run(out)
    assert parent.data.metrics["best_value"] == pytest.approx(best.value)
    assert parent.data.tags["best_trial"] == str(best.number)
    assert parent.data.tags["best_drop_prob"] == str(best.params["drop_prob"])
    art = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {
        "optimization_results.yaml",
        "optimization_history.png",
        "param_importances.png",
        "study_trials.csv",
        "gap_vs_dropout.png",
    } <= art
    # n_trials is the study's total: asking for 5 now runs exactly one more trial, none repeated
    res, study = sweep_ok(cli, "+search=dropout", "hydra.sweeper.n_trials=5", "hydra.sweeper.pruner=none")
    assert states(study) == ["COMPLETE"] * 5
    assert study.trials[4].params not in [t.params for t in study.trials[:4]]


def test_grid_evaluates_every_point_once_with_hydras_range_bounds(cli):
    out = cli.out
    res, study = sweep_ok(
        cli,
        "hydra.sweeper.sampler=grid",
        "hydra.sweeper.pruner=none",
        "drop_prob=choice(0,0.5)",
        "input_drop_prob=range(0,0.3,0.2)",
        "hydra.sweeper.n_trials=10",
        epochs=1,
    )
    assert states(study) == ["COMPLETE"] * 4  # n_trials is capped at the grid's size
    assert [(t.params["drop_prob"], t.params["input_drop_prob"]) for t in study.trials] == [
        (0, 0.0),
        (0, 0.2),
        (0.5, 0.0),
        (0.5, 0.2),
    ]  # 0.3 excluded, like Hydra's basic sweeper
    _, kids = children_by_trial(out)
    assert sorted(float(r.data.params["input_drop_prob"]) for r in kids.values()) == [0.0, 0.0, 0.2, 0.2]


def test_multi_objective_search_writes_the_pareto_front(cli):
    out = cli.out
    res, study = sweep_ok(
        cli,
        "+search=dropout",
        "objective=[val_acc,val_gap]",
        "hydra.sweeper.direction=[maximize,minimize]",
        "hydra.sweeper.sampler=nsgaii",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.enqueue=[]",
        epochs=1,
    )
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"] and study.metric_names == [
        "val_acc",
        "val_gap",
    ]
    assert states(study) == ["COMPLETE"] * 3
    results = yaml.safe_load((out / "sweep" / "optimization_results.yaml").read_text())
    front = results["pareto_front"]
    assert {p["trial"] for p in front} == {t.number for t in study.best_trials}
    assert set(front[0]["values"]) == {"val_acc", "val_gap"} and "Pareto front" in res.stdout


def test_pruning_stops_a_bad_trial_early(cli):
    out = cli.out
    res, study = sweep_ok(
        cli,
        "hydra.sweeper.sampler=grid",
        "optimizer.lr=choice(0.001,0.0000001)",
        "hydra.sweeper.pruner=median",
        "hydra.sweeper.pruner_args.n_startup_trials=1",
        "hydra.sweeper.pruner_args.n_warmup_steps=0",
        epochs=4,
    )
    assert states(study) == ["COMPLETE", "PRUNED"]
    good, bad = study.trials
    assert sorted(good.intermediate_values) == [1, 2, 3, 4]
    stopped = max(bad.intermediate_values)
    assert stopped < 4
    client, kids = children_by_trial(out)
    run = kids[1]
    assert run.data.tags["pruned"] == "true" and run.data.tags["pruned_epoch"] == str(stopped)
    assert run.data.tags["optuna_state"] == "PRUNED" and kids[0].data.tags["optuna_state"] == "COMPLETE"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == list(range(1, stopped + 1))


def _wait_for_running_trial(db: Path, proc: subprocess.Popen, log: Path, epochs: int, timeout: float = 150):
    """Until a second trial is RUNNING and has reported an epoch (the first one COMPLETE)."""
    end = time.time() + timeout
    while time.time() < end:
        assert proc.poll() is None, "the sweep ended before it could be interrupted:\n" + log.read_text()[-4000:]
        if db.exists():
            try:
                trials = load(db.parent).get_trials(deepcopy=False)
            except Exception:  # noqa: BLE001 - the study may not exist yet / the file is busy
                trials = []
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            # in its first half, so that it is still running when the kill lands
            live = [
                t for t in trials if t.state == TrialState.RUNNING and 1 <= len(t.intermediate_values) <= epochs // 2
            ]
            if done and live:
                return live[0].number
        time.sleep(0.2)
    raise AssertionError("no trial reached its first epoch in time")


def test_resume_after_the_sweep_was_killed_mid_trial(tiny_root, tmp_path):
    out = tmp_path
    epochs = CATCHABLE_EPOCHS  # a trial lasts seconds (not a fraction of one): the poll below must catch one mid-way
    args = [
        sys.executable,
        str(ROOT / "sweep" / "run.py"),
        "-m",
        *tiny_overrides(tiny_root, out, epochs=epochs),
        *sweep_args(
            out,
            "+search=dropout",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.pruner=none",
            "hydra.sweeper.heartbeat_interval=1",
            "hydra.sweeper.grace_period=2",
        ),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    log = out / "first.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    try:
        killed = _wait_for_running_trial(out / "optuna.db", proc, log, epochs)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    before = load(out).get_trials(deepcopy=False)
    complete_before = {t.number: t.params for t in before if t.state == TrialState.COMPLETE}
    # left behind by the killed process
    assert [t.number for t in before if t.state == TrialState.RUNNING] == [killed], [
        (t.number, t.state) for t in before
    ]

    res = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    ok(res)
    study = load(out)
    trials = study.get_trials(deepcopy=False)
    assert trials[killed].state == TrialState.FAIL  # detected through its missing heartbeat
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 3
    for number, params in complete_before.items():  # what had finished is kept, not run again
        assert trials[number].state == TrialState.COMPLETE
        assert sum(t.params == params for t in trials if t.state == TrialState.COMPLETE) == 1
    assert len(trials) == 3 + 1  # the killed trial is the only extra one
    assert "marked FAIL" in res.stderr + res.stdout
    _, kids = children_by_trial(out)
    assert kids[killed].info.status == "KILLED" and kids[killed].data.tags["optuna_state"] == "FAIL"


def test_failed_trials_are_recorded_and_too_many_stop_the_sweep(cli):
    out = cli.out
    # lr=1e12 diverges (NaN objective); a model for 100 input features raises in the job on 784-pixel images
    # (a batch larger than the training split, the example before, is now refused by the pre-flight check)
    res = cli(
        "-m",
        *sweep_args(
            out,
            "hydra.sweeper.sampler=grid",
            "hydra.sweeper.pruner=none",
            "optimizer.lr=choice(0.001,1e12)",
            "model.in_features=choice(784,100)",
            "hydra.sweeper.max_failure_rate=0.25",
        ),
        epochs=2,
    )
    assert res.returncode != 0
    assert "max_failure_rate=0.25" in res.stderr and "Traceback" not in res.stderr
    study = load(out)
    # (0.001,784) ok; (0.001,100) raises -> the sweep goes on; (1e12,784) NaN -> 2 > 0.25 x 4: stop
    assert states(study) == ["COMPLETE", "FAIL", "FAIL"]
    results = yaml.safe_load((out / "sweep" / "optimization_results.yaml").read_text())
    assert "max_failure_rate" in results["stopped"] and results["best_trial"] == 0
    _, kids = children_by_trial(out)
    assert kids[0].info.status == "FINISHED" and kids[0].data.tags["optuna_state"] == "COMPLETE"
    for n in (1, 2):
        assert kids[n].info.status == "FAILED" and kids[n].data.tags["optuna_state"] == "FAIL"
    assert "cannot be multiplied" in kids[1].data.tags["error"] and kids[2].data.tags.get("diverged") == "true"


def test_joblib_launcher_trains_trials_in_parallel_with_shared_threads(tiny_root, tmp_path):
    from helpers.cli import run_cli

    out = tmp_path
    base = [a for a in tiny_overrides(tiny_root, out, epochs=4) if not a.startswith("trainer.threads")]
    res = run_cli(
        [
            "-m",
            *base,
            *sweep_args(
                out,
                "+search=dropout",
                "hydra/launcher=joblib",
                "hydra.launcher.n_jobs=2",
                "hydra.sweeper.n_jobs=2",
                "hydra.sweeper.n_trials=4",
                "hydra.sweeper.pruner=none",
            ),
        ]
    )
    ok(res)
    study = load(out)
    assert states(study) == ["COMPLETE"] * 4
    _, kids = children_by_trial(out)
    cores = len(os.sched_getaffinity(0))
    assert {r.data.params["trainer.threads"] for r in kids.values()} == {str(max(1, cores // 2))}
    assert len({r.data.tags["pid"] for r in kids.values()}) >= 2  # trained in worker processes

    def overlap(i, j):
        a, b = kids[i].info, kids[j].info
        return a.start_time < b.end_time and b.start_time < a.end_time

    # launched two by two: a batch's runs overlap in time (the first batch's workers may start unevenly)
    assert overlap(0, 1) or overlap(2, 3), [(r.info.start_time, r.info.end_time) for _, r in sorted(kids.items())]


def test_two_workers_share_one_postgres_study(tiny_root, tmp_path, postgres_url):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    procs = []
    for w in ("a", "b"):
        out = tmp_path / w
        args = [
            sys.executable,
            str(ROOT / "sweep" / "run.py"),
            "-m",
            *tiny_overrides(tiny_root, out, epochs=3),
            "hydra/sweeper=optuna",
            "+search=dropout",
            f"hydra.sweeper.storage={postgres_url}",
            "hydra.sweeper.study_name=shared",
            "hydra.sweeper.n_trials=6",
            "hydra.sweeper.pruner=none",
            "hydra.sweeper.enqueue=[]",
        ]
        procs.append(
            subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    outputs = [p.communicate(timeout=400) for p in procs]
    for p, (so, se) in zip(procs, outputs):
        assert p.returncode == 0, so[-2000:] + se[-4000:]
    study = load(tmp_path, "shared", url=postgres_url)
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == list(range(6)) and states(study) == ["COMPLETE"] * 6
    ran = {}
    for w in ("a", "b"):
        _, kids = children_by_trial(tmp_path / w)
        ran[w] = set(kids)
        assert all(r.data.tags["optuna_study"] == "shared" for r in kids.values())
    assert ran["a"] and ran["b"] and not ran["a"] & ran["b"] and ran["a"] | ran["b"] == set(range(6))
    # the storage password stays out of MLflow, the jobs' command lines and the console (Hydra's own
    # multirun.yaml / hydra.yaml keep the sweeper's settings as typed: README *Secrets* says use PGPASSWORD)
    assert "secret" in postgres_url
    for w in ("a", "b"):
        client, runs = mlflow_runs(tmp_path / w)
        for r in runs:
            assert "secret" not in repr(r.data.tags) + repr(r.data.params)
        files = [
            *(tmp_path / w / "sweep").rglob("overrides.yaml"),
            tmp_path / w / "sweep" / "optimization_results.yaml",
        ]
        assert len(files) >= 2
        for f in files:
            assert "secret" not in f.read_text(), f
    assert all("secret" not in so + se for so, se in outputs)


# ---------------------------------------------------------------- a study the sweep cannot continue, and orphans


def test_a_changed_distribution_kind_is_refused_before_any_trial(cli):
    """interval(0,0.5), then the same study with choice(0.1,0.2): Optuna would raise inside `ask` and leave a
    trial RUNNING that every later run waits for. Refused in pre-flight, one line naming the parameter, the old
    and new distributions and what to do, exit 2; the study is untouched and the original command still runs."""
    first = cli("-m", *sweep_args(cli.out, "drop_prob=interval(0,0.5)", "hydra.sweeper.n_trials=2"), epochs=1)
    assert first.returncode == 0, first.stderr[-3000:]
    res = cli("-m", *sweep_args(cli.out, "drop_prob=choice(0.1,0.2)", "hydra.sweeper.n_trials=3"), epochs=1)
    assert res.returncode == 2, res.stderr[-3000:]
    assert res.stderr.strip().splitlines() == [
        f"error: hydra.sweeper.params.drop_prob: study 't' in sqlite:///{cli.out}/optuna.db drew it from "
        "interval(0.0, 0.5); now choice(0.1, 0.2): a parameter cannot change its kind within a study; use a new "
        "hydra.sweeper.study_name"
    ]
    assert states(load(cli.out)) == ["COMPLETE", "COMPLETE"]
    again = cli("-m", *sweep_args(cli.out, "drop_prob=interval(0,0.5)", "hydra.sweeper.n_trials=3"), epochs=1)
    assert again.returncode == 0 and states(load(cli.out)) == ["COMPLETE"] * 3, again.stderr[-3000:]


def test_another_direction_is_refused_before_the_parent_exists(cli):
    assert (
        cli("-m", *sweep_args(cli.out, "drop_prob=interval(0,0.5)", "hydra.sweeper.n_trials=1"), epochs=1).returncode
        == 0
    )
    res = cli(
        "-m",
        *sweep_args(
            cli.out, "drop_prob=interval(0,0.5)", "hydra.sweeper.n_trials=2", "hydra.sweeper.direction=minimize"
        ),
        epochs=1,
    )
    assert res.returncode == 2 and "optimises ['maximize'], not ['minimize']" in res.stderr, res.stderr[-2000:]
    assert len(res.stderr.strip().splitlines()) == 1
    _, runs = mlflow_runs(cli.out)
    assert len([r for r in runs if r.data.tags.get("sweep_role") == "parent"]) == 1  # only the first sweep's


def test_a_trial_left_running_without_a_heartbeat_is_failed_and_the_study_goes_on(cli):
    """A trial RUNNING with no heartbeat ever (its process failed between `ask` and its first beat) is FAILed
    once it is older than grace_period, and the sweep reaches its total instead of waiting for ever."""
    assert (
        cli("-m", *sweep_args(cli.out, "drop_prob=interval(0,0.5)", "hydra.sweeper.n_trials=1"), epochs=1).returncode
        == 0
    )
    load(cli.out).ask()  # the orphan
    time.sleep(3)
    res = cli(
        "-m",
        *sweep_args(cli.out, "drop_prob=interval(0,0.5)", "hydra.sweeper.n_trials=2", "hydra.sweeper.grace_period=2"),
        epochs=1,
        timeout=240,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert states(load(cli.out)) == ["COMPLETE", "FAIL", "COMPLETE"]
    assert "RUNNING for" in res.stdout + res.stderr and "without a heartbeat" in res.stdout + res.stderr
