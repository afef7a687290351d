"""Speed of a study (benchmark, not a test): which launcher set-up runs the study presets fastest?

One invocation runs the same few points of the `overfit` preset under each candidate set-up, one after
another, each as a real `python sweep/run.py -m` with its own throw-away MLflow store:

  basic_fp32    Hydra's basic launcher: one process, jobs one after another, trainer.threads=2
  basic_bf16    the same with trainer.precision=bf16
  joblib_fp32   hydra/launcher=joblib, 2 worker processes (hydra.launcher.n_jobs=2), trainer.threads=1 each
  joblib_bf16   the same with trainer.precision=bf16

and prints, per candidate, the wall time per run (command wall / runs), the CPU seconds per run, the ratio
to basic_fp32, and the projected wall time of the whole `overfit` and `datasize` studies at their replicate
cap: every setting of the preset (hydra/sweeper=study: its `hydra.sweeper.params` and `settings`) at
`study.exploratory` + `study.max_replicates` replicates, the most its design can ask for. The candidates run
with Hydra's basic sweeper (a plain grid of the points): this measures launchers, not the study's protocol.

The projection: from the child runs' MLflow records, the command's wall time is split into start-up
(wall minus the span of the runs: imports, pre-flight, parent run, workers) and runs; each run into its
`train_seconds` (training + evaluation, the latter its `eval_seconds`) and the rest (data loading, MLflow).
Training time is taken as proportional to training image passes (epochs x 3 x training images, a backward
pass costing about two forward passes), evaluation time to the images evaluated (every evaluated epoch's
train_* subset, validation and test), and runs overlap as much as they did here (runs' busy time / their
span). So a bench with `--epochs 10` projects the presets' own epochs; the further from them, the rougher.
The evaluation share printed beside each projection is the issue's budget: at most a quarter of a study.

    .venv/bin/python bench/study.py                        # 2 runs per candidate, the preset's 60 epochs
    .venv/bin/python bench/study.py --epochs 10 --only basic_fp32,joblib_fp32
    .venv/bin/python bench/study.py --measured sqlite:///runs/mlflow.db   # the studies as they actually ran
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # import this checkout's sweep, models, data
from sweep.config import PROJECT_ROOT as ROOT  # noqa: E402

CANDIDATES = {
    "basic_fp32": ["hydra/launcher=basic", "trainer.threads=2", "trainer.precision=fp32"],
    "basic_bf16": ["hydra/launcher=basic", "trainer.threads=2", "trainer.precision=bf16"],
    "joblib_fp32": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "trainer.threads=1", "trainer.precision=fp32"],
    "joblib_bf16": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "trainer.threads=1", "trainer.precision=bf16"],
}
STUDIES = ("overfit", "datasize")
TEST_IMAGES = {"mnist": 10_000, "fashion_mnist": 10_000}
TRAIN_IMAGES = {"mnist": 60_000, "fashion_mnist": 60_000}


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def study_points(name: str) -> list:
    """Every run of a study preset at its replicate cap, as composed configs: each setting of its grid
    (sweep.study.grid over hydra.sweeper.params and settings) once per replicate, study.exploratory +
    study.max_replicates of them (the replicates share a config but for the seed, so one config stands for each)."""
    from omegaconf import OmegaConf

    from sweep.study import grid

    base = _compose([f"+experiment={name}"])
    sweeper = base.hydra.sweeper
    params, settings = (
        OmegaConf.to_container(sweeper[k]) if sweeper.get(k) is not None else None for k in ("params", "settings")
    )
    replicates = base.study.exploratory + base.study.max_replicates
    configs = [_compose([f"+experiment={name}", *point]) for point in grid(params, [], settings)]
    return [c for c in configs for _ in range(replicates)]


def image_passes(cfg) -> tuple[float, float]:
    """(training, evaluation) image passes of one run: 3 x training images per epoch (a backward pass costing
    about two forward passes); per evaluated epoch (every trainer.eval_every-th and the last) the train_*
    subset, validation and test (the last epoch: all training images)."""
    from sweep.training.train import eval_epochs

    n_train = TRAIN_IMAGES[cfg.data.name] - cfg.data.val_size
    if cfg.data.train_subset is not None:
        n_train = cfg.data.train_subset
    held_out = cfg.data.val_size + TEST_IMAGES[cfg.data.name]
    n_eval = len(eval_epochs(cfg.trainer.epochs, cfg.trainer.eval_every))
    evaluated = (n_eval - 1) * (min(cfg.data.train_eval_size, n_train) + held_out) + n_train + held_out
    return cfg.trainer.epochs * 3 * n_train, evaluated


def time_candidate(name: str, points: list[str], extra: list[str], out: Path) -> dict:
    """Run the points under one set-up; wall, CPU and the child runs' timings."""
    from mlflow.tracking import MlflowClient

    out.mkdir(parents=True)
    args = [
        sys.executable,
        str(ROOT / "sweep" / "run.py"),
        "-m",
        "+experiment=overfit",
        "hydra/sweeper=basic",
        *points,
        *CANDIDATES[name],
        "trainer.progress=false",
        f"tracking.uri=sqlite:///{out}/mlflow.db",
        f"tracking.artifact_location={out}/mlartifacts",
        f"hydra.sweep.dir={out}/sweep",
        *extra,
    ]
    before, load0 = resource.getrusage(resource.RUSAGE_CHILDREN), os.getloadavg()[0]
    t0 = time.time()
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    client = MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow.db")
    exp = client.get_experiment_by_name("dropout")
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("sweep_role") != "parent"]
    starts = [r.info.start_time / 1000 for r in runs]
    ends = [r.info.end_time / 1000 for r in runs]
    return {
        "wall": wall,
        "runs": len(runs),
        "cpu": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "span": max(ends) - min(starts),
        "busy": sum(e - s for s, e in zip(starts, ends)),
        "train": sum(r.data.metrics["train_seconds"] for r in runs),
        "eval": sum(r.data.metrics["eval_seconds"] for r in runs),  # the last epoch's: the run's total
        "test_acc": [round(r.data.metrics["test_acc"], 4) for r in runs],
        "load": (load0, os.getloadavg()[0]),
    }


def project(t: dict, bench_cfg, study: list) -> tuple[float, float]:
    """Projected wall seconds of a whole study, and the share of its runs' time spent evaluating, from one
    candidate's timings (see the module docstring)."""
    n = t["runs"]
    fit_passes, eval_images = image_passes(bench_cfg)
    per_fit = (t["train"] - t["eval"]) / n / fit_passes  # seconds per training image pass
    per_eval = t["eval"] / n / eval_images  # seconds per evaluated image
    rest = (t["busy"] - t["train"]) / n
    overlap = t["busy"] / t["span"]
    startup = t["wall"] - t["span"]
    costs = [(per_fit * f, per_eval * e) for f, e in map(image_passes, study)]
    busy = sum(rest + f + e for f, e in costs)
    return startup + busy / overlap, sum(e for _, e in costs) / busy


def measured(uri: str) -> int:
    """The studies as they ran: each study's wall time while its runs ran (gaps between parts left out; start-up
    before the first run is not included), its runs and the share of their time spent evaluating
    (eval_seconds / run duration)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("dropout")
    print(
        "| study | runs | wall while runs ran | evaluation share of the runs' time | CPUs |\n"
        "| --- | --- | --- | --- | --- |"
    )
    sweep_ids = sorted(
        {
            r.data.tags.get("sweep_id")
            for r in client.search_runs([exp.experiment_id], "tags.sweep_role = 'parent'")
            if r.data.tags.get("sweep_id")
        }
    )
    for sweep_id in sweep_ids:
        runs = [
            r
            for r in client.search_runs([exp.experiment_id], f"tags.sweep_id = '{sweep_id}'")
            if r.data.tags.get("sweep_role") != "parent" and r.info.status == "FINISHED"
        ]
        if not runs:
            continue
        span, end = 0.0, None  # wall time while at least one run ran (a study made in parts has gaps)
        for start, stop in sorted((r.info.start_time / 1000, r.info.end_time / 1000) for r in runs):
            span += max(0.0, stop - max(start, end if end is not None else start))
            end = stop if end is None else max(end, stop)
        busy = sum(r.info.end_time - r.info.start_time for r in runs) / 1000
        share = sum(r.data.metrics.get("eval_seconds", float("nan")) for r in runs) / busy
        print(f"| {sweep_id} | {len(runs)} | {span / 60:.1f} min | {share:.1%} | {os.cpu_count()} |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--runs", type=int, default=2, help="overfit points per candidate (default 2: p=0 and p=0.5, seed 1)"
    )
    ap.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the preset's)")
    ap.add_argument("--only", default=",".join(CANDIDATES), help="comma-separated candidates")
    ap.add_argument(
        "--measured",
        metavar="URI",
        help="print the studies recorded in this MLflow store instead "
        "(e.g. sqlite:///runs/mlflow.db after make study-overfit study-datasize)",
    )
    ap.add_argument("extra", nargs="*", help="more overrides for every run (e.g. data.root=...)")
    a = ap.parse_args()
    if a.measured:
        return measured(a.measured)
    names = a.only.split(",")
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        ap.error(f"--only {','.join(unknown)}: allowed: {', '.join(CANDIDATES)}")
    rates = [f"{x:g}" for x in (0.0, 0.5, 0.2, 0.1, 0.3, 0.4, 0.6, 0.7)][: a.runs]
    if len(rates) < a.runs:
        ap.error("--runs: at most 8")
    points = [f"drop_prob={','.join(rates)}", "input_drop_prob=0", "seed=1"]
    extra = list(a.extra) + ([f"trainer.epochs={a.epochs}"] if a.epochs else [])
    bench_cfg = _compose(["+experiment=overfit", *extra])
    studies = {s: study_points(s) for s in STUDIES}
    print(
        f"bench/study.py: {a.runs} overfit runs per candidate ({', '.join(points)}), "
        f"{bench_cfg.trainer.epochs} epochs, {os.cpu_count()} CPUs; load average before: "
        + " ".join(f"{x:.2f}" for x in os.getloadavg()),
        flush=True,
    )
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_study_") as tmp:
        for name in names:
            results[name] = t = time_candidate(name, points, extra, Path(tmp) / name)
            print(
                f"  {name:<12} wall {t['wall']:7.1f} s  runs {t['runs']}  CPU {t['cpu']:7.1f} s  "
                f"load {t['load'][0]:.1f}->{t['load'][1]:.1f}  test_acc {t['test_acc']}",
                flush=True,
            )
    base = results.get("basic_fp32")
    print(
        f"\n| set-up | s/run (wall) | CPU s/run | wall ratio to basic_fp32 | evaluation share (these runs) | "
        f"projected overfit at its cap ({len(studies['overfit'])} runs, evaluation share) | "
        f"projected datasize at its cap ({len(studies['datasize'])} runs, evaluation share) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, t in results.items():
        per_run = t["wall"] / t["runs"]
        ratio = f"{per_run / (base['wall'] / base['runs']):.2f}" if base else "-"
        proj = {s: project(t, bench_cfg, cfgs) for s, cfgs in studies.items()}
        cells = " | ".join(f"{w / 60:.1f} min ({e:.0%})" for w, e in proj.values())
        print(
            f"| {name} | {per_run:.1f} | {t['cpu'] / t['runs']:.1f} | {ratio} | "
            f"{t['eval'] / t['train']:.0%} | {cells} |"
        )
    # the studies, not these few runs, are what a launcher is chosen for: a pool's start-up weighs on 2 runs
    best = min(results, key=lambda n: sum(project(results[n], bench_cfg, cfgs)[0] for cfgs in studies.values()))
    print(
        f"\nfastest for the studies (projected overfit + datasize): {best}; load average after: "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
