"""Does a run give the same digits under another oneDNN kernel family, and what does fp32 cost against bf16?

One run of the overfitting study's setting (2,000 images, hidden 0.5, input 0.2, replicate 1, 1 thread), as
`sweep/run.py` trains it, under each ONEDNN_MAX_CPU_ISA cap and in each precision, in fresh processes one after
another. Prints, per precision, the final train / validation / test accuracy under each cap and whether they are
the same digits as without a cap, and each run's wall time; then fp32's time over bf16's without a cap. Run it
on 2 idle cores:

    .venv/bin/python bench/isa_paths.py                 # 20 epochs; --epochs 60 for the study's budget

What it showed is in docs/results.md ("Answers that hold on another CPU"). A cap above what the CPU has changes
nothing (oneDNN uses what the CPU has); the table says which family each cap left (sweep/training/machine.py).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sweep.training import machine  # noqa: E402

CAPS = ("", "AVX512_CORE_AMX", "AVX512_CORE_BF16", "AVX512_CORE", "AVX2")
FINAL = re.compile(r"epoch (\d+)/\1\s+train_acc ([\d.]+)\s+val_acc ([\d.]+)\s+test_acc ([\d.]+)")


def one_run(precision: str, cap: str, epochs: int) -> tuple[tuple[str, str, str], float]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if cap:
        env["ONEDNN_MAX_CPU_ISA"] = cap
    cmd = [
        sys.executable,
        str(ROOT / "sweep" / "run.py"),
        "+experiment=overfit",
        "hydra/launcher=basic",
        "drop_prob=0.5",
        "input_drop_prob=0.2",
        "seed=1",
        f"trainer.epochs={epochs}",
        f"trainer.precision={precision}",
        "trainer.progress=false",
        "tracking.enabled=false",
        f"hydra.run.dir={ROOT / 'runs' / 'bench_isa'}",
    ]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    m = FINAL.search(out.stdout + out.stderr)
    if out.returncode != 0 or not m:
        raise SystemExit(f"run failed ({precision}, cap {cap or 'none'}):\n{out.stderr[-2000:]}")
    return (m.group(2), m.group(3), m.group(4)), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--precisions", default="fp32,bf16")
    args = ap.parse_args()
    flags = machine._cpuinfo()[1]
    print(
        f"CPU: {machine.cpu_model()}; oneDNN {machine.onednn_version()}; its best ISA family here: "
        f"{machine.onednn_isa(flags, 'ALL')}; {args.epochs} epochs, 1 thread, one process per run"
    )
    walls: dict[str, float] = {}
    for precision in args.precisions.split(","):
        print(f"\n{precision}:")
        print(
            f"  {'ONEDNN_MAX_CPU_ISA':20} {'family used':18} {'train':>7} {'val':>7} {'test':>7} {'wall s':>7}  "
            "same digits as no cap"
        )
        base = None
        for cap in CAPS:
            digits, wall = one_run(precision, cap, args.epochs)
            base = base or digits
            if not cap:
                walls[precision] = wall
            used = machine.onednn_isa(flags, cap or "ALL")
            print(
                f"  {cap or '(none)':20} {used:18} {digits[0]:>7} {digits[1]:>7} {digits[2]:>7} {wall:7.1f}  "
                f"{'yes' if digits == base else 'NO'}"
            )
    if {"fp32", "bf16"} <= set(walls):
        print(
            f"\nfp32 / bf16 wall time without a cap: {walls['fp32'] / walls['bf16']:.2f}x "
            f"({walls['fp32']:.1f} s against {walls['bf16']:.1f} s, process start-up included)"
        )


if __name__ == "__main__":
    main()
