"""Per-trial benchmark (not a test): whole processes, the lab's script against `python sweep/run.py`, in one run.

Each variant is one process from start to exit, timed from the outside, as a user would run it:

  lab   bench/lab.py: the lab's script (torchvision MNIST + DataLoader, its model and loop) and its test accuracy.
  fp32  python sweep/run.py +experiment=lab trainer.epochs=N   (all 60,000 training images like the lab, per-epoch
        evaluation, MLflow tracking on into a temporary store)
  bf16  the same with trainer.precision=bf16
  blas  fp32 with trainer.cpu_matmul=blas: torch's own fp32 products (MKL) instead of oneDNN (models/linear.py),
        for information (not a default; --only lab,fp32,bf16,blas)

All at the default thread count (nothing is set). The runs are interleaved (lab, fp32, bf16, then bf16, fp32, lab,
...) and repeated, so a busy spell on a shared machine hits every variant alike; the ratios compare each variant's
total wall time with the lab's. The load average is printed before and after every run.

    .venv/bin/python bench/trial.py --epochs 10 --repeats 2 --json /tmp/trial.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the overrides each of our variants adds to `+experiment=lab trainer.epochs=N`
OURS = {
    "fp32": ["trainer.precision=fp32"],
    "bf16": ["trainer.precision=bf16"],
    "blas": ["trainer.precision=fp32", "trainer.cpu_matmul=blas"],
}
TARGETS = {"fp32": 0.55, "bf16": 0.40}  # max (variant wall s) / (lab wall s), whole process
BF16_ACC_TOL = 0.2  # percentage points of test accuracy, |bf16 - fp32|
LAB_ACC = re.compile(r"^Accuracy: ([0-9.]+)", re.M)
OURS_ACC = re.compile(r"epoch (\d+)/\1 .*?test_acc ([0-9.]+)")  # the last epoch's log line


def command(variant: str, args, store: Path, i: int) -> list[str]:
    if variant == "lab":
        return [sys.executable, str(ROOT / "bench" / "lab.py"), "--epochs", str(args.epochs), "--root", str(args.root)]
    return [
        sys.executable,
        str(ROOT / "sweep" / "run.py"),
        "+experiment=lab",
        f"trainer.epochs={args.epochs}",
        *OURS[variant],
        f"data.root={args.root}",
        "trainer.progress=false",
        f"tracking.uri=sqlite:///{store}/mlflow.db",
        f"tracking.artifact_location={store}/mlartifacts",
        f"hydra.run.dir={store}/run/{variant}-{i}",
    ]


def run_one(variant: str, args, store: Path, i: int) -> dict:
    cmd = command(variant, args, store, i)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    out = p.stdout + p.stderr
    m = LAB_ACC.findall(out) if variant == "lab" else [a for _, a in OURS_ACC.findall(out)]
    res = {
        "variant": variant,
        "round": i,
        "wall_s": wall,
        "rc": p.returncode,
        "load_before": load0,
        "load_after": os.getloadavg()[0],
        "test_acc": float(m[-1]) if m else None,
    }
    if p.returncode != 0 or res["test_acc"] is None:
        res["error"] = out[-2000:]
    print(
        f"  round {i} {variant:<4}  {wall:7.1f} s  test acc {res['test_acc']}  load {load0:.1f} -> "
        f"{res['load_after']:.1f}{'  FAILED rc=' + str(p.returncode) if 'error' in res else ''}",
        flush=True,
    )
    return res


def make_store(store: Path) -> None:
    """Create the MLflow store's tables before any timed run: a user's store exists after their first run."""
    import mlflow

    mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db").search_experiments()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2, help="rounds of all variants (default 2)")
    p.add_argument("--only", default="lab,fp32,bf16", help="comma-separated subset of lab,fp32,bf16,blas")
    p.add_argument("--root", default=str(ROOT / "data" / "files"), help="dataset root holding MNIST/raw")
    p.add_argument("--json", default=None, metavar="PATH", help="also write every run's figures here")
    args = p.parse_args(argv)
    variants = [v.strip() for v in args.only.split(",") if v.strip()]
    if bad := [v for v in variants if v != "lab" and v not in OURS]:
        p.error(f"--only: unknown variant(s) {bad}; choose from lab, {', '.join(OURS)}")
    if not (Path(args.root) / "MNIST" / "raw").is_dir():
        p.error(f"no MNIST/raw under {args.root}; fetch it first (python -m data fetch mnist) or pass --root")

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-trial-") as tmp:
        store = Path(tmp)
        make_store(store)
        print(
            f"{args.epochs} epochs, {args.repeats} rounds, {os.cpu_count()} CPUs, default threads, "
            f"load average {os.getloadavg()[0]:.2f}; store {store}",
            flush=True,
        )
        for i in range(args.repeats):
            for v in variants if i % 2 == 0 else variants[::-1]:
                results.append(run_one(v, args, store, i))
                if args.json:
                    Path(args.json).write_text(json.dumps({"runs": results}, indent=2))

    ok = [r for r in results if "error" not in r]
    mean = {
        v: sum(r["wall_s"] for r in ok if r["variant"] == v) / max(1, sum(r["variant"] == v for r in ok))
        for v in variants
    }
    acc = {v: [r["test_acc"] for r in ok if r["variant"] == v] for v in variants}
    loads = [x for r in results for x in (r["load_before"], r["load_after"])]
    print(
        f"\nload average over the runs: {min(loads):.1f}-{max(loads):.1f} (mean {sum(loads) / len(loads):.1f}) "
        f"on {os.cpu_count()} CPUs"
    )
    verdicts = {}
    for v in variants:
        line = f"{v:<4} mean {mean[v]:7.1f} s  test acc {acc[v]}"
        if v != "lab" and "lab" in mean and mean["lab"] > 0:
            ratio = mean[v] / mean["lab"]
            rounds = [
                a["wall_s"] / b["wall_s"]
                for a in ok
                for b in ok
                if a["variant"] == v and b["variant"] == "lab" and a["round"] == b["round"]
            ]
            line += f"  / lab = {ratio:.3f} (rounds: {', '.join(f'{x:.3f}' for x in rounds)}"
            verdicts[v] = {"ratio": ratio, "round_ratios": rounds}
            if v in TARGETS:
                passed = ratio <= TARGETS[v]
                line += f"; target <= {TARGETS[v]:.2f}) {'MET' if passed else 'MISSED'}"
                verdicts[v].update(target=TARGETS[v], met=passed)
            else:
                line += "; no target)"
        print(line)
    if acc.get("fp32") and acc.get("bf16"):
        diff = 100 * (sum(acc["bf16"]) / len(acc["bf16"]) - sum(acc["fp32"]) / len(acc["fp32"]))
        print(
            f"test acc bf16 - fp32 = {diff:+.2f} points (target |.| <= {BF16_ACC_TOL}): "
            f"{'MET' if abs(diff) <= BF16_ACC_TOL + 1e-9 else 'MISSED'}"
        )
        verdicts["bf16_acc_diff_pts"] = diff
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": results, "verdicts": verdicts}, indent=2))
    if len(ok) < len(results):
        for r in results:
            if "error" in r:
                print(f"--- round {r['round']} {r['variant']} failed:\n{r['error']}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
