"""Hydra override grammar -> Optuna distributions, and sampled values -> override strings.

    choice(a,b,...)            CategoricalDistribution([a, b, ...])
    range(a,b[,step])          Int/FloatDistribution(a, last value below b, step): a + k*step strictly
                               below b, computed in decimal (range(0,0.5,0.1) = 0, 0.1, 0.2, 0.3, 0.4);
                               see `range_values` for where Hydra's basic sweeper differs
    interval(a,b)              FloatDistribution(a, b)        (continuous; Hydra casts both ends to float)
    int(interval(a,b))         IntDistribution(a, b)          (both ends included)
    tag(log, interval(a,b))    the same with log=True         (a > 0)
    a plain value              not searched: passed unchanged to every job

`interval` and `int(interval)` follow Optuna: both ends can be drawn (a float end only with
probability ~0). The pre-flight check validates a float interval at a and just below b.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from hydra.errors import CompactHydraException, HydraException
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution


class SweeperError(CompactHydraException):
    """A sweeper setting or search space a user can fix: Hydra prints just this one line."""


def describe_distribution(d: BaseDistribution) -> str:
    """An Optuna distribution in the override grammar that makes it: choice(0.1, 0.2), interval(0.0, 0.5),
    tag(log, interval(...)), range(0, 10, 2), int(interval(1, 4))."""
    if isinstance(d, CategoricalDistribution):
        return "choice(" + ", ".join(map(str, d.choices)) + ")"
    kind = "int(" if type(d).__name__ == "IntDistribution" else ""
    if getattr(d, "step", None) not in (None, 1) or (kind and getattr(d, "step", 1) != 1):
        return f"range({d.low}, {d.high}, {d.step})"
    body = f"interval({d.low}, {d.high})"
    body = f"tag(log, {body})" if getattr(d, "log", False) else body
    return f"{kind}{body})" if kind else body


@dataclass
class SearchSpace:
    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # name -> the override as written (messages)
    fixed: list[str] = field(default_factory=list)  # overrides passed to every job unchanged

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """The job's command line: the fixed overrides, then one `key=value` per sampled parameter."""
        return [*self.fixed, *(f"{name}={format_value(params[name])}" for name in self.distributions if name in params)]

    def describe(self) -> dict[str, str]:
        return {name: self.sources[name] for name in self.distributions}

    def grid(self) -> list[dict[str, Any]]:
        """Every point of the product of the searched values, the last key varying fastest (as Hydra's
        basic sweeper orders them)."""
        axes = []
        for name, dist in self.distributions.items():
            values = grid_values(dist)
            if values is None:
                raise SweeperError(
                    f"hydra.sweeper.sampler=grid needs choice(...), range(...) or int(interval(...)) "
                    f"for every searched key; {self.sources[name]} is continuous"
                )
            axes.append(values)
        return [dict(zip(self.distributions, point)) for point in itertools.product(*axes)]

    def check_params(self, params: dict[str, Any], where: str) -> dict[str, Any]:
        """A fixed configuration (hydra.sweeper.enqueue) converted to the distributions' types, or an error."""
        out = {}
        if not isinstance(params, dict) or not params:
            raise SweeperError(f"{where}={params!r} is invalid: give a mapping of searched keys to values")
        for name, value in params.items():
            name = str(name)
            if name not in self.distributions:
                allowed = ", ".join(self.distributions) or "none: the search space is empty"
                raise SweeperError(f"{where}: {name} is not a searched key; searched: {allowed}")
            dist = self.distributions[name]
            bad = SweeperError(f"{where}: {name}={value!r} is outside {self.sources[name]}")
            if isinstance(dist, CategoricalDistribution):
                matches = [c for c in dist.choices if c == value and type(c) is type(value)] or [
                    c for c in dist.choices if c == value
                ]
                if not matches:
                    raise bad
                out[name] = matches[0]
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad
            if isinstance(dist, IntDistribution):
                if value != int(value):
                    raise bad
                value = int(value)
            else:
                value = float(value)
            if not dist.low <= value <= dist.high:
                raise bad
            if dist.step is not None and not _on_step(value, dist.low, dist.step):
                raise bad
            out[name] = value
        return out


def _on_step(value: float, low: float, step: float) -> bool:
    k = (Decimal(repr(value)) - Decimal(repr(low))) / Decimal(repr(step))
    return abs(k - k.to_integral_value()) < Decimal("1e-9")


def grid_values(dist: BaseDistribution) -> list[Any] | None:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution) and not dist.log:
        return list(range(dist.low, dist.high + 1, dist.step))
    if isinstance(dist, FloatDistribution) and dist.step is not None:
        low, high, step = (Decimal(repr(x)) for x in (dist.low, dist.high, dist.step))
        n = int(((high - low) / step).to_integral_value()) + 1
        return [float(low + i * step) for i in range(n)]  # decimal: no 0.30000000000000004, no extra point
    return None


def range_values(r: RangeSweep) -> list[int | float]:
    """range(start, stop[, step]): start + k*step for k = 0, 1, ... while strictly before stop (after it
    for a negative step). Floats are computed in decimal from the numbers as written, so a float step does
    not drift. Hydra's basic sweeper (a plain `-m` grid) accumulates the step instead: it runs
    range(0,0.2,0.1) as 0, 0.1, 0.2 (stop included) and range(0.1,0.7,0.2) as 0.1, 0.30000000000000004, 0.5;
    int ranges agree."""
    start, stop, step = r.start, r.stop, r.step
    if step == 0:
        raise SweeperError(f"range({start},{stop},{step}) is invalid: the step is 0")
    if all(isinstance(x, int) and not isinstance(x, bool) for x in (start, stop, step)):
        return list(range(start, stop, step))
    d_start, d_stop, d_step = (Decimal(repr(float(x))) for x in (start, stop, step))
    n = max(0, math.ceil((d_stop - d_start) / d_step))
    return [float(d_start + k * d_step) for k in range(n)]


def _snap(x: float) -> float:
    """0.30000000000000004 -> 0.3: stepped values as a person writes them."""
    return float(f"{x:.12g}")


def format_value(value: Any) -> str:
    """A sampled value as the right-hand side of a Hydra override."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(_snap(value)) if math.isfinite(value) else str(value)
    return str(value)  # categorical strings are kept in their override-escaped form


def _element(value: Any) -> str:
    """A non-string YAML value of hydra.sweeper.params (a number, a list, ...) in override syntax."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_element(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_element(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return quote(value)
    return format_value(value)


def quote(text: str) -> str:
    """A literal string as an override value: bare when Hydra reads it back unchanged, else single-quoted."""
    text = str(text)
    if "${" not in text:
        try:
            parsed = OverridesParser.create().parse_override(f"k={text}")
            if not parsed.is_sweep_override() and parsed.value() == text:
                return text
        except HydraException:
            pass
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("${", "\\${")
    return f"'{escaped}'"


def parse(params: dict[str, Any] | None, arguments: list[str]) -> SearchSpace:
    """The search space of `hydra.sweeper.params` (config files) and the command line's overrides.

    A command-line override of a key replaces the config file's entry for it; a plain value there
    takes the key out of the search.
    """
    lines = [f"{k}={v if isinstance(v, str) else _element(v)}" for k, v in (params or {}).items()]
    try:
        from_config = OverridesParser.create().parse_overrides(lines)
    except HydraException as e:
        raise SweeperError(f"hydra.sweeper.params: {str(e).splitlines()[0]}") from None
    try:
        from_cli = OverridesParser.create().parse_overrides(list(arguments))
    except HydraException as e:
        raise SweeperError(str(e).splitlines()[0]) from None
    merged: dict[str, Override] = {}
    for o in [*from_config, *from_cli]:
        merged.pop(o.key_or_group, None)  # the later one wins, at the later position
        merged[o.key_or_group] = o
    space = SearchSpace()
    for o in merged.values():
        dist = to_distribution(o)
        if dist is None:
            space.fixed.append(
                o.input_line if o.input_line else f"{o.get_key_element()}={o.get_value_element_as_str()}"
            )
        else:
            name = o.get_key_element()
            space.distributions[name] = dist
            space.sources[name] = f"{name}={o.get_value_string()}" if o.input_line is None else o.input_line
    return space


def to_distribution(o: Override) -> BaseDistribution | None:
    """The Optuna distribution of a sweep override; None for a plain value."""
    if not o.is_sweep_override():
        return None
    v = o.value()
    src = o.input_line or f"{o.get_key_element()}={o.get_value_string()}"
    log = "log" in getattr(v, "tags", set())
    if isinstance(v, IntervalSweep):
        lo, hi = v.start, v.end
        if not lo < hi:
            raise SweeperError(f"{src} is invalid: an interval needs lower < upper")
        if log and lo <= 0:
            raise SweeperError(f"{src} is invalid: a log interval needs lower > 0")
        if isinstance(lo, int) and isinstance(hi, int):
            return IntDistribution(lo, hi, log=log)
        return FloatDistribution(float(lo), float(hi), log=log)
    if log:
        raise SweeperError(f"{src} is invalid: tag(log, ...) applies to interval(a,b) only")
    if isinstance(v, RangeSweep):
        try:
            values = range_values(v)
        except SweeperError as e:
            raise SweeperError(f"{src} is invalid: the step is 0") from e
        if not values:
            raise SweeperError(f"{src} is invalid: the range is empty (the upper bound is excluded)")
        step = abs(v.step)
        if all(isinstance(x, int) for x in values):
            return IntDistribution(min(values), max(values), step=step)
        return FloatDistribution(min(values), max(values), step=float(step))
    if isinstance(v, ChoiceSweep):
        choices: list[Any] = []
        for x in o.sweep_iterator(transformer=Transformer.encode):
            if x not in choices or not any(type(c) is type(x) for c in choices if c == x):
                choices.append(x)
        return CategoricalDistribution(choices)
    raise SweeperError(
        f"{src}: this kind of sweep is not supported by the Optuna sweeper; "
        "use choice, range, interval, int(interval) or tag(log, interval)"
    )
