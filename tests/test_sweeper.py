"""The Optuna sweeper plugin in-process: override grammar -> distributions, options, discovery,
pre-flight with the sweeper selected, the job-side TrialReporter, the study lock."""

from __future__ import annotations

import math
import multiprocessing
import re
import time

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from helpers.cli import tiny_overrides
from hydra_plugins.dropout_optuna_sweeper.config import PrunerArgs, SamplerArgs
from sweep.config import ConfigError
from sweep.preflight import check_cli
from sweep.search import space as _space
from sweep.search.loop import OptunaSweeperImpl, study_lock
from sweep.search.space import SweeperError
from sweep.search.trial import MAX_EPOCHS_ATTR, PRUNER_ATTR, TrialReporter, build_pruner


def parse_one(line: str):
    return OverridesParser.create().parse_override(line)


# ------------------------------------------------------------------------------ override -> distribution
@pytest.mark.parametrize(
    "line, expected",
    [
        ("x=interval(0,0.5)", FloatDistribution(0.0, 0.5)),
        ("x=interval(0, 0.3)", FloatDistribution(0.0, 0.3)),
        ("x=interval(1,4)", FloatDistribution(1.0, 4.0)),  # Hydra casts interval ends to float
        ("x=int(interval(1,4))", IntDistribution(1, 4)),
        ("x=tag(log, interval(1e-4,1e-2))", FloatDistribution(1e-4, 1e-2, log=True)),
        ("x=tag(log, int(interval(1,128)))", IntDistribution(1, 128, log=True)),
        ("x=range(0,0.5,0.1)", FloatDistribution(0.0, 0.4, step=0.1)),  # upper bound excluded, as in Hydra
        ("x=range(0,0.5,0.25)", FloatDistribution(0.0, 0.25, step=0.25)),
        ("x=range(1,5)", IntDistribution(1, 4)),
        ("x=range(0,10,3)", IntDistribution(0, 9, step=3)),
        ("x=range(5,1,-1)", IntDistribution(2, 5)),
        ("x=float(range(1,4))", FloatDistribution(1.0, 3.0, step=1.0)),
        ("x=choice(adam,sgd)", CategoricalDistribution(["adam", "sgd"])),
        ("x=0,0.2,0.3,0.5", CategoricalDistribution([0, 0.2, 0.3, 0.5])),
        ("x=choice(true,false)", CategoricalDistribution([True, False])),
        ("x=choice(1,1,2)", CategoricalDistribution([1, 2])),
    ],
)
def test_override_to_distribution(line, expected):
    assert _space.to_distribution(parse_one(line)) == expected


@pytest.mark.parametrize("line", ["x=3", "x=0.5", "x=adam", "+search=dropout", "x=[1,2]"])
def test_plain_values_are_not_searched(line):
    assert _space.to_distribution(parse_one(line)) is None


@pytest.mark.parametrize(
    "line, words",
    [
        ("drop_prob=interval(0.5,0.1)", ["drop_prob=interval(0.5,0.1)", "lower < upper"]),
        ("lr=tag(log, interval(0,1))", ["lower > 0"]),
        ("x=tag(log, choice(1,2))", ["interval"]),
        ("x=tag(log, range(1,5))", ["interval"]),
        ("x=range(1,1)", ["empty", "excluded"]),
    ],
)
def test_bad_search_dimensions_give_one_line(line, words):
    with pytest.raises(SweeperError) as err:
        _space.to_distribution(parse_one(line))
    assert "\n" not in str(err.value)
    for w in words:
        assert w in str(err.value)


@pytest.mark.parametrize(
    "line",
    [
        "x=range(0,0.5,0.1)",
        "x=range(1,5)",
        "x=range(0,10,3)",
        "x=range(0.1,1,0.2)",
        "x=choice(a,b,c)",
        "x=int(interval(2,5))",
    ],
)
def test_grid_values_match_hydras_basic_sweeper(line):
    """range(a,b,step): b excluded, exactly the values Hydra's own grid would run."""
    o = parse_one(line)
    space = _space.parse({}, [line])
    grid = [p["x"] for p in space.grid()]
    if "interval" in line:
        assert grid == [2, 3, 4, 5]  # int(interval) includes both ends (Optuna's IntDistribution)
    else:
        assert grid == pytest.approx(list(o.sweep_iterator()))
        dist = space.distributions["x"]
        assert (
            isinstance(dist, CategoricalDistribution)
            or dist.high == pytest.approx(max(grid))
            and dist.low == pytest.approx(min(grid))
        )


# range(start, stop, step) with floats: exactly start + k*step strictly below stop, without drift. Next to it,
# what Hydra's basic sweeper (a plain `-m` grid) really runs: its float steps accumulate (README *Search spaces*).
FLOAT_RANGES = [  # (range, exact values, Hydra's basic sweeper)
    ("range(0,0.3,0.1)", [0.0, 0.1, 0.2], [0.0, 0.1, 0.2]),
    ("range(0,0.2,0.1)", [0.0, 0.1], [0.0, 0.1, 0.2]),
    ("range(0.1,0.7,0.2)", [0.1, 0.3, 0.5], [0.1, 0.30000000000000004, 0.5]),
    ("range(0,0.4,0.1)", [0.0, 0.1, 0.2, 0.3], [0.0, 0.1, 0.2, 0.3, 0.4]),
    ("range(0.1,0.4,0.1)", [0.1, 0.2, 0.3], [0.1, 0.2, 0.30000000000000004, 0.4]),
    ("range(0,1,0.3)", [0.0, 0.3, 0.6, 0.9], [0.0, 0.3, 0.6, 0.8999999999999999]),
    ("range(1,0,-0.25)", [1.0, 0.75, 0.5, 0.25], [1.0, 0.75, 0.5, 0.25]),
    ("range(0,10,3)", [0, 3, 6, 9], [0, 3, 6, 9]),
    ("range(5,0,-2)", [5, 3, 1], [5, 3, 1]),
]


@pytest.mark.parametrize("rng, exact, hydra", FLOAT_RANGES)
def test_float_range_is_start_plus_k_steps_strictly_below_stop(rng, exact, hydra):
    o = parse_one(f"x={rng}")
    assert list(o.sweep_iterator()) == hydra  # what Hydra's basic sweeper runs (README says where it differs)
    assert _space.range_values(o.value()) == exact  # == on floats: no 0.30000000000000004, no stop value
    dist = _space.to_distribution(o)
    assert (dist.low, dist.high) == (min(exact), max(exact))  # Optuna's high is the last value, never stop
    grid = [p["x"] for p in _space.parse({}, [f"x={rng}"]).grid()]
    assert grid == sorted(exact)  # the Optuna grid sampler's points
    assert all(type(v) is type(exact[0]) for v in grid)


def test_range_with_a_zero_step_is_one_line():
    with pytest.raises(SweeperError, match="step is 0"):
        _space.to_distribution(parse_one("x=range(0,1,0.0)"))


@pytest.mark.parametrize(
    "rng, exact, hydra", [r for r in FLOAT_RANGES if r[0] in ("range(0,0.2,0.1)", "range(0.1,0.7,0.2)")]
)
def test_preflight_checks_the_range_values_each_sweeper_runs(check, rng, exact, hydra):
    """The Optuna sweeper: the exact values; Hydra's basic sweeper: the values it really runs."""
    optuna_checked = [
        c.drop_prob for c in check("-m", "hydra/sweeper=optuna", "hydra.sweeper.sampler=grid", f"drop_prob={rng}")
    ]
    assert optuna_checked == exact
    basic_checked = [c.drop_prob for c in check("-m", f"drop_prob={rng}")]
    assert basic_checked == hydra


def test_preflight_refuses_a_zero_step_range_instead_of_looping(check):
    with pytest.raises(ConfigError, match="drop_prob=range.*step is 0"):
        check("-m", "drop_prob=range(0,0.5,0.0)")


def test_grid_rejects_continuous_dimensions():
    with pytest.raises(SweeperError, match="grid.*drop_prob=interval"):
        _space.parse({"drop_prob": "interval(0,0.5)"}, []).grid()


def test_grid_order_is_the_basic_sweepers():
    space = _space.parse({}, ["a=choice(0,0.5)", "b=range(0,0.3,0.2)"])
    assert [(p["a"], p["b"]) for p in space.grid()] == [(0, 0.0), (0, 0.2), (0.5, 0.0), (0.5, 0.2)]


def test_non_string_config_params_are_fixed_values():
    space = _space.parse({"seed": 3, "layer_drop_probs": [0.1, None, 0.2, None], "trainer.progress": False}, [])
    assert space.fixed == ["seed=3", "layer_drop_probs=[0.1,null,0.2,null]", "trainer.progress=false"]


def test_command_line_overrides_config_params():
    space = _space.parse(
        {"drop_prob": "interval(0, 0.5)", "input_drop_prob": "interval(0, 0.3)", "seed": 3},
        [
            "input_drop_prob=0.1",
            "drop_prob=interval(0.1,0.2)",
            "+search=dropout",
            "optimizer.lr=tag(log, interval(1e-4,1e-2))",
            "data.root=/tmp/x y",
        ],
    )
    assert space.distributions == {
        "drop_prob": FloatDistribution(0.1, 0.2),
        "optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True),
    }
    assert space.fixed == ["seed=3", "input_drop_prob=0.1", "+search=dropout", "data.root=/tmp/x y"]
    assert space.describe()["drop_prob"] == "drop_prob=interval(0.1,0.2)"


@pytest.mark.parametrize("value", [0.1, 0.30000000000000004, 1e-07, 3, True, False, "adam", 0.0, 12345.678])
def test_job_overrides_parse_back_to_the_value(value):
    (o,) = OverridesParser.create().parse_overrides([f"x={_space.format_value(value)}"])
    got = o.value()
    if isinstance(value, float):
        assert got == pytest.approx(value) and isinstance(got, float)
    else:
        assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    "text",
    [
        "sqlite:////tmp/a b/optuna.db",
        "postgresql+psycopg2://u:p@h:5432/db",
        "it's",
        "a,b",
        "${oc.env:HOME}",
        "back\\slash",
        "x=y",
    ],
)
def test_quote_round_trips_any_string(text):
    from omegaconf import OmegaConf

    o = parse_one(f"k={_space.quote(text)}")
    assert not o.is_sweep_override()
    assert OmegaConf.create({"k": o.value()}).k == text  # as the job's config will read it


def test_enqueued_configurations_are_checked_against_the_space():
    space = _space.parse(
        {
            "drop_prob": "interval(0, 0.5)",
            "n": "int(interval(1,4))",
            "opt": "choice(adam,sgd)",
            "q": "range(0,0.5,0.1)",
        },
        [],
    )
    assert space.check_params({"drop_prob": 0, "n": 2.0, "opt": "sgd", "q": 0.3}, "e") == {
        "drop_prob": 0.0,
        "n": 2,
        "opt": "sgd",
        "q": 0.3,
    }
    for bad, word in [
        ({"drop_prob": 0.7}, "outside drop_prob=interval(0, 0.5)"),
        ({"zz": 1}, "not a searched key"),
        ({"n": 2.5}, "outside"),
        ({"opt": "rmsprop"}, "outside"),
        ({"q": 0.25}, "outside"),
        ({"q": 0.5}, "outside"),
        ({}, "mapping"),
    ]:
        with pytest.raises(SweeperError, match=re.escape(word)):
            space.check_params(bad, "hydra.sweeper.enqueue[0]")


# --------------------------------------------------------------------------------------- options
def make(**kw):
    base = dict(
        sampler="tpe",
        seed=777,
        sampler_args=SamplerArgs(),
        direction="maximize",
        n_trials=5,
        n_jobs=1,
        storage="sqlite:////tmp/x.db",
        study_name="s",
        pruner="median",
        pruner_args=PrunerArgs(),
        max_failure_rate=0.2,
        heartbeat_interval=5,
        grace_period=30,
        params={"x": "interval(0,1)"},
        enqueue=[],
    )
    return OptunaSweeperImpl(**{**base, **kw})


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"sampler": "bayes"}, ["hydra.sweeper.sampler=bayes", "tpe, random, grid, cmaes, nsgaii"]),
        ({"pruner": "asha"}, ["hydra.sweeper.pruner=asha", "none, median, hyperband, successive_halving"]),
        ({"direction": "max"}, ["hydra.sweeper.direction", "maximize, minimize"]),
        ({"direction": ["maximize", "down"]}, ["hydra.sweeper.direction"]),
        ({"n_trials": 0}, ["hydra.sweeper.n_trials=0", ">= 1"]),
        ({"n_jobs": -1}, ["hydra.sweeper.n_jobs=-1"]),
        ({"max_failure_rate": 1.5}, ["hydra.sweeper.max_failure_rate=1.5", "[0, 1]"]),
        ({"storage": ""}, ["hydra.sweeper.storage", "database URL"]),
        ({"storage": "not a url"}, ["hydra.sweeper.storage", "not a database URL"]),
        ({"study_name": "a b"}, ["hydra.sweeper.study_name"]),
        ({"heartbeat_interval": 0}, ["hydra.sweeper.heartbeat_interval=0"]),
        ({"enqueue": {"x": 1}}, ["hydra.sweeper.enqueue"]),
    ],
)
def test_bad_options_give_one_line(kw, words):
    with pytest.raises(SweeperError) as err:
        make(**kw)
    assert "\n" not in str(err.value)
    for w in words:
        assert w in str(err.value)


def test_storage_password_is_not_in_the_error():
    with pytest.raises(SweeperError) as err:
        make(study_name="a b", storage="postgresql://u:hunter2@h/db")
    assert "hunter2" not in str(err.value)


def test_sampler_factory_covers_every_name():
    space = _space.parse({"x": "interval(0,1)"}, [])
    kinds = {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "grid": optuna.samplers.RandomSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "nsgaii": optuna.samplers.NSGAIISampler,
    }
    for name, cls in kinds.items():
        assert isinstance(make(sampler=name).make_sampler(space, 3), cls)


@pytest.mark.parametrize(
    "name, cls",
    [
        ("none", optuna.pruners.NopPruner),
        ("median", optuna.pruners.MedianPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
        ("successive_halving", optuna.pruners.SuccessiveHalvingPruner),
    ],
)
def test_pruner_description_round_trips(name, cls):
    from omegaconf import OmegaConf

    s = make(pruner=name)
    s.config = OmegaConf.create({"trainer": {"epochs": 7}, "optuna": {"hook": "sweep.optuna_hook.DropoutHook"}})
    desc = s.pruner_description()
    assert desc["name"] == name and isinstance(build_pruner(desc), cls)
    if name == "hyperband":
        assert desc["args"]["max_resource"] == 7  # a trial's resource is its epochs
    if name == "median":
        # the defaults: 5 finished trials, a warm-up of two thirds of the epochs (tests/test_pruning.py)
        assert desc["args"] == {"n_startup_trials": 5, "n_warmup_steps": 4, "interval_steps": 1}


def test_threads_are_shared_out_under_joblib(monkeypatch):
    from omegaconf import OmegaConf

    from sweep.optuna_hook import DropoutHook

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    s = DropoutHook(None, make(n_jobs=4))  # this app's hook (sweep/config.py names it)
    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    s.config = OmegaConf.create(
        {"trainer": {"threads": None}, "hydra": {"launcher": {"_target_": joblib, "n_jobs": -1}}}
    )
    assert s.threads_per_job() == 2
    s.config.hydra.launcher.n_jobs = 2  # joblib runs 2 at a time whatever the batch
    assert s.threads_per_job() == 4
    s.config.trainer.threads = 3  # the user's choice stands
    assert s.threads_per_job() is None
    s.config.trainer.threads = None
    s.config.hydra.launcher._target_ = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    assert s.threads_per_job() is None


# ------------------------------------------------------------------------------ Hydra integration
def test_hydra_discovers_the_sweeper():
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    from hydra_plugins.dropout_optuna_sweeper.optuna_sweeper import OptunaSweeper

    names = {f"{p.__module__}.{p.__name__}" for p in Plugins.instance().discover(Sweeper)}
    assert f"{OptunaSweeper.__module__}.OptunaSweeper" in names


def test_hydra_namespace_package_has_no_init():
    import hydra_plugins

    assert getattr(hydra_plugins, "__file__", None) is None  # a namespace package shared with other plugins


@pytest.fixture
def check(tiny_root, tmp_path):
    return lambda *args: check_cli([*tiny_overrides(tiny_root, tmp_path), *args])


@pytest.mark.parametrize(
    "search, keys",
    [
        ("dropout", {"drop_prob", "input_drop_prob"}),
        (
            "per_layer",
            {"layer_drop_probs.0", "layer_drop_probs.1", "layer_drop_probs.2", "layer_drop_probs.3", "input_drop_prob"},
        ),
    ],
)
def test_preflight_checks_the_shipped_search_spaces(check, search, keys):
    from hydra import compose, initialize_config_dir

    from sweep.config import PROJECT_ROOT

    configs = check("-m", "hydra/sweeper=optuna", f"+search={search}")
    assert len(configs) == 1 + 2 * len(keys)  # the base config and both ends of every interval
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"+search={search}"], return_hydra_config=True)
    sw = cfg.hydra.sweeper
    assert sw._target_.endswith("OptunaSweeper") and set(sw.params) == keys
    assert sw.sampler.name == "tpe" and sw.seed == 777 and sw.pruner.name == "median" and sw.direction == "maximize"
    assert sw.storage.endswith("/runs/optuna.db") and sw.study_name == search
    space = _space.parse(dict(sw.params), [])
    enq = [space.check_params(dict(e), "enqueue") for e in sw.enqueue]
    assert len(enq) == 3
    if search == "dropout":
        assert space.distributions == {
            "drop_prob": FloatDistribution(0, 0.5),
            "input_drop_prob": FloatDistribution(0, 0.3),
        }
        assert enq == [
            {"drop_prob": 0.3, "input_drop_prob": 0.0},
            {"drop_prob": 0.0, "input_drop_prob": 0.0},
            {"drop_prob": 0.5, "input_drop_prob": 0.2},
        ]


@pytest.mark.parametrize(
    "args, words",
    [
        (
            ["hydra.sweeper.sampler=bayes"],
            ["hydra.sweeper.sampler", "bayes", "tpe", "random", "grid", "cmaes", "nsgaii"],
        ),
        (["hydra.sweeper.pruner=asha"], ["hydra.sweeper.pruner", "asha", "median", "hyperband", "successive_halving"]),
        (["drop_prob=interval(0.5,0.1)"], ["drop_prob=interval(0.5,0.1)", "lower < upper"]),
        (["input_drop_prob=interval(0,1.5)"], ["input_drop_prob", "[0, 1)"]),
        (["hydra.sweeper.n_trials=many"], ["hydra.sweeper.n_trials", "many"]),
    ],
)
def test_preflight_rejects_bad_sweeper_settings_in_one_line(check, args, words):
    with pytest.raises(ConfigError) as err:
        check("-m", "hydra/sweeper=optuna", "+search=dropout", *args)
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


# ------------------------------------------------------------------------------ the job's side
def _study(tmp_path, pruner: dict, directions=("maximize",), db="optuna.db"):
    url = f"sqlite:///{tmp_path}/{db}"
    study = optuna.create_study(storage=url, study_name="s", directions=list(directions))
    study.set_user_attr(PRUNER_ATTR, pruner)
    return url, study


def test_reporter_reports_epochs_and_prunes_a_bad_trial(tmp_path):
    url, study = _study(tmp_path, {"name": "median", "args": {"n_startup_trials": 1, "n_warmup_steps": 0}})
    good = study.ask()
    for epoch, v in enumerate([0.8, 0.9, 0.95], start=1):
        good.report(v, epoch)
    study.tell(good, 0.95)
    bad = study.ask()
    bad.set_user_attr(MAX_EPOCHS_ATTR, 3)
    r = TrialReporter(url, "s", bad.number)
    assert r.tags() == {"optuna_study": "s", "optuna_trial": 1}
    assert r.should_stop(1, 0.1) is True
    assert isinstance(r.pruned(1), optuna.TrialPruned)
    assert optuna.load_study(study_name="s", storage=url).trials[1].intermediate_values == {1: 0.1}


def test_reporter_never_prunes_the_last_epoch(tmp_path):
    url, study = _study(tmp_path, {"name": "median", "args": {"n_startup_trials": 1, "n_warmup_steps": 0}})
    study.add_trial(
        optuna.trial.create_trial(value=0.9, intermediate_values={1: 0.9, 2: 0.9}, distributions={}, params={})
    )
    t = study.ask()
    t.set_user_attr(MAX_EPOCHS_ATTR, 2)
    r = TrialReporter(url, "s", t.number)
    assert r.should_stop(2, 0.1) is False  # reported, but the trial has nothing left to save


def test_reporter_without_pruner_and_multi_objective(tmp_path):
    url, study = _study(tmp_path, {"name": "none"})
    t = study.ask()
    assert TrialReporter(url, "s", t.number).should_stop(1, 0.1) is False
    url2, study2 = _study(tmp_path, {"name": "median"}, directions=("maximize", "minimize"), db="mo.db")
    t2 = study2.ask()
    r = TrialReporter(url2, "s", t2.number)
    assert r.should_stop(1, [0.9, 0.1]) is False
    assert optuna.load_study(study_name="s", storage=url2).trials[0].intermediate_values == {}


def test_reporter_ignores_nan(tmp_path):
    url, study = _study(tmp_path, {"name": "median", "args": {"n_startup_trials": 0}})
    t = study.ask()
    assert TrialReporter(url, "s", t.number).should_stop(1, math.nan) is False


# ------------------------------------------------------------------------------ the study lock
def _hold(url, seconds, started):
    with study_lock(url, "s"):
        started.set()
        time.sleep(seconds)


def test_sqlite_study_lock_is_exclusive_across_processes(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    ctx = multiprocessing.get_context("spawn")
    started = ctx.Event()
    p = ctx.Process(target=_hold, args=(url, 1.5, started))
    p.start()
    try:
        assert started.wait(60)
        t0 = time.time()
        with study_lock(url, "s"):
            waited = time.time() - t0
    finally:
        p.join(30)
    assert waited > 0.5


def test_optuna_dashboard_opens_a_study_the_sweeper_wrote(tmp_path):
    """`optuna-dashboard sqlite:///runs/optuna.db` serves the study: its API, called in-process."""
    import io
    import json
    import sys

    from optuna_dashboard import wsgi

    url = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(storage=url, study_name="dropout", direction="maximize")
    study.set_metric_names(["val_acc"])
    study.set_user_attr(PRUNER_ATTR, {"name": "median", "args": {"n_warmup_steps": 2}})
    t = study.ask({"drop_prob": FloatDistribution(0, 0.5)})
    t.report(0.9, 1)
    study.tell(t, 0.95)
    app = wsgi(optuna.storages.RDBStorage(url))

    def get(path):
        status = []
        env = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "SERVER_NAME": "x",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.input": io.BytesIO(),
            "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http",
        }
        body = b"".join(app(env, lambda s, h, e=None: status.append(s)))
        return status[0], body

    status, body = get("/api/studies")
    assert status.startswith("200")
    (summary,) = json.loads(body)["study_summaries"]
    assert summary["study_name"] == "dropout"
    status, body = get(f"/api/studies/{summary['study_id']}")
    detail = json.loads(body)
    assert status.startswith("200") and detail["objective_names"] == ["val_acc"] and len(detail["trials"]) == 1


@pytest.mark.parametrize("ci, outcome", [(None, "skip"), ("true", "fail"), ("1", "fail"), ("false", "skip")])
def test_missing_postgres_skips_locally_and_fails_under_ci(monkeypatch, ci, outcome):
    from helpers import pg

    monkeypatch.setattr(pg, "find_bindir", lambda: None)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    expected = pytest.skip.Exception if outcome == "skip" else pytest.fail.Exception
    with pytest.raises(expected, match="postgresql"):
        pg.require_bindir()


def test_opening_a_new_storage_survives_another_program_initialising_it(tmp_path, monkeypatch):
    """Optuna stamps its schema version on every open, a reader's too (a dashboard, a test polling the
    file): when that reader wins the race on a brand-new database, the sweeper's stamp hits a UNIQUE
    constraint. Simulated here: the real stamp lands, then the loser's error is raised once."""
    from optuna.storages._rdb.storage import _VersionManager
    from sqlalchemy.exc import IntegrityError

    from sweep.search.trial import open_storage

    real, raised = _VersionManager._set_alembic_revision, []

    def stamp_raced(self, revision):
        real(self, revision)  # the other program's stamp
        if not raised:
            raised.append(True)
            raise IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE constraint failed"))

    monkeypatch.setattr(_VersionManager, "_set_alembic_revision", stamp_raced)
    storage = open_storage(f"sqlite:///{tmp_path}/optuna.db")
    assert raised and optuna.create_study(storage=storage, study_name="s").study_name == "s"
