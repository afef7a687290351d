"""Check the whole command line before Hydra starts any job.

Every value a sweep will try is composed and validated here (a grid's every point, an interval's
two ends, the search space in `hydra.sweeper.params`), the data files are acquired and checked
once, and the tracking store is probed. A mistake ends the program with one line naming the key,
the bad value and what is allowed, exit code 2, before any data loading or MLflow run.
Set DROPOUT_DEBUG=1 (or HYDRA_FULL_ERROR=1) to see tracebacks instead.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import data
from data.acquire import train_count
from data.load import split_indices
from sweep import track
from sweep.config import PROJECT_ROOT, Config, ConfigError, one_line as _one_line, validate

USER_ERRORS = (ConfigError, data.DataError, track.TrackingError)
_SKIP_FLAGS = {"-h", "--help", "--hydra-help", "--info", "-i", "--shell-completion", "-sc", "--cfg", "-c",
               "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun"}
_FLAGS_WITH_VALUE = {"--package", "-p"}


def debug() -> bool:
    return bool(os.environ.get("DROPOUT_DEBUG") or os.environ.get("HYDRA_FULL_ERROR"))


def main_or_exit(argv: list[str]) -> None:
    if debug():
        check_cli(argv)
        return
    try:
        check_cli(argv)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _overrides(argv: list[str]) -> list[str] | None:
    """The key=value part of argv, or None when a flag asks Hydra for something other than a run."""
    out, skip_next = [], False
    for arg in argv:
        if skip_next:
            skip_next = False
        elif arg in _SKIP_FLAGS or arg.split("=", 1)[0] in _SKIP_FLAGS:
            return None
        elif arg in _FLAGS_WITH_VALUE:
            skip_next = True
        elif not arg.startswith("-"):
            out.append(arg)
    return out


def _candidates(o: Override, exact_ranges: bool = False) -> list[str]:
    """Override strings for the values a sweep override can take (an interval: its two ends). A range:
    the values the Optuna sweeper uses (`exact_ranges`: start + k*step below stop, no float drift), else
    the ones Hydra's basic sweeper really runs (its float steps drift: range(0,0.2,0.1) includes 0.2)."""
    key = o.get_key_element()
    if not o.is_sweep_override():
        return [o.input_line]
    v = o.value()
    if isinstance(v, IntervalSweep):
        lo, hi = float(v.start), float(v.end)
        if not lo < hi:
            raise ConfigError(f"{o.input_line} is invalid: an interval needs lower < upper")
        inner = math.nextafter(hi, lo)  # an interval may end at an excluded bound such as p=1
        if "int" in v.tags or (isinstance(v.start, int) and isinstance(v.end, int)):
            return [f"{key}={int(lo)}", f"{key}={int(hi)}"]
        return [f"{key}={lo!r}", f"{key}={inner!r}"]
    if isinstance(v, RangeSweep) and v.step == 0:
        raise ConfigError(f"{o.input_line} is invalid: the step is 0")
    if exact_ranges and isinstance(v, RangeSweep):
        from sweep.search.space import format_value, range_values  # imports Optuna: only when searching

        return [f"{key}={format_value(x)}" for x in range_values(v)]
    return [f"{key}={s}" for s in o.sweep_string_iterator()]


def _compose(overrides: list[str]) -> DictConfig:
    try:
        with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
            return compose("config", overrides=overrides, return_hydra_config=True)
    except MissingConfigException as e:
        opts = ", ".join(sorted(o for o in (e.options or []) if o != "schema"))
        bad = next((x for x in overrides if x.lstrip("+~").split("=", 1)[0] == (e.missing_cfg_file or "").split("/")[0]), None)
        where = bad or e.missing_cfg_file
        raise ConfigError(f"{where} is not a known option" + (f"; allowed: {opts}" if opts else "")) from None
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_one_line(e)) from None


def _search_space(cfg: DictConfig) -> list[Override]:
    """The sweeper's `params` (search spaces from conf/search/*.yaml) as parsed overrides."""
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    lines = [f"{k}={v}" for k, v in params.items()]
    return _parse(lines)


def _parse(lines: list[str]) -> list[Override]:
    try:
        return OverridesParser.create().parse_overrides(lines)
    except HydraException as e:
        raise ConfigError(_one_line(e)) from None


def _check_sweeper_options(composed: DictConfig) -> None:
    """The Optuna sweeper's own options (sampler, direction, n_trials, storage...), before any parent run."""
    target = OmegaConf.select(composed, "hydra.sweeper._target_") or ""
    if not target.startswith("hydra_plugins.dropout_optuna_sweeper."):
        return
    from sweep.search import check_options
    from sweep.search.space import SweeperError

    try:
        options = OmegaConf.to_container(composed.hydra.sweeper, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(_one_line(e)) from None
    options.pop("_target_", None)
    try:
        check_options(options)
    except SweeperError as e:
        raise ConfigError(str(e).splitlines()[0]) from None


def check_cli(argv: list[str]) -> list[Config]:
    """Validate everything a run of `argv` would try; return the typed configs that were checked."""
    lines = _overrides(argv)
    if lines is None:
        return []
    parsed = _parse(lines)
    base = [c[0] for c in map(_candidates, parsed)]  # a range's first value is its start either way
    composed = _compose(base)
    optuna = (OmegaConf.select(composed, "hydra.sweeper._target_") or "").startswith("hydra_plugins.dropout_optuna_sweeper.")
    variants = [base]
    for i, o in enumerate(parsed):
        for alt in _candidates(o, exact_ranges=optuna)[1:]:
            variants.append(base[:i] + [alt] + base[i + 1:])
    # the search space of a config-file sweep (e.g. +search=dropout) is validated like the command line's
    for o in _search_space(composed):
        if o.key_or_group in {p.key_or_group for p in parsed}:
            continue  # the command line overrides it
        for alt in _candidates(o, exact_ranges=optuna):
            variants.append(base + [alt])
    checked = [validate(composed)] + [validate(_compose(v)) for v in variants[1:]]
    for name, root, download, verify in {(c.data.name, c.data.root, c.data.download, c.data.verify) for c in checked}:
        data.ensure_files(name, root, download=download, verify=verify)
    for c in checked:  # split sizes against the real file: a bad data.val_size fails here, not in every job
        split_indices(train_count(c.data.name, c.data.root), val_size=c.data.val_size, seed=c.seed,
                      train_subset=c.data.train_subset)
    multirun = any(a in ("-m", "--multirun") for a in argv)
    if multirun:
        _check_sweeper_options(composed)
    out_key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    track.check_writable(out_key, Path(OmegaConf.select(composed, out_key)))
    if checked[0].tracking.enabled:
        track.check_reachable(checked[0].tracking.uri)
        track.check_artifact_location(checked[0].tracking)
    return checked
