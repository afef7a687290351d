"""The study sweeper (`hydra/sweeper=study`): an exploratory phase, a design fixed from it, then a confirmatory
phase on fresh replicates whose verdicts are the headline.

    python sweep/run.py -m +experiment=overfit        (the presets choose this sweeper; any grid can:
    python sweep/run.py -m hydra/sweeper=study drop_prob=0,0.5 data.train_subset=2000 data.resample=subset)

1. Exploratory: every setting of the grid (`hydra.sweeper.params` and the command line's sweep overrides, as
   Hydra's basic sweeper expands them) at replicates seed = 1 .. study.exploratory.
2. The design, computed from the exploratory runs in the MLflow store (sweep.analysis) before any confirmatory
   job starts, and then fixed: which settings go on (study.confirm: all of them, or the best with dropout by
   validation accuracy and its baseline), and how many replicates the confirmatory phase gets: the fewest that
   give study.power at each headline metric's smallest effect of interest (study.metrics,
   study.smallest_effect) for the comparison with the widest paired spread, at Holm's hardest step (alpha over
   the number of comparisons per metric), capped at study.max_replicates (the cap and the design's detectable
   effect are printed when it binds); study.confirmatory fixes the number instead.
3. Confirmatory: the chosen settings at fresh replicates seed = study.first_confirmatory_seed, +1, ...: new
   training randomness and, with data.resample=subset|split, new data subsets.
Every job carries `study.phase`, so the analysis keeps the phases apart; the parent run's summary shows both,
the plan, the confirmatory verdicts and whether the phases agree.

The plan is written into the sweep folder (study_plan.json, logged onto the parent run) and, for a sweep with a
`tracking.sweep_id`, onto the parent run as the tag `study_plan`: a rerun of the same command reuses every
finished job (grid resume) and the plan already fixed, never a new one computed from re-run jobs. A job that
fails stops the sweep after its phase, as Hydra's basic sweeper does; rerunning the command resumes it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from sweep import protocol as P

log = logging.getLogger("sweep")
PLAN_TAG = "study_plan"
REPLICATE_KEY = "seed"


class StudyError(ValueError):
    """A study that cannot go on as asked; the message is the whole story."""


def override_value(value: Any) -> str:
    """A config value as an override's right-hand side: null, true/false, numbers and strings as written."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    return str(value)


def grid(
    params: dict[str, Any] | None, arguments: list[str], settings: list[dict[str, Any]] | None = None
) -> list[list[str]]:
    """The settings of a study as override lists. `params` (a config's hydra.sweeper.params) and the command
    line's overrides expand as Hydra's basic sweeper expands them, the command line winning per key: sweep
    overrides (a,b / range / choice) multiply, plain ones go to every setting. `settings` (a list of {key:
    value}) adds settings that are no grid: each entry is combined with every point of that grid, and a key
    the command line sets keeps the command line's value."""
    parser = OverridesParser.create()
    lines = [f"{k}={v}" for k, v in (params or {}).items()]
    given = parser.parse_overrides(arguments)
    keys = {o.key_or_group for o in given}
    overrides = [o for o in parser.parse_overrides(lines) if o.key_or_group not in keys] + list(given)
    for o in overrides:
        if o.key_or_group == REPLICATE_KEY:
            raise StudyError(
                f"{o.input_line} is invalid under hydra/sweeper=study: the study draws its replicates "
                f"itself (seed=1..study.exploratory, then study.first_confirmatory_seed, +1, ...); "
                "drop the seed override"
            )
    axes = [
        [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override() else [o.input_line]
        for o in overrides
    ]
    points = [list(combo) for combo in itertools.product(*axes)]
    if not settings:
        return points
    for entry in settings:
        if REPLICATE_KEY in entry:
            raise StudyError(
                f"hydra.sweeper.settings: {REPLICATE_KEY} is the replicate index the study draws itself; "
                "drop it from the settings"
            )
    extra = [[f"{k}={override_value(v)}" for k, v in entry.items() if k not in keys] for entry in settings]
    return [[*point, *more] for more in extra for point in points]


def jobs(settings: list[list[str]], seeds: list[int], phase: str) -> list[list[str]]:
    """One job per (replicate, setting), replicate-major: a phase stopped half-way leaves whole replicates."""
    return [[*s, f"{REPLICATE_KEY}={seed}", f"{P.PHASE_PARAM}={phase}"] for seed in seeds for s in settings]


def _same(overrides: str | None, setting: list[str]) -> bool:
    """Whether a run's `overrides` tag (the job's own overrides, space-separated) is this setting's job."""
    if not overrides:
        return False
    mine = {o for o in overrides.split() if not o.startswith((f"{REPLICATE_KEY}=", f"{P.PHASE_PARAM}="))}
    return mine == set(setting)


def design(exp, settings: list[list[str]], study: DictConfig) -> dict[str, Any]:
    """The confirmatory phase's design from the exploratory runs `exp` (an analysis frame of that phase):
    which settings go on, the comparisons, the number of replicates and why, as a JSON-able plan."""
    # pandas and MLflow load when the study runs, not when Hydra discovers the plugin
    from sweep import analysis as A
    from sweep.analysis import stats as S

    proto = A.Protocol(
        alpha=study.alpha, power=study.power, smallest_effect=dict(study.smallest_effect), metrics=tuple(study.metrics)
    )
    done = S.completed(exp)
    lines: list[str] = []
    chosen = list(settings)
    baselines = S.find_baselines(exp) if len(done) else {}
    if study.confirm == "best":
        ranked = S.rank(exp, "val_acc", alpha=proto.alpha, smallest_effect=proto.smallest_effect)
        ranked = ranked[ranked["ranked"].astype(bool) & ranked["setting"].isin(baselines)]
        if ranked.empty:
            raise StudyError(
                "study.confirm=best needs a setting with dropout and its baseline (every rate 0, all "
                f"else equal), each with {S.MIN_SEEDS} exploratory replicates; the exploratory phase has "
                "none"
            )
        top = ranked["setting"].iloc[0]
        keep = {top, baselines[top]}
        runs = exp[exp[S.SETTING].isin(keep)]
        chosen = [s for s in settings if any(_same(o, s) for o in runs["overrides"])]
        label = ranked["label"].iloc[0]
        lines.append(
            f"Chosen on validation accuracy (study.confirm=best): {label} "
            f"({100 * ranked['mean'].iloc[0]:.2f} % over {int(ranked['seeds'].iloc[0])} replicates), "
            f"confirmed against its baseline."
        )
        exp = exp[exp[S.SETTING].isin(keep)]
    comparisons = A.paired_comparisons(exp, proto, proto.metrics)
    fam = comparisons.groupby("metric")["setting"].nunique() if len(comparisons) else {}
    worst: dict[str, Any] = {}
    needed: list[int | None] = []
    for metric in proto.metrics:
        rows = comparisons[(comparisons["metric"] == metric) & comparisons["sd_diff"].notna()]
        k = int(fam.get(metric, 0)) if len(comparisons) else 0
        margin = S.margin_of(metric, proto.smallest_effect)
        if rows.empty or k == 0 or margin is None:
            continue
        r = rows.loc[rows["sd_diff"].idxmax()]
        level = proto.alpha / k
        n = S.replicates_for(margin, float(r["sd_diff"]), level, proto.power, cap=10_000)
        needed.append(n)
        worst[metric] = {
            "sd": float(r["sd_diff"]),
            "label": r["label"],
            "comparisons": k,
            "level": level,
            "needed": n,
            "margin": margin,
        }
    if study.confirmatory is not None:
        n, why = int(study.confirmatory), "fixed by study.confirmatory"
    elif not worst:
        n, why = int(study.max_replicates), "no paired spread to design from: study.max_replicates"
    else:
        most = None if any(x is None for x in needed) else max(needed)
        n = int(study.max_replicates) if most is None or most > study.max_replicates else max(most, S.MIN_SEEDS)
        why = (
            "designed"
            if most is not None and most <= study.max_replicates
            else f"capped at study.max_replicates={study.max_replicates}"
        )
    for metric, w in worst.items():
        words, scale, unit = S.METRIC_TEXT.get(metric, (metric, 1.0, ""))
        w["mde"] = S.detectable_effect(w["sd"], n, w["level"], proto.power)
        lines.append(
            f"{words}: widest paired spread sd={w['sd'] * scale:.3g} {unit} ({w['label']}); "
            f"{proto.power:.0%} power at {S.margin_text(w['margin'], metric)} with {w['comparisons']} "
            f"comparison{'s' if w['comparisons'] != 1 else ''} (Holm's hardest step, alpha "
            f"{w['level']:.3g}) needs {w['needed'] if w['needed'] is not None else 'over 10,000'} "
            f"replicates; with {n} it detects {w['mde'] * scale:.2f} {unit}."
        )
    seeds = list(range(int(study.first_confirmatory_seed), int(study.first_confirmatory_seed) + n))
    lines.append(
        f"Confirmatory phase: {len(chosen)} settings x {n} fresh replicates ({why}), seeds "
        f"{seeds[0]}-{seeds[-1]}; smallest effects of interest: "
        + ", ".join(f"{m} ±{proto.smallest_effect[m]:g}" for m in proto.metrics if m in proto.smallest_effect)
        + f"; alpha {proto.alpha:g} per metric (Holm)."
    )
    return {
        "settings": chosen,
        "replicates": n,
        "seeds": [seeds[0], seeds[-1]],
        "why": why,
        "worst": worst,
        "lines": lines,
    }


def _canonical(settings: list[list[str]]) -> list[list[str]]:
    """The grid's settings in one order whatever the order they were given in: each sorted, then all sorted."""
    return sorted(sorted(s) for s in settings)


def grid_id(settings: list[list[str]]) -> str:
    """A short, order-free name of a grid's settings: a plan is reused only for the grid it was made for."""
    return hashlib.sha256(json.dumps(_canonical(settings)).encode()).hexdigest()[:16]


def plan_tag(plan: dict[str, Any], settings: list[list[str]]) -> str:
    """The plan as the parent's `study_plan` tag: short (MLflow caps tags), settings as positions in the grid's
    canonical order."""
    order = _canonical(settings)
    return json.dumps(
        {
            "grid": grid_id(settings),
            "chosen": [order.index(sorted(s)) for s in plan["settings"]],
            "replicates": plan["replicates"],
            "seeds": plan["seeds"],
            "why": plan["why"],
            "lines": plan["lines"],
        }
    )


def frozen(tag: str | None, settings: list[list[str]]) -> dict[str, Any] | None:
    """The plan an earlier run of this study fixed (the parent's `study_plan` tag), or None; refused when the
    grid has changed since (a changed study is a new study: a new tracking.sweep_id)."""
    if not tag:
        return None
    plan = json.loads(tag)
    if plan.get("grid") != grid_id(settings):
        raise StudyError(
            "this study's plan was fixed for another grid; a changed study is a new study: use "
            "another tracking.sweep_id"
        )
    by_key = {tuple(sorted(s)): s for s in settings}
    order = _canonical(settings)
    return {
        **plan,
        "settings": [by_key[tuple(order[i])] for i in plan["chosen"]],
        "lines": ["(fixed by an earlier run of this study; reused)", *plan["lines"]],
    }


class StudySweeperImpl:
    """What `hydra_plugins.dropout_study_sweeper.StudySweeper` does (module docstring)."""

    def __init__(self, params: dict[str, Any] | None = None, settings: list[dict[str, Any]] | None = None) -> None:
        self.params = params or {}
        self.settings = settings or []
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: list[str]) -> list[Any]:
        # pandas and MLflow load when the study runs, not when Hydra discovers the plugin
        from sweep import record

        cfg = self.config
        study = cfg.study
        if not cfg.tracking.enabled:
            raise StudyError(
                "hydra/sweeper=study reads its exploratory phase from the MLflow store: set tracking.enabled=true"
            )
        settings = grid(
            OmegaConf.to_container(OmegaConf.create(self.params), resolve=False),
            arguments,
            OmegaConf.to_container(OmegaConf.create(self.settings), resolve=False),
        )
        sweep_dir = Path(str(cfg.hydra.sweep.dir))
        parent_id, _ = record.find_parent(sweep_dir)
        client = record.open_store(cfg.tracking.uri)
        explored = jobs(settings, list(range(1, int(study.exploratory) + 1)), P.EXPLORATORY)
        _say(
            f"Study: {len(settings)} settings; exploratory phase: {len(explored)} jobs "
            f"(replicates 1-{study.exploratory})."
        )
        first = self._launch(explored, 0)
        plan = frozen(client.get_run(parent_id).data.tags.get(PLAN_TAG) if parent_id else None, settings)
        if plan is None:
            # pandas and MLflow load when the study runs, not when Hydra discovers the plugin
            from sweep import analysis as A

            exp = A.phase_frames(A.children_frame(client, parent_id)).get(P.EXPLORATORY) if parent_id else None
            if exp is None:
                raise StudyError("no exploratory run reached the MLflow store: nothing to design from")
            plan = design(exp, settings, study)
            if cfg.tracking.sweep_id and parent_id:
                record.set_tags(client, parent_id, {PLAN_TAG: plan_tag(plan, settings)})
        (sweep_dir / P.PLAN_ARTIFACT).write_text(json.dumps(plan, indent=1, default=str))
        _say("The plan, fixed before the confirmatory phase:\n  " + "\n  ".join(plan["lines"]))
        lo, hi = plan["seeds"]
        confirmed = jobs(plan["settings"], list(range(lo, hi + 1)), P.CONFIRMATORY)
        second = self._launch(confirmed, len(explored))
        return [first, second]

    def _launch(self, batch: list[list[str]], start: int) -> list[Any]:
        returns = list(self.launcher.launch(batch, initial_job_idx=start))
        for r in returns:  # as Hydra's basic sweeper: a failed job re-raises its error once its batch is done
            r.return_value
        return returns


def _say(text: str) -> None:
    print(text, flush=True)
    log.debug(text)
