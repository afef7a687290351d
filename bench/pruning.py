"""Pruning benchmark (not a test): is the pruner biased against dropout, and which defaults are not?

High dropout rates learn more slowly in the first epochs, so a pruner that compares trials early (the
median pruner on epoch-2 val_acc) may stop exactly the rates a user is studying. One invocation, all on the
same data, seed and epochs per trial, each phase a real `sweep/run.py -m` in a study of its own under
runs/bench_pruning/<time>/:

  curves   the learning curves of a few fixed points, no pruning (hydra.sweeper.sampler=grid):
           drop_prob in {0, 0.5} x input_drop_prob in {0, 0.2}. Is p = 0.5 behind early and level or
           ahead at the end?
  off      a TPE search (+search=dropout without its enqueued points, sampler seed fixed), no pruning
  old      the same search with the previous default: median, n_startup_trials=2, n_warmup_steps=2
  default  the same search with the pruner settings the sweeper ships (no pruner_args given)
  replay   no training: several pruners replayed on the `off` search's learning curves, trial by trial in
           the order they ran (batches of --jobs, as the sweeper tells a batch after it returns): which
           trials each would stop, and would it stop the trials that end best?

Every search prints its trials (rates, state, epochs trained, val_acc), the mean rates of pruned and
completed trials, the share of trials pruned among drop_prob >= 0.3 and < 0.3, the best configuration
among its COMPLETE trials and the epochs it trained (counted from the study: each job reports every epoch).

    .venv/bin/python bench/pruning.py                        # 16 trials x 12 epochs, 10,000 images
    .venv/bin/python bench/pruning.py --only curves,replay --out DIR   # reuse DIR's `off` search
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # import this checkout's sweep
from search import run_phase, trials  # noqa: E402 - bench/search.py: run one sweep, read a study's trials

from sweep.config import PROJECT_ROOT as ROOT  # noqa: E402
from sweep.search.choices import PRUNER_ARGS, build_pruner, default_warmup  # noqa: E402

CURVE_POINTS = ((0.0, 0.0), (0.5, 0.0), (0.5, 0.2))  # run as the grid {0, 0.5} x {0, 0.2}
HIGH = 0.3  # drop_prob >= HIGH counts as a high rate
PHASES = ("curves", "off", "old", "default", "replay")


def replay_candidates(epochs: int) -> dict[str, dict]:
    """Pruners to replay on the unpruned search's curves: name -> build_pruner description (or an Optuna
    PercentilePruner's keywords under "percentile")."""
    half, two_t, three_q = max(1, epochs // 2), max(1, (2 * epochs) // 3), max(1, (3 * epochs) // 4)
    return {
        "median 2 startup, warm-up 2 (old default)": {
            "name": "median",
            "args": {"n_startup_trials": 2, "n_warmup_steps": 2},
        },
        "median 5 startup, warm-up 2": {"name": "median", "args": {"n_startup_trials": 5, "n_warmup_steps": 2}},
        f"median 2 startup, warm-up {half} (E/2)": {
            "name": "median",
            "args": {"n_startup_trials": 2, "n_warmup_steps": half},
        },
        f"median 5 startup, warm-up {half} (E/2)": {
            "name": "median",
            "args": {"n_startup_trials": 5, "n_warmup_steps": half},
        },
        f"median 5 startup, warm-up {two_t} (2E/3)": {
            "name": "median",
            "args": {"n_startup_trials": 5, "n_warmup_steps": two_t},
        },
        f"median 2 startup, warm-up {three_q} (3E/4)": {
            "name": "median",
            "args": {"n_startup_trials": 2, "n_warmup_steps": three_q},
        },
        f"median 5 startup, warm-up {three_q} (3E/4)": {
            "name": "median",
            "args": {"n_startup_trials": 5, "n_warmup_steps": three_q},
        },
        f"25th percentile, 5 startup, warm-up {half}": {
            "percentile": {"percentile": 25.0, "n_startup_trials": 5, "n_warmup_steps": half}
        },
        "successive halving (min_resource 1)": {"name": "successive_halving", "args": {}},
        f"hyperband (min_resource 1, max {epochs})": {"name": "hyperband", "args": {"max_resource": epochs}},
        f"shipped default (warm-up {default_warmup(epochs)})": None,  # filled in main() from the plugin's config
    }


def common(args, out: Path) -> list[str]:
    return [
        f"trainer.epochs={args.epochs}",
        "trainer.progress=false",
        f"seed={args.seed}",
        f"data.train_subset={args.train_subset}",
        f"data.val_size={args.val_size}",
        f"data.train_eval_size={args.train_eval_size}",
        f"trainer.precision={args.precision}",
        "tracking.enabled=false",
        f"hydra.sweeper.storage=sqlite:///{out}/optuna.db",
        *(
            ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.jobs}", f"hydra.sweeper.n_jobs={args.jobs}"]
            if args.jobs > 1
            else []
        ),
    ]


def search_cmd(args, out: Path, study: str, pruner: list[str]) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "sweep" / "run.py"),
        "-m",
        *common(args, out),
        f"hydra.sweep.dir={out}/{study}",
        "+search=dropout",
        "hydra.sweeper.enqueue=[]",
        f"hydra.sweeper.study_name={study}",
        f"hydra.sweeper.n_trials={args.trials}",
        f"hydra.sweeper.sampler_args.n_startup_trials={args.tpe_startup}",
        *pruner,
    ]


def shipped_pruner() -> dict:
    """The pruner the sweeper builds when no pruner option is given (the plugin's config defaults)."""
    from dataclasses import asdict

    from hydra_plugins.dropout_optuna_sweeper.config import OptunaSweeperConf, PrunerArgs

    name = OptunaSweeperConf.pruner.name
    return {"name": name, "args": {k: v for k, v in asdict(PrunerArgs()).items() if k in PRUNER_ARGS[name]}}


# ------------------------------------------------------------------------------------------- figures
def rates(t) -> tuple[float, float]:
    return float(t.params.get("drop_prob", 0.0)), float(t.params.get("input_drop_prob", 0.0))


def summarise(rows: list[dict]) -> dict:
    """rows: {p, q, pruned, epochs, final} -> the bias figures."""
    pruned = [r for r in rows if r["pruned"]]
    kept = [r for r in rows if not r["pruned"]]
    high = [r for r in rows if r["p"] >= HIGH]
    low = [r for r in rows if r["p"] < HIGH]

    def mean(xs):
        return statistics.fmean(xs) if xs else float("nan")

    return {
        "trials": len(rows),
        "pruned": len(pruned),
        "mean_p_pruned": mean([r["p"] for r in pruned]),
        "mean_p_completed": mean([r["p"] for r in kept]),
        "mean_q_pruned": mean([r["q"] for r in pruned]),
        "mean_q_completed": mean([r["q"] for r in kept]),
        "high_pruned": sum(r["pruned"] for r in high),
        "high": len(high),
        "low_pruned": sum(r["pruned"] for r in low),
        "low": len(low),
        "epochs": sum(r["epochs"] for r in rows),
    }


def bias_line(s: dict) -> str:
    def share(k, n):
        return f"{k}/{n}" + (f" ({100 * k / n:.0f} %)" if n else "")

    return (
        f"pruned {s['pruned']}/{s['trials']}: drop_prob >= {HIGH}: {share(s['high_pruned'], s['high'])}, "
        f"< {HIGH}: {share(s['low_pruned'], s['low'])}; mean drop_prob pruned {s['mean_p_pruned']:.3f} vs "
        f"completed {s['mean_p_completed']:.3f}, input pruned {s['mean_q_pruned']:.3f} vs {s['mean_q_completed']:.3f}"
    )


def report_search(name: str, out: Path, info: dict) -> dict:
    ts = sorted((t for t in trials(out, name) if t.state.name in ("COMPLETE", "PRUNED")), key=lambda t: t.number)
    rows = []
    print(f"\n[{name}] {len(ts)} trials, {info.get('wall_s', float('nan')):.0f} s")
    for t in ts:
        p, q = rates(t)
        n = len(t.intermediate_values)
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else t.value
        rows.append(
            {
                "number": t.number,
                "p": p,
                "q": q,
                "pruned": t.state.name == "PRUNED",
                "epochs": n,
                "final": t.value if t.state.name == "COMPLETE" else None,
                "last": last,
            }
        )
        print(
            f"   trial {t.number:>2}: drop_prob {p:.3f} input {q:.3f}  {t.state.name:<8} {n:>2} epochs  "
            f"val_acc {100 * last:.2f} %"
        )
    s = summarise(rows)
    done = [r for r in rows if r["final"] is not None]
    best = max(done, key=lambda r: r["final"]) if done else None
    print(f"   {bias_line(s)}")
    if best:
        print(
            f"   best (COMPLETE): val_acc {100 * best['final']:.2f} % at drop_prob {best['p']:.3f} "
            f"input {best['q']:.3f} "
            f"(trial {best['number']}); {s['epochs']} epochs trained"
        )
    return {**s, "rows": rows, "best": best, "wall_s": info.get("wall_s")}


def curves(out: Path, epochs: int) -> dict:
    ts = sorted((t for t in trials(out, "curves") if t.state.name == "COMPLETE"), key=lambda t: rates(t))
    print("\n[curves] val_acc (%) per epoch, no pruning")
    print("   epoch " + "".join(f"  p={p:.1f},in={q:.1f}" for p, q in map(rates, ts)))
    table = {}
    for e in range(1, epochs + 1):
        vals = [t.intermediate_values.get(e) for t in ts]
        print(f"   {e:>5} " + "".join(f"  {100 * v:>12.2f}" if v is not None else f"  {'-':>12}" for v in vals))
    for t in ts:
        table[f"p={rates(t)[0]:g},in={rates(t)[1]:g}"] = [t.intermediate_values.get(e) for e in range(1, epochs + 1)]
    base = next((t for t in ts if rates(t) == (0.0, 0.0)), None)
    if base is not None:
        for t in ts:
            if t is base:
                continue
            v, b = t.intermediate_values, base.intermediate_values
            behind = [e for e in range(1, epochs + 1) if v[e] < b[e]]
            ahead_from = next(
                (e for e in range(1, epochs + 1) if all(v[k] >= b[k] for k in range(e, epochs + 1))), None
            )
            print(
                f"   p={rates(t)[0]:g},in={rates(t)[1]:g} behind p=0 at epochs {behind or 'none'}; level or ahead at "
                f"every epoch from {ahead_from if ahead_from else 'none'} on; final {100 * t.value:.2f} % vs "
                f"{100 * base.value:.2f} %"
            )
    return table


def replay(out: Path, epochs: int, jobs: int, shipped: dict) -> dict:
    """Each candidate pruner on the `off` search's curves, in the trials' order, in batches of `jobs`."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ts = sorted((t for t in trials(out, "off") if t.state.name == "COMPLETE"), key=lambda t: t.number)
    if not ts:
        sys.exit(f"replay needs the `off` search in {out}/optuna.db")
    finals = sorted((t.value for t in ts), reverse=True)
    top3 = {t.number for t in ts if t.value >= finals[min(2, len(finals) - 1)]}
    print(
        f"\n[replay] pruners on the `off` search's {len(ts)} curves (batches of {jobs}); top 3 by final val_acc: "
        + ", ".join(
            f"trial {t.number} (p {rates(t)[0]:.2f}, in {rates(t)[1]:.2f}, {100 * t.value:.2f} %)"
            for t in ts
            if t.number in top3
        )
    )
    results = {}
    for name, desc in replay_candidates(epochs).items():
        desc = desc or shipped
        if "percentile" in desc:
            pruner = optuna.pruners.PercentilePruner(**desc["percentile"])
        else:
            pruner = build_pruner(desc)
        study = optuna.create_study(
            direction="maximize", pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=0), study_name="replay"
        )  # hyperband draws its brackets from the name
        rows = []
        for i in range(0, len(ts), jobs):
            batch = [(t, study.ask()) for t in ts[i : i + jobs]]
            told = []
            for t, trial in batch:
                stop = None
                for e in range(1, epochs + 1):
                    trial.report(t.intermediate_values[e], e)
                    if e < epochs and trial.should_prune():
                        stop = e
                        break
                told.append((t, trial, stop))
            for t, trial, stop in told:
                if stop is None:
                    study.tell(trial, t.value)
                else:
                    study.tell(trial, state=TrialState.PRUNED)
                p, q = rates(t)
                rows.append(
                    {
                        "number": t.number,
                        "p": p,
                        "q": q,
                        "pruned": stop is not None,
                        "epochs": stop or epochs,
                        "final": t.value,
                    }
                )
        s = summarise(rows)
        lost = [r for r in rows if r["pruned"] and r["number"] in top3]
        kept = [r for r in rows if not r["pruned"]]
        best = max(kept, key=lambda r: r["final"])
        print(
            f"   {name}: {s['epochs']} epochs; {bias_line(s)}; top-3 trials pruned: {len(lost)}; "
            f"best kept {100 * best['final']:.2f} % (p {best['p']:.2f}, in {best['q']:.2f})"
        )
        results[name] = {
            **s,
            "top3_pruned": len(lost),
            "best_kept": best["final"],
            "pruned_trials": [r["number"] for r in rows if r["pruned"]],
        }
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=12, help="epochs per trial")
    ap.add_argument("--trials", type=int, default=16, help="finished trials per search")
    ap.add_argument("--tpe-startup", type=int, default=5, help="TPE's random trials before it models")
    ap.add_argument("--train-subset", type=int, default=10_000, help="training images")
    ap.add_argument("--val-size", type=int, default=5000)
    ap.add_argument("--train-eval-size", type=int, default=2000, help="images for the per-epoch train_* metrics")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--jobs", type=int, default=2, help="trials at once (joblib worker processes of 1 thread)")
    ap.add_argument("--seed", type=int, default=777, help="training seed (the sampler's seed is the sweeper's, 777)")
    ap.add_argument("--only", default=",".join(PHASES), help=f"comma-separated phases of {', '.join(PHASES)}")
    ap.add_argument("--out", type=Path, default=None, help="folder (default runs/bench_pruning/<time>)")
    args = ap.parse_args()
    phases = [p.strip() for p in args.only.split(",") if p.strip()]
    if unknown := set(phases) - set(PHASES):
        sys.exit(f"--only: unknown phase(s) {sorted(unknown)}; allowed: {', '.join(PHASES)}")

    out = (args.out or ROOT / "runs" / "bench_pruning" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    shipped = shipped_pruner()
    if shipped["name"] == "median" and shipped["args"].get("n_warmup_steps") is None:
        shipped["args"]["n_warmup_steps"] = default_warmup(args.epochs)  # as the sweeper derives it (hook: epochs)
    load0, t0 = os.getloadavg(), time.time()
    figures: dict = {
        "settings": {
            k: getattr(args, k)
            for k in ("epochs", "trials", "tpe_startup", "train_subset", "val_size", "precision", "jobs", "seed")
        },
        "shipped_pruner": shipped,
    }
    pruners = {
        "off": ["hydra.sweeper.pruner=none"],
        "old": [
            "hydra.sweeper.pruner=median",
            "hydra.sweeper.pruner_args.n_startup_trials=2",
            "hydra.sweeper.pruner_args.n_warmup_steps=2",
        ],
        "default": [],
    }
    if "curves" in phases:  # the grid of drop_prob x input_drop_prob over CURVE_POINTS' values
        ps = ",".join(sorted({f"{p:g}" for p, _ in CURVE_POINTS}))
        qs = ",".join(sorted({f"{q:g}" for _, q in CURVE_POINTS}))
        grid = [
            sys.executable,
            str(ROOT / "sweep" / "run.py"),
            "-m",
            *common(args, out),
            f"hydra.sweep.dir={out}/curves",
            "hydra/sweeper=optuna",
            "hydra.sweeper.study_name=curves",
            "hydra.sweeper.sampler=grid",
            "hydra.sweeper.pruner=none",
            f"drop_prob=choice({ps})",
            f"input_drop_prob=choice({qs})",
        ]
        figures["curves_wall_s"] = run_phase("curves", grid, out, "curves", None)["wall_s"]
    for name in ("off", "old", "default"):
        if name in phases:
            if trials(out, name):
                sys.exit(f"study {name!r} already exists in {out}/optuna.db; choose another --out")
            figures[f"{name}_info"] = run_phase(name, search_cmd(args, out, name, pruners[name]), out, name, None)
    load1 = os.getloadavg()

    print(
        f"\nbench/pruning.py -- MNIST, {args.train_subset} training images, val {args.val_size}, "
        f"{args.epochs} epochs per trial, {args.precision}, {args.jobs} trials at once, "
        f"TPE ({args.tpe_startup} random first, seed 777) over "
        f"+search=dropout without enqueue, {args.trials} trials per search; {platform.machine()} x{os.cpu_count()}; "
        f"load average {load0[0]:.1f} at start, {load1[0]:.1f} at end; {time.time() - t0:.0f} s; {out}"
    )
    print(
        f"shipped pruner: {shipped['name']} {json.dumps({k: v for k, v in shipped['args'].items() if v is not None})}"
    )
    if "curves" in phases or trials(out, "curves"):
        figures["curves"] = curves(out, args.epochs)
    for name in ("off", "old", "default"):
        if trials(out, name):
            figures[name] = report_search(name, out, figures.get(f"{name}_info", {}))
    if "replay" in phases:
        figures["replay"] = replay(out, args.epochs, args.jobs, shipped)
    (out / "figures.json").write_text(json.dumps(figures, indent=2, default=str))
    print(f"\nfigures: {out / 'figures.json'}")


if __name__ == "__main__":
    main()
