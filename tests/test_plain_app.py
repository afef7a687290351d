"""The sweeper as a generic Hydra plugin: a plain app (tests/helpers/plain_app, not this project's)
swept with `hydra/sweeper=optuna`, hydra-optuna-sweeper's example config loaded as it is, and the
gp/qmc samplers in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from helpers.cli import ROOT, split_flags
from sweep.search import space as _space

APP = ROOT / "tests" / "helpers" / "plain_app" / "app.py"


def plain(out: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    """The plain app as a subprocess, from an empty folder (a stray database would show there)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}  # this checkout's plugin and sweep/
    env.pop("HYDRA_FULL_ERROR", None)
    cwd = out / "cwd"
    cwd.mkdir(parents=True, exist_ok=True)
    flags, rest = split_flags(args)
    res = subprocess.run(
        [sys.executable, str(APP), *flags, f"hydra.sweep.dir={out}/sweep", *rest],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if ok:
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    return res


def results(out: Path) -> dict:
    return yaml.safe_load((out / "sweep" / "optimization_results.yaml").read_text())


@pytest.mark.slow
def test_a_plain_app_is_swept_with_a_persistent_study(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    res = plain(
        tmp_path,
        "-m",
        "hydra/sweeper=optuna",
        "x=interval(-2,2)",
        "y=choice(-1,0,1)",
        "hydra.sweeper.n_trials=6",
        f"hydra.sweeper.storage={url}",
        "hydra.sweeper.study_name=plain",
    )
    study = optuna.load_study(study_name="plain", storage=url)
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6
    assert [d.name for d in study.directions] == ["MINIMIZE"]  # hydra-optuna-sweeper's default direction
    for t in trials:  # the job's return value, x² + y², is the trial's value
        assert t.value == pytest.approx(t.params["x"] ** 2 + t.params["y"] ** 2)
        assert -2 <= t.params["x"] <= 2 and t.params["y"] in (-1, 0, 1)
    best = min(trials, key=lambda t: t.value)
    r = results(tmp_path)
    assert r["best_trial"] == best.number and r["best_value"] == pytest.approx(best.value)
    assert r["objective"] == ["value"] and r["trials"]["COMPLETE"] == 6
    # the app has no `optuna` node: jobs get their parameters only, and nothing is pruned
    job = yaml.safe_load((tmp_path / "sweep" / "0" / ".hydra" / "overrides.yaml").read_text())
    assert sorted(o.split("=")[0] for o in job) == ["x", "y"]
    assert "jobs cannot report to their trials" in res.stdout + res.stderr
    # a rerun resumes the study: n_trials is the study's total
    plain(
        tmp_path,
        "-m",
        "hydra/sweeper=optuna",
        "x=interval(-2,2)",
        "y=choice(-1,0,1)",
        "hydra.sweeper.n_trials=8",
        f"hydra.sweeper.storage={url}",
        "hydra.sweeper.study_name=plain",
        f"hydra.sweep.dir={tmp_path}/sweep2",
    )
    assert len(optuna.load_study(study_name="plain", storage=url).trials) == 8


@pytest.mark.slow
def test_a_plain_app_defaults_to_an_in_memory_study_and_reports_a_failing_job(tmp_path):
    res = plain(
        tmp_path,
        "-m",
        "hydra/sweeper=optuna",
        "x=choice(1,2)",
        "error=choice(false,true)",
        "hydra.sweeper.sampler=grid",
        "hydra.sweeper.max_failure_rate=1",
    )
    r = results(tmp_path)
    assert r["storage"] == "in-memory" and r["trials"] == {
        "COMPLETE": 2,
        "PRUNED": 0,
        "FAIL": 2,
        "RUNNING": 0,
        "WAITING": 0,
    }
    assert r["best_value"] == 2.0 and r["best_params"] == {"x": 1, "error": False}  # x² + y², y = 1
    assert not list((tmp_path / "cwd").iterdir())  # no database, no folder made where it ran
    out = res.stdout + res.stderr
    assert "RuntimeError: cfg.error is True" in out and "Traceback" not in out
    assert "Error executing job with overrides" not in out  # JobReturn's own line is kept off stderr


@pytest.mark.slow
def test_hydra_optuna_sweepers_example_config_loads_as_it_is(tmp_path):
    """hydra-optuna-sweeper's example/conf/config.yaml, unchanged: the sampler group default, sampler.seed,
    direction, study_name, storage: null (in memory), n_trials, n_jobs, max_failure_rate, params."""

    def run(out):
        res = plain(out, "-m", "--config-path=hydra_optuna_example")
        return (
            res,
            results(out),
            [
                line
                for line in res.stdout.splitlines() + res.stderr.splitlines()
                if "] trial " in line and ":" in line and "finished" not in line
            ],
        )

    res, r, asked = run(tmp_path / "a")
    assert r["study_name"] == "sphere" and r["storage"] == "in-memory" and r["sampler"] == "tpe"
    assert r["directions"] == ["minimize"] and r["trials"]["COMPLETE"] == 20 and len(asked) == 20
    assert r["search_space"] == {"x": "x=range(-5.5, 5.5, step=0.5)", "y": "y=choice(-5 ,0 ,5)"}
    assert r["best_value"] == pytest.approx(r["best_params"]["x"] ** 2 + r["best_params"]["y"] ** 2 + 1)  # z: 1 there
    # where the meaning differs (range's stop), one line says so and names the equivalent
    notes = [line for line in (res.stdout + res.stderr).splitlines() if "hydra-optuna-sweeper includes it" in line]
    assert len(notes) == 1 and "x=range(-5.5, 5.5, step=0.5): 5.5 is excluded" in notes[0] and "6.0" in notes[0]
    assert not list((tmp_path / "a" / "cwd").iterdir())  # storage: null -> nothing written
    # sampler.seed is the sampler's seed: the same 20 trials again
    _, r2, asked2 = run(tmp_path / "b")
    assert [a.split("] ", 1)[1] for a in asked2] == [a.split("] ", 1)[1] for a in asked]


@pytest.mark.parametrize(
    "args, words",
    [
        (
            ["hydra/sweeper/sampler=tpe", "+hydra.sweeper.sampler.n_ei=3"],
            ["hydra.sweeper.sampler.n_ei is not an option of sampler tpe", "n_ei_candidates"],
        ),
        (
            ["hydra.sweeper.sampler=gp", "+hydra.sweeper.sampler.n_startup_trials=2"],
            ["names no sampler", "hydra/sweeper/sampler=<name>", "sampler_args"],
        ),
        (
            ["+hydra.sweeper.sampler._target_=optuna.samplers.BruteForceSampler"],
            ["hydra.sweeper.sampler._target_=optuna.samplers.BruteForceSampler", "gp, qmc"],
        ),
        (["hydra.sweeper.sampler=bayes"], ["hydra.sweeper.sampler=bayes", "tpe, random, grid, cmaes, nsgaii, gp, qmc"]),
    ],
)
def test_refused_sampler_settings_are_one_line_each(tmp_path, args, words):
    res = plain(tmp_path, "-m", "hydra/sweeper=optuna", "x=interval(-2,2)", *args, ok=False)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if "hydra.sweeper" in line]
    assert len(lines) == 1, res.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_custom_search_space_adds_parameters_as_in_hydra_optuna_sweeper(tmp_path):
    plain(
        tmp_path,
        "-m",
        "hydra/sweeper=optuna",
        "x=interval(-2,2)",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.custom_search_space=app.configure",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=5",
    )
    r = results(tmp_path)
    p = r["best_params"]
    assert set(p) == {"x", "z", "+w"} and abs(p["z"] - p["x"]) <= 0.5 and 0 <= p["+w"] <= 1
    assert r["best_value"] == pytest.approx(p["x"] ** 2 + 1 + p["z"] ** 2 + p["+w"] ** 2)  # y stays 1
    assert "+w=" in r["best_overrides"] and "z=" in r["best_overrides"]


# --------------------------------------------------------------------------------- gp and qmc samplers
def _sweeper(**kw):
    from sweep.search.loop import OptunaSweeperImpl

    base = dict(
        sampler="tpe",
        seed=777,
        sampler_args={},
        direction="maximize",
        n_trials=5,
        n_jobs=1,
        storage=None,
        study_name="s",
        pruner="none",
        pruner_args={},
        max_failure_rate=0.2,
        heartbeat_interval=5,
        grace_period=30,
        params={},
        enqueue=[],
    )
    return OptunaSweeperImpl(**{**base, **kw})


@pytest.mark.parametrize(
    "node, cls, seed, kw",
    [
        ("gp", optuna.samplers.GPSampler, None, {}),
        ("qmc", optuna.samplers.QMCSampler, None, {}),
        (
            {"name": "gp", "seed": 5, "n_startup_trials": 3, "deterministic_objective": True},
            optuna.samplers.GPSampler,
            5,
            {"deterministic_objective": True},
        ),
        (
            {"_target_": "optuna.samplers.QMCSampler", "seed": 9, "scramble": True, "qmc_type": "halton"},
            optuna.samplers.QMCSampler,
            9,
            {"scramble": True, "qmc_type": "halton"},
        ),
    ],
)
def test_gp_and_qmc_samplers_from_a_name_or_a_node(node, cls, seed, kw):
    s = _sweeper(sampler=node, sampler_args={"n_startup_trials": None})
    assert isinstance(s.make_sampler(_space.parse({"x": "interval(0,1)"}, []), 3), cls)
    assert s.seed == (777 if seed is None else seed) and s.sampler_extra == kw
    if isinstance(node, dict) and "n_startup_trials" in node:
        assert s.sampler_args["n_startup_trials"] == 3


@pytest.mark.parametrize("name", ["gp", "qmc"])
def test_gp_and_qmc_search_a_two_dimensional_space(name):
    """Asked one trial at a time with a fresh sampler (as the sweeper does), each sampler proposes
    valid, distinct points and gets close to the minimum of a bowl; qmc keeps one seed, so its points
    follow one Sobol sequence (no point drawn twice)."""
    s = _sweeper(sampler=name, sampler_args={"n_startup_trials": 4}, direction="minimize")
    space = _space.parse({"a": "interval(-1,1)", "b": "interval(-1,1)"}, [])
    study = optuna.create_study(direction="minimize")
    for i in range(16):
        study.sampler = s.make_sampler(space, i)
        t = study.ask(fixed_distributions=space.distributions)
        study.tell(t, (t.params["a"] - 0.3) ** 2 + (t.params["b"] + 0.2) ** 2)
    points = [(t.params["a"], t.params["b"]) for t in study.trials]
    assert all(-1 <= a <= 1 and -1 <= b <= 1 for a, b in points) and len(set(points)) == len(points)
    assert study.best_value < 0.05
