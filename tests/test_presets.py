"""Every shipped config file composes and validates: each option of each group in conf/, each
`+experiment=` and `+search=` preset (its sweeper options, its enqueued points and both ends of its
search space), through Hydra's compose API -- so a broken preset fails here, not in someone's sweep."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sweep.config import PROJECT_ROOT, ConfigError, validate

CONF = PROJECT_ROOT / "conf"
APPENDED = ("experiment", "search")  # not in the defaults list: selected with +group=option


def options(conf: Path = CONF) -> list[str]:
    """`group=option` for every YAML file in every group folder of `conf`."""
    out = []
    for group in sorted(p for p in conf.iterdir() if p.is_dir()):
        for f in sorted(group.glob("*.yaml")):
            out.append(f"{'+' if group.name in APPENDED else ''}{group.name}={f.stem}")
    return out


def _compose(conf: Path, overrides: list[str]):
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def _space_ends(params) -> list[str]:
    """Overrides for the values a search space can take at its edges (an interval's two ends)."""
    out = []
    for o in OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in (params or {}).items()]):
        key, v = o.get_key_element(), o.value()
        if isinstance(v, IntervalSweep):
            out += [f"{key}={float(v.start)!r}", f"{key}={math.nextafter(float(v.end), float(v.start))!r}"]
        elif o.is_sweep_override():
            out += [f"{key}={s}" for s in o.sweep_string_iterator()]
        else:
            out.append(o.input_line)
    return out


def check_preset(option: str, conf: Path = CONF) -> int:
    """Compose and validate `option`; for a search preset also its sweeper options and every point it
    will try first or at its edges. Returns how many configurations were validated."""
    cfg = _compose(conf, [option])
    validate(cfg)
    checked = 1
    sweeper = cfg.hydra.sweeper
    if OmegaConf.select(cfg, "hydra.sweeper.params") is not None:
        from sweep.search import check_sweep
        from sweep.search.space import SweeperError

        opts = OmegaConf.to_container(sweeper, resolve=True)
        optuna = opts.pop("_target_", "").startswith("hydra_plugins.dropout_optuna_sweeper.")
        try:
            if optuna:  # a study preset's grid runs on Hydra's basic sweeper, whose options are Hydra's own
                check_sweep(opts, [], cfg)
        except SweeperError as e:
            raise ConfigError(str(e).splitlines()[0]) from None
        points = [[f"{k}={v}" for k, v in point.items()] for point in sweeper.get("enqueue") or []]
        points += [[end] for end in _space_ends(sweeper.params)]
        for point in points:
            validate(_compose(conf, [option, *point]))
        checked += len(points)
    return checked


@pytest.fixture(autouse=True)
def _server_env(monkeypatch):
    # tracking=server reads its addresses from the environment; nothing is contacted here
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("OPTUNA_STORAGE", "postgresql://optuna@127.0.0.1/optuna")


def test_every_group_and_preset_is_found():
    found = options()
    for expected in (
        "model=mlp",
        "data=mnist",
        "data=fashion_mnist",
        "optimizer=adam",
        "optimizer=sgd",
        "trainer=default",
        "tracking=local",
        "tracking=server",
        "+experiment=lab",
        "+experiment=quick",
        "+search=dropout",
        "+search=per_layer",
    ):
        assert expected in found, found


@pytest.mark.parametrize("option", options())
def test_every_shipped_option_composes_and_validates(option):
    n = check_preset(option)
    if option.startswith("+search="):
        assert n > 1 + 2  # the base, three enqueued points, and the ends of the space


@pytest.mark.parametrize(
    "group, name, text, words",
    [
        (
            "experiment",
            "broken",
            "# @package _global_\ntrainer:\n  precision: fp16\n",
            ["trainer.precision='fp16'", "fp32, bf16"],
        ),
        ("experiment", "typo", "# @package _global_\ntrainer:\n  epoch: 3\n", ["epoch"]),
        (
            "search",
            "bad_enqueue",
            "# @package _global_\ndefaults:\n  - override /hydra/sweeper: optuna\n"
            "hydra:\n  sweeper:\n    params:\n      drop_prob: interval(0, 0.5)\n"
            "    enqueue:\n      - {drop_prob: 1.5}\n",
            ["drop_prob=1.5", "outside drop_prob=interval(0, 0.5)"],
        ),  # the sweeper's own check comes first
        (
            "search",
            "bad_space",
            "# @package _global_\ndefaults:\n  - override /hydra/sweeper: optuna\n"
            "hydra:\n  sweeper:\n    params:\n      input_drop_prob: interval(0.2, 1.5)\n",
            ["input_drop_prob", "[0, 1)"],
        ),
    ],
)
def test_a_broken_preset_is_caught(tmp_path, group, name, text, words):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / group / f"{name}.yaml").write_text(text)
    assert f"+{group}={name}" in options(conf)
    with pytest.raises((ConfigError, HydraException, OmegaConfBaseException)) as err:
        check_preset(f"+{group}={name}", conf)
    for w in words:
        assert w in str(err.value), err.value
