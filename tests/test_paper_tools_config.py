"""Issue 12's keys (eval.mc_samples, model.max_norm, optimizer.schedule and its arguments): defaults,
accepted values, and refusals with one line naming the key, the bad value and what is allowed."""

import pytest
from test_bad_input import _assert_nothing_recorded, _assert_one_line_error

from helpers.cli import tiny_overrides
from sweep.config import ConfigError
from sweep.preflight import check_cli


@pytest.fixture
def check(tiny_root, tmp_path):
    return lambda *args: check_cli([*tiny_overrides(tiny_root, tmp_path), *args])  # trainer.epochs=2


def test_defaults_change_nothing(check):
    (c,) = check()
    assert c.eval.mc_samples == 0 and c.model.max_norm is None
    o = c.optimizer
    assert (o.schedule, o.warmup_epochs, o.step_size, o.gamma) == ("none", 0, 10, 0.1)


def test_accepted_values(check):
    (c,) = check(
        "optimizer=sgd",
        "optimizer.schedule=step",
        "optimizer.step_size=1",
        "optimizer.gamma=0.5",
        "optimizer.warmup_epochs=1",
        "model.max_norm=3.5",
        "eval.mc_samples=50",
    )
    assert (c.optimizer.name, c.optimizer.momentum, c.optimizer.schedule) == ("sgd", 0.9, "step")
    assert (c.optimizer.step_size, c.optimizer.gamma, c.optimizer.warmup_epochs) == (1, 0.5, 1)
    assert c.model.max_norm == 3.5 and c.eval.mc_samples == 50
    (c,) = check("optimizer.schedule=cosine", "model.max_norm=null")
    assert c.optimizer.schedule == "cosine" and c.model.max_norm is None


@pytest.mark.parametrize(
    "args, words",
    [
        (["eval.mc_samples=-1"], ["eval.mc_samples=-1", ">= 0"]),
        (["eval.mc_samples=2.5"], ["eval.mc_samples", "2.5"]),
        (["model.max_norm=0"], ["model.max_norm=0.0", "> 0"]),
        (["model.max_norm=-2"], ["model.max_norm=-2.0", "> 0"]),
        (["model.max_norm=nan"], ["model.max_norm=nan"]),
        (["model.max_norm=inf"], ["model.max_norm=inf"]),
        (["optimizer.schedule=linear"], ["optimizer.schedule='linear'", "none, cosine, step"]),
        (["optimizer.warmup_epochs=-1"], ["optimizer.warmup_epochs=-1", ">= 0"]),
        (["optimizer.warmup_epochs=2"], ["optimizer.warmup_epochs=2", "less than trainer.epochs (2)"]),
        (["optimizer.step_size=0"], ["optimizer.step_size=0", ">= 1"]),
        (["optimizer.gamma=0"], ["optimizer.gamma=0.0", "(0, 1]"]),
        (["optimizer.gamma=1.5"], ["optimizer.gamma=1.5", "(0, 1]"]),
    ],
)
def test_bad_values_give_one_line(check, args, words):
    with pytest.raises(ConfigError) as err:
        check(*args)
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


@pytest.mark.slow
@pytest.mark.parametrize(
    "arg, words",
    [
        ("eval.mc_samples=-1", ["eval.mc_samples=-1", ">= 0"]),
        ("model.max_norm=0", ["model.max_norm=0.0", "> 0"]),
        ("optimizer.schedule=linear", ["optimizer.schedule='linear'", "none, cosine, step"]),
    ],
)
def test_the_cli_refuses_them_before_any_run(cli, arg, words):
    _assert_one_line_error(cli(arg), *words)
    _assert_nothing_recorded(cli.out)
