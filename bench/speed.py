"""Speed benchmark (not a test): the original lab loop vs. our `sweep.training.train.fit`, side by side.

One invocation measures every variant on the same machine and the same MNIST files:

  lab        the lab's loop, faithfully: torchvision MNIST + ToTensor + DataLoader(batch 100, shuffle,
             drop_last, num_workers=0), shared ReLU/Dropout(0.3) modules in a Sequential, Xavier-uniform
             weights, Adam(lr=1e-3), CrossEntropyLoss, `avg_cost += cost / total_batch`, no per-epoch
             evaluation; test accuracy computed once at the end (pixels scaled to [0, 1]).
  ours_fp32  data.load_splits(val_size=0) + models.build_mlp + the whole sweep.training.train.fit generator
             (training + its per-epoch train-subset/test evaluation), precision="fp32".
  ours_bf16  the same with precision="bf16".

Each variant runs in its own child process (`--variant NAME`), so that its peak RSS (`ru_maxrss`) is its
own, and every child gets the same torch thread count. The children are started together but run in
lockstep: only one works at a time, epoch 1 of every variant, then epoch 2, ... so that load from other
processes on a shared machine hits all variants alike. The parent prints the table and the ours/lab
per-epoch time ratios against the targets. See bench/README.md.

    .venv/bin/python bench/speed.py --epochs 3 --threads 1 --json /tmp/bench_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # import this checkout's sweep, models, data
from sweep.config import PROJECT_ROOT as ROOT  # noqa: E402

VARIANTS = ("lab", "ours_fp32", "ours_bf16")
ALIASES = {"fp32": "ours_fp32", "bf16": "ours_bf16"}
from lab import BATCH, DROP, LR, SEED, lab_phases  # noqa: E402 - bench/lab.py: the lab's own loop

TARGETS = {"ours_fp32": 0.75, "ours_bf16": 0.45}  # max (ours s/epoch) / (lab s/epoch)
BF16_ACC_TOL = 0.2  # percentage points of test accuracy, |bf16 - fp32|
RESULT_TAG = "BENCH_RESULT "
NOISY_OTHERS = 0.25  # cores busy elsewhere above which the wall-time verdicts get a warning


# --------------------------------------------------------------------------------------------- child side
def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _cpu_snapshot() -> tuple[float, float] | None:
    """(CPU seconds all processes on the machine spent busy, CPU seconds this process used); Linux only."""
    try:
        f = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    j = list(map(int, f))
    busy = sum(j) - j[3] - (j[4] if len(j) > 4 else 0)  # minus idle and iowait
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return busy / os.sysconf("SC_CLK_TCK"), ru.ru_utime + ru.ru_stime


def _peak_memory(device) -> dict:
    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    rss_mib = rss / 2**20 if sys.platform == "darwin" else rss / 2**10
    out = {"peak_rss_mib": rss_mib}
    if device.type == "cuda":
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def ours_phases(args, device, precision: str):
    """data.load_splits + build_mlp + training.train.fit; each epoch is one step of its generator (train + eval)."""
    from data import load_splits
    from models.mlp import build_mlp
    from sweep.training.train import fit, make_optimizer, seed_everything

    seed_everything(SEED)
    t0 = time.perf_counter()
    splits = load_splits("mnist", args.root, val_size=0, split_seed=SEED, device=device, download=False)
    _sync(device)
    setup_s = time.perf_counter() - t0
    if len(splits.train_x) != 60_000:
        raise RuntimeError(f"expected the 60000 MNIST training images, load_splits gave {len(splits.train_x)}")

    model = build_mlp(hidden_sizes=(512,) * 4, drop_prob=DROP).to(device)
    optimizer = make_optimizer("adam", model.parameters(), lr=LR)
    yield {"setup_s": setup_s}

    last = None
    for m in fit(model, optimizer, splits, epochs=args.epochs, batch_size=BATCH, seed=SEED, precision=precision):
        last = m
        yield {
            "fit_loss": m["fit_loss"],
            "log": f"epoch {m['epoch']} fit_loss={m['fit_loss']:.6f} test_acc={m['test_acc']:.4f}",
        }
    yield {"test_acc": last["test_acc"], "train_acc": last["train_acc"]}


def _reply(obj: dict) -> None:
    print(RESULT_TAG + json.dumps(obj), flush=True)


def child(args) -> None:
    """One variant in this process. With --lockstep it waits for a line on stdin before each phase (setup,
    every epoch, finish) and answers with a JSON line, so the parent can interleave the variants epoch by epoch."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from sweep.training.train import pick_device

    device = pick_device(args.device)
    if device.type == "mps":  # `auto` here means CUDA when present, else CPU
        device = torch.device("cpu")
    base_rss = _peak_memory(device)["peak_rss_mib"]  # after importing torch, before any data

    def wait() -> None:
        if args.lockstep and not sys.stdin.readline():
            sys.exit("parent went away")

    phases = (
        lab_phases(args, device)
        if args.variant == "lab"
        else ours_phases(args, device, args.variant.removeprefix("ours_"))
    )
    wait()
    setup = next(phases)
    if args.lockstep:
        _reply(setup)
    epoch_s, cpu_s, fit_loss, others_cpu = [], [], [], 0.0
    for epoch in range(1, args.epochs + 1):
        wait()
        _sync(device)
        snap0, t0, c0 = _cpu_snapshot(), time.perf_counter(), time.process_time()
        m = next(phases)
        _sync(device)
        wall, cpu, snap1 = time.perf_counter() - t0, time.process_time() - c0, _cpu_snapshot()
        epoch_s.append(wall)
        cpu_s.append(cpu)
        fit_loss.append(m["fit_loss"])
        if snap0 is not None and snap1 is not None:  # CPU time the rest of the machine used meanwhile
            others_cpu += max(0.0, (snap1[0] - snap0[0]) - (snap1[1] - snap0[1]))
        print(f"[{args.variant}] {m['log']}  ({wall:.2f} s)", file=sys.stderr, flush=True)
        if args.lockstep:
            _reply({"epoch": epoch, "epoch_s": wall})
    wait()
    res = {**setup, **next(phases), **_peak_memory(device), "epoch_s": epoch_s, "cpu_s": cpu_s, "fit_loss": fit_loss}
    res.update(
        variant=args.variant,
        base_rss_mib=base_rss,
        epochs=args.epochs,
        threads=torch.get_num_threads(),
        device=str(device),
        mean_epoch_s=sum(epoch_s) / len(epoch_s),
        mean_cpu_s=sum(cpu_s) / len(cpu_s),
        others_cores=others_cpu / sum(epoch_s) if _cpu_snapshot() is not None else None,
    )
    if device.type == "cuda":
        res["device_name"] = torch.cuda.get_device_name(device)
    _reply(res)


# -------------------------------------------------------------------------------------------- parent side
class Child:
    """A `--variant NAME --lockstep` subprocess: one variant, its own process, so its peak RSS is its own."""

    def __init__(self, args, variant: str):
        self.variant, self.error = variant, None
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--variant",
            variant,
            "--lockstep",
            "--epochs",
            str(args.epochs),
            "--root",
            str(args.root),
            "--device",
            args.device,
            "--threads",
            str(args.threads),
        ]
        print(f"--- {variant}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)

    def ask(self) -> dict | None:
        """Let the child run its next phase; its JSON answer, or None (and self.error) if it died."""
        if self.error:
            return None
        try:
            self.proc.stdin.write("go\n")
            self.proc.stdin.flush()
            for line in self.proc.stdout:
                if line.startswith(RESULT_TAG):
                    return json.loads(line[len(RESULT_TAG) :])
        except (BrokenPipeError, OSError):
            pass
        self.error = f"child exited with status {self.proc.wait()} (its traceback is above)"
        return None

    def close(self) -> None:
        """EOF on its stdin makes a waiting child exit; one that does not (stuck, or mid-epoch) is killed."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_all(args, variants) -> dict:
    """Children for all variants at once, but only one works at a time: setups in turn, then epoch 1 of every
    variant, epoch 2, ... (order reversed every other epoch). Load from other processes thus hits all variants
    alike instead of whichever ran during a busy spell; idle children just wait on a pipe."""
    children = [Child(args, v) for v in variants]
    try:
        for c in children:
            c.ask()  # setup (data loading)
        for epoch in range(args.epochs):
            for c in children if epoch % 2 == 0 else children[::-1]:
                c.ask()
        results = {}
        for c in children:
            res = c.ask()  # finish: test accuracy, peak memory, all timings
            results[c.variant] = res if res is not None else {"variant": c.variant, "error": c.error}
        return results
    finally:
        for c in children:
            c.close()


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def report(results: dict, args) -> dict:
    ok = {k: v for k, v in results.items() if "error" not in v}
    any_res = next(iter(ok.values()), {})
    cuda = any("peak_cuda_mib" in v for v in ok.values())
    print()
    print(
        f"epochs={args.epochs}  threads={args.threads}  device={any_res.get('device', args.device)}"
        f"{' (' + any_res['device_name'] + ')' if 'device_name' in any_res else ''}  cpu={_cpu_name()} "
        f"x{os.cpu_count()}  torch={any_res.get('torch', '')}"
    )
    hdr = (
        f"{'variant':<10} {'setup s':>7} {'s/epoch':>7}  {'per epoch (s)':<22} {'CPU s/ep':>8} {'peak RSS MiB':>12}"
        f" {'(+import)':>9}{' peak CUDA MiB' if cuda else ''} {'test acc %':>10} {'others':>6}"
    )
    print(hdr)
    print("-" * len(hdr))
    for name, r in results.items():
        if "error" in r:
            print(f"{name:<10} ERROR: {r['error']}")
            continue
        ep = r["epoch_s"]
        if len(ep) <= 4:
            eps = " ".join(f"{t:.2f}" for t in ep)
        else:  # too many to list: first, the range of the rest, last (the last one holds fit's full-train eval)
            eps = f"{ep[0]:.2f} [{min(ep[1:-1]):.2f}-{max(ep[1:-1]):.2f}] {ep[-1]:.2f}"
        others = "n/a" if r.get("others_cores") is None else f"{r['others_cores']:.2f}"
        row = (
            f"{name:<10} {r['setup_s']:>7.2f} {r['mean_epoch_s']:>7.2f}  {eps:<22} {r['mean_cpu_s']:>8.2f} "
            f"{r['peak_rss_mib']:>12.0f} {'+' + format(r['peak_rss_mib'] - r['base_rss_mib'], '.0f'):>9}"
            f"{format(r['peak_cuda_mib'], '>14.0f') if cuda else ''} {100 * r['test_acc']:>10.2f} {others:>6}"
        )
        print(row)
    print(
        "s/epoch: wall seconds per epoch, mean over the epochs, everything but data loading (lab: training only;\n"
        "  ours: training + its per-epoch evaluation). CPU s/ep: this process's CPU seconds per epoch (all threads).\n"
        "  (+import): peak RSS minus the RSS right after `import torch`. others: cores that other processes kept\n"
        "  busy during the epochs; well above 0 means the wall times are inflated."
    )
    busy = [r["others_cores"] for r in ok.values() if r.get("others_cores") is not None]
    if busy and max(busy) > NOISY_OTHERS:
        print(
            f"WARNING: other processes kept up to {max(busy):.2f} cores busy during the run: the wall-time ratios "
            f"below are unreliable;\n  compare the CPU-s ratios (robust with --threads 1) or rerun on an idle "
            f"machine."
        )

    verdicts = {}
    lab = ok.get("lab")
    if lab:
        print()
        for name, target in TARGETS.items():
            if name not in ok:
                continue
            ratio = ok[name]["mean_epoch_s"] / lab["mean_epoch_s"]
            cpu_ratio = ok[name]["mean_cpu_s"] / lab["mean_cpu_s"]
            passed = ratio <= target
            extra, acc_diff = "", None
            if name == "ours_bf16" and "ours_fp32" in ok:
                acc_diff = 100 * (ok["ours_bf16"]["test_acc"] - ok["ours_fp32"]["test_acc"])
                acc_ok = round(abs(acc_diff), 6) <= BF16_ACC_TOL  # test sets are 10^4 images: no float fuzz
                passed = passed and acc_ok
                extra = (
                    f"; test acc bf16 - fp32 = {acc_diff:+.2f} pts (target |.| <= {BF16_ACC_TOL}: "
                    f"{'ok' if acc_ok else 'no'})"
                )
            verdicts[name] = {
                "ratio": ratio,
                "cpu_ratio": cpu_ratio,
                "target": target,
                "acc_diff_pts": acc_diff,
                "pass": passed,
            }
            print(
                f"{name} / lab  s/epoch = {ratio:.3f} [CPU s: {cpu_ratio:.3f}]  (target <= {target:.2f}){extra}  "
                f"{'PASS' if passed else 'MISS'}"
            )
    return verdicts


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--epochs", type=int, default=3, help="epochs per variant (default 3: a quick run)")
    p.add_argument(
        "--root",
        default="data/files",
        help="dataset root holding MNIST/raw/*-ubyte; a relative path is taken from the project root "
        "(default: <project>/data/files)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads in every child (default: torch's default)"
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto = CUDA when present")
    p.add_argument(
        "--only",
        default=None,
        help=f"comma-separated subset of {','.join(VARIANTS)} (fp32/bf16 accepted as short names)",
    )
    p.add_argument("--json", default=None, metavar="PATH", help="also write all results to this JSON file")
    p.add_argument("--variant", choices=VARIANTS, default=None, help=argparse.SUPPRESS)  # child mode
    p.add_argument("--lockstep", action="store_true", help=argparse.SUPPRESS)  # child: wait for the parent
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error("--epochs must be >= 1")
    root = Path(args.root).expanduser()
    args.root = root if root.is_absolute() else ROOT / root

    if args.variant:
        child(args)
        return

    variants = VARIANTS
    if args.only:
        names = [ALIASES.get(s.strip(), s.strip()) for s in args.only.split(",") if s.strip()]
        bad = [s for s in names if s not in VARIANTS]
        if bad:
            p.error(f"--only: unknown variant(s) {bad}; choose from {', '.join(VARIANTS)}")
        variants = tuple(v for v in VARIANTS if v in names)
    if not (args.root / "MNIST" / "raw").is_dir():
        p.error(f"no MNIST/raw under {args.root}; fetch it first (python -m data fetch mnist) or pass --root")

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda, but torch sees no CUDA device")
    if not args.threads:
        args.threads = torch.get_num_threads()  # pin the default so every child uses the same count

    results = run_all(args, variants)
    for r in results.values():
        r.setdefault("torch", torch.__version__)
    verdicts = report(results, args)
    if args.json:
        out = {
            "args": {"epochs": args.epochs, "threads": args.threads, "device": args.device, "root": str(args.root)},
            "machine": {"cpu": _cpu_name(), "cpu_count": os.cpu_count(), "torch": torch.__version__},
            "results": results,
            "ratios": verdicts,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"\nwrote {args.json}")
    if any("error" in r for r in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
