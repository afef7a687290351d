"""What a sweep leaves behind: optimization_results.yaml, the study's trials as CSV, the optimisation
history and parameter-importance plots in the sweep folder, and the best configuration printed at
the end. The app's hook gets the files and the summary figures (this project logs them on its MLflow
parent run: sweep/optuna_hook.py)."""

from __future__ import annotations

import logging
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import optuna
import yaml
from omegaconf import DictConfig
from optuna.trial import TrialState

from sweep.search.space import format_value
from sweep.util import atomic
from sweep.util.redact import redact

log = logging.getLogger(__name__)
RESULTS = "optimization_results.yaml"
HISTORY = "optimization_history.png"
IMPORTANCES = "param_importances.png"
TRIALS_CSV = "study_trials.csv"


def overrides(space, params: dict[str, Any]) -> list[str]:
    """A trial's job overrides: the space's fixed ones and searched keys, then the parameters a
    `custom_search_space` function suggested (in the trial, not in the space)."""
    extra = [f"{k}={format_value(v)}" for k, v in params.items() if k not in space.distributions]
    return [*space.overrides(params), *extra]


def _counts(study: optuna.Study) -> dict[str, int]:
    out = {
        s.name: 0
        for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING)
    }
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] += 1
    return out


def _best(study: optuna.Study, multi: bool) -> list[optuna.trial.FrozenTrial]:
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return []
    return list(study.best_trials) if multi else [study.best_trial]


def results_dict(
    study: optuna.Study, names: list[str], space, sweeper, stop_reason: str | None, launched: int, failed: int
) -> dict[str, Any]:
    multi = len(names) > 1
    best = _best(study, multi)
    out: dict[str, Any] = {
        "name": "optuna",
        "study_name": study.study_name,
        "storage": redact(sweeper.storage_url) if sweeper.storage_url else "in-memory",
        "sampler": sweeper.sampler_name,
        "pruner": sweeper.pruner_name,
        "directions": sweeper.directions,
        "objective": names,
        "search_space": space.describe(),
        "n_trials_wanted": sweeper.n_trials,
        "trials": _counts(study),
        "this_run": {"launched": launched, "failed": failed},
    }
    if stop_reason:
        out["stopped"] = stop_reason
    if not best:
        out["best_params"] = None
        return out
    if multi:
        out["pareto_front"] = [
            {"trial": t.number, "values": dict(zip(names, t.values)), "params": dict(t.params)}
            for t in sorted(best, key=lambda t: t.number)
        ]
    else:
        t = best[0]
        out.update(
            {
                "best_trial": t.number,
                "best_value": t.value,
                "best_params": dict(t.params),
                "best_overrides": " ".join(overrides(space, t.params)[len(space.fixed) :]),
            }
        )
    return out


def plot_history(study: optuna.Study, names: list[str], directions: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    trials = study.get_trials(deepcopy=False)
    fig, axes = plt.subplots(len(names), 1, figsize=(6.4, 3.2 * len(names)), squeeze=False, constrained_layout=True)
    for i, (name, direction) in enumerate(zip(names, directions)):
        ax = axes[i][0]
        done = [(t.number, t.values[i]) for t in trials if t.state == TrialState.COMPLETE]
        pruned = [
            (t.number, t.value)
            for t in trials
            if t.state == TrialState.PRUNED and len(names) == 1 and t.value is not None
        ]
        if done:
            ax.scatter(*zip(*done), s=18, color="tab:blue", label="complete", zorder=3)
            xs, best, run = [], [], None
            for n, v in sorted(done):
                run = v if run is None else (max(run, v) if direction == "maximize" else min(run, v))
                xs.append(n)
                best.append(run)
            last = max(t.number for t in trials)
            ax.step([*xs, last], [*best, best[-1]], where="post", color="tab:red", label="best so far")
        if pruned:
            ax.scatter(*zip(*pruned), s=22, marker="x", color="tab:grey", label="pruned (last epoch)", zorder=3)
        if not done and not pruned:
            ax.text(0.5, 0.5, "no finished trials", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.legend(loc="best", fontsize="small")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("trial")
        ax.set_ylabel(f"{name} ({direction})")
    axes[0][0].set_title(f"Optimisation history of study {study.study_name!r}")
    with atomic.path(path) as tmp:  # a full disk never leaves half a file where the last one was
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def plot_importances(study: optuna.Study, names: list[str], path: Path) -> bool:
    """Bar chart of parameter importances (Optuna's default evaluator); False when there is too little
    to judge (fewer than two complete trials, or a single searched value)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per: list[tuple[str, dict[str, float]]] = []
    for i, name in enumerate(names):
        target = (lambda t, i=i: t.values[i]) if len(names) > 1 else None
        try:
            imp = optuna.importance.get_param_importances(study, target=target)
        except Exception as e:  # noqa: BLE001 - too few trials, a constant parameter, ...
            log.info(
                "no parameter importances for %s: %s", name, str(e).splitlines()[0] if str(e) else type(e).__name__
            )
            return False
        if not imp or not all(math.isfinite(v) for v in imp.values()):
            return False
        per.append((name, imp))
    fig, axes = plt.subplots(
        len(per),
        1,
        figsize=(6.4, 0.5 + 0.45 * max(len(i) for _, i in per) * len(per) + 1),
        squeeze=False,
        constrained_layout=True,
    )
    for ax, (name, imp) in zip(axes[:, 0], per):
        keys = list(imp)[::-1]
        ax.barh(keys, [imp[k] for k in keys], color="tab:green")
        ax.set_xlabel(f"importance for {name}")
    axes[0][0].set_title(f"Parameter importances, study {study.study_name!r}")
    with atomic.path(path) as tmp:  # a full disk never leaves half a file where the last one was
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return True


def _rerun_command(space, params: dict[str, Any]) -> str:
    fixed = [f for f in space.fixed if not f.lstrip("+~").startswith(("search=", "search@"))]
    words = [*fixed, *overrides(space, params)[len(space.fixed) :]]
    script = sys.argv[0] or "app.py"  # the app's entry script, as a path from here when it is below
    if not os.path.relpath(script).startswith(".."):
        script = os.path.relpath(script)
    return f"python {shlex.quote(script)} " + " ".join(shlex.quote(redact(w)) for w in words)


def report(
    study: optuna.Study,
    space,
    names: list[str],
    sweeper,
    cfg: DictConfig,
    hook,
    stop_reason: str | None,
    launched: int,
    failed: int,
) -> Path:
    folder = Path(str(cfg.hydra.sweep.dir))
    folder.mkdir(parents=True, exist_ok=True)
    results = results_dict(study, names, space, sweeper, stop_reason, launched, failed)
    path = folder / RESULTS
    atomic.write_text(path, yaml.safe_dump(results, sort_keys=False))
    files = [RESULTS]
    try:
        with atomic.path(folder / TRIALS_CSV) as tmp:
            study.trials_dataframe().to_csv(tmp, index=False)
        files.append(TRIALS_CSV)
    except Exception as e:  # noqa: BLE001
        log.warning("could not write %s: %s", TRIALS_CSV, e)
    try:
        plot_history(study, names, sweeper.directions, folder / HISTORY)
        files.append(HISTORY)
    except Exception as e:  # noqa: BLE001
        log.warning("could not plot the optimisation history: %s", e)
    if plot_importances(study, names, folder / IMPORTANCES):
        files.append(IMPORTANCES)

    counts = results["trials"]
    summary = (
        f"study {study.study_name!r}: {counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed"
    )
    metrics: dict[str, float] = {
        "study_complete": counts["COMPLETE"],
        "study_pruned": counts["PRUNED"],
        "study_failed": counts["FAIL"],
    }
    tags: dict[str, Any] = {
        "optuna_study": study.study_name,
        "optuna_storage": results["storage"],
        "optuna_sampler": sweeper.sampler_name,
        "optuna_pruner": sweeper.pruner_name,
    }
    lines = [f"Optuna {summary}"]
    if results.get("pareto_front"):
        front = results["pareto_front"]
        lines.append(
            f"Pareto front ({len(front)} trials; {', '.join(f'{n} {d}' for n, d in zip(names, sweeper.directions))}):"
        )
        for p in front:
            vals = " ".join(f"{k}={v:.6g}" for k, v in p["values"].items())
            prm = " ".join(f"{k}={format_value(v)}" for k, v in p["params"].items())
            lines.append(f"  trial {p['trial']}: {vals}  <-  {prm}")
        metrics["pareto_front_size"] = len(front)
        tags["pareto_trials"] = ",".join(str(p["trial"]) for p in front)
    elif results.get("best_params") is not None:
        lines.append(f"Best trial {results['best_trial']}: {names[0]}={results['best_value']:.6g}")
        lines.append(f"  best configuration: {results['best_overrides']}")
        lines.append(f"  run it alone: {_rerun_command(space, results['best_params'])}")
        metrics.update(
            {
                "best_value": results["best_value"],
                f"best_{names[0]}": results["best_value"],
                "best_trial": results["best_trial"],
            }
        )
        tags.update({"best_trial": results["best_trial"], "best_overrides": results["best_overrides"]})
        tags.update({f"best_{k}": v for k, v in results["best_params"].items()})
    else:
        lines.append("No trial completed, so there is no best configuration yet.")
    lines.append(f"Results: {path}")
    print("\n".join(lines), flush=True)
    hook.study_finished(folder, files, metrics, tags)
    return path
