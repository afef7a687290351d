"""The one list of samplers, pruners and directions the sweeper offers, next to the code that builds them.

Imported by the plugin's config on every Hydra start (its Enum and messages are built from these
names), so Optuna is imported only inside the builders.

    SAMPLERS  name -> Sampler: the Optuna class, which `hydra.sweeper.sampler_args` it takes (and
              under which keyword), whether trial n draws with seed + n
    PRUNERS   name -> the Optuna class and the arguments it takes (a step is an epoch), with defaults
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sampler:
    cls: str  # in optuna.samplers
    args: dict[str, str] = field(default_factory=dict)  # sampler_args key -> the class's keyword
    fixed: dict[str, Any] = field(default_factory=dict)  # keywords always passed
    # trial n gets a sampler seeded seed + n, so a resumed study or a second worker never replays the
    # first draws of another; a sequence sampler (qmc) keeps one seed, or its sequence would restart
    reseed: bool = True


SAMPLERS: dict[str, Sampler] = {
    "tpe": Sampler(
        "TPESampler",
        {"n_startup_trials": "n_startup_trials", "multivariate": "multivariate", "constant_liar": "constant_liar"},
    ),
    "random": Sampler("RandomSampler"),
    "grid": Sampler("RandomSampler"),  # the grid's points are enqueued one by one: nothing is sampled
    "cmaes": Sampler(
        "CmaEsSampler",
        {"n_startup_trials": "n_startup_trials", "population_size": "popsize"},
        {"warn_independent_sampling": False},
    ),
    "nsgaii": Sampler("NSGAIISampler", {"population_size": "population_size"}),
    "gp": Sampler("GPSampler", {"n_startup_trials": "n_startup_trials"}),  # Gaussian process (needs torch, scipy)
    "qmc": Sampler("QMCSampler", reseed=False),  # quasi-Monte Carlo (Sobol) sequence (needs scipy)
}
SINGLE_OBJECTIVE = ("cmaes",)  # cannot optimise several objectives
# hydra-optuna-sweeper names its sampler by class (`sampler._target_`); GridSampler is our `grid`
TARGETS = {f"optuna.samplers.{s.cls}": name for name, s in SAMPLERS.items() if name != "grid"}
TARGETS["optuna.samplers.GridSampler"] = "grid"

PRUNERS: dict[str, tuple[str, dict[str, Any]]] = {
    "none": ("NopPruner", {}),
    "median": ("MedianPruner", {"n_startup_trials": 5, "n_warmup_steps": 0, "interval_steps": 1}),
    "hyperband": ("HyperbandPruner", {"min_resource": 1, "max_resource": "auto", "reduction_factor": 3}),
    "successive_halving": (
        "SuccessiveHalvingPruner",
        {"min_resource": 1, "reduction_factor": 3, "min_early_stopping_rate": 0},
    ),
}
PRUNER_ARGS = {name: args for name, (_, args) in PRUNERS.items()}
WARMUP_SHARE = (2, 3)  # median: a trial always runs 2/3 of its steps when n_warmup_steps is null


def default_warmup(max_resource: int | None) -> int:
    """The median pruner's n_warmup_steps when none is given: two thirds of a trial's steps (its epochs, from
    the app's hook), rounded down; 0 when unknown. High dropout rates learn more slowly and are behind in
    the first epochs, level only about two thirds of the way (README, Pruning: bench/pruning.py)."""
    if not isinstance(max_resource, int) or isinstance(max_resource, bool) or max_resource <= 0:
        return 0
    num, den = WARMUP_SHARE
    return (num * max_resource) // den


DIRECTIONS = ("maximize", "minimize")


def sampler_kwargs(name: str, sampler_args: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keywords of sampler `name`: its fixed ones, the `sampler_args` it takes, then `extra`
    (keywords given as `hydra.sweeper.sampler.<key>`, passed as they are)."""
    spec = SAMPLERS[name]
    kw = dict(spec.fixed)
    kw.update({kwarg: sampler_args[key] for key, kwarg in spec.args.items() if sampler_args.get(key) is not None})
    kw.update(extra or {})
    return kw


def make_sampler(name: str, seed: int | None, sampler_args: dict[str, Any], extra: dict[str, Any] | None = None):
    import optuna

    return getattr(optuna.samplers, SAMPLERS[name].cls)(seed=seed, **sampler_kwargs(name, sampler_args, extra))


def sampler_keywords(name: str) -> set[str]:
    """Every keyword the Optuna class of sampler `name` takes (seed excluded)."""
    import inspect

    import optuna

    params = inspect.signature(getattr(optuna.samplers, SAMPLERS[name].cls)).parameters
    return {p for p in params if p != "seed"}


def build_pruner(description: dict[str, Any] | None):
    """The pruner a description names: {"name": "median", "args": {"n_warmup_steps": 2, ...}}."""
    import optuna

    description = description or {}
    name = description.get("name") or "none"
    if name not in PRUNERS:
        raise ValueError(f"hydra.sweeper.pruner={name!r} is unknown; allowed: {', '.join(PRUNERS)}")
    cls, defaults = PRUNERS[name]
    given = description.get("args") or {}
    kwargs = {k: default if given.get(k) is None else given[k] for k, default in defaults.items()}
    return getattr(optuna.pruners, cls)(**kwargs)
