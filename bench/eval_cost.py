"""What evaluation costs against training, per epoch, at the default sizes (a benchmark, not a test).

Runs the real `sweep.training.train.fit` (784-512x4-10, batch 100, Adam, p=0.3, 5,000 validation images, a
10,000-image train_* subset, the 10,000 test images) and times every `evaluate` call inside it, so
  training s/epoch = epoch wall time - evaluation wall time.
The last epoch measures train_* on the whole training split, so its evaluation is reported apart.
From these it prints the share of a default run's time spent evaluating for trainer.eval_every=k,
which is how the default k was chosen (evaluation under a quarter of a run).

    python bench/eval_cost.py [--threads 1 0] [--epochs 3] [--run-epochs 15] [--train-subset N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import sweep.training.train as T  # noqa: E402
from data import load_splits  # noqa: E402
from models import build_mlp  # noqa: E402
from sweep.config import PROJECT_ROOT, Config  # noqa: E402


def measure(threads: int, epochs: int, root: str, precision: str, train_subset: int | None) -> dict:
    torch.set_num_threads(threads)
    c = Config()
    T.seed_everything(c.seed)
    splits = load_splits(
        c.data.name,
        root,
        val_size=c.data.val_size,
        split_seed=c.data.split_seed,
        download=False,
        train_subset=train_subset,
    )
    model = build_mlp(c.model.in_features, c.model.hidden_sizes, c.model.num_classes, c.drop_prob)
    opt = T.make_optimizer("adam", model.parameters(), c.optimizer.lr)
    spent = []  # (wall, cpu) of each evaluate call in the current epoch
    real = T.evaluate

    def timed(*a, **k):
        t, c0 = time.perf_counter(), time.process_time()
        out = real(*a, **k)
        out[1].item()  # include the device work
        spent.append((time.perf_counter() - t, time.process_time() - c0))
        return out

    T.evaluate = timed
    rows = []  # per epoch: (train wall, eval wall, train cpu, eval cpu)
    try:
        start, cstart = time.perf_counter(), time.process_time()
        for _ in T.fit(
            model,
            opt,
            splits,
            epochs=epochs,
            batch_size=c.trainer.batch_size,
            seed=c.seed,
            split_seed=c.data.split_seed,
            precision=precision,
            train_eval_size=c.data.train_eval_size,
        ):
            wall, cpu = time.perf_counter() - start, time.process_time() - cstart
            ev, evc = sum(w for w, _ in spent), sum(c for _, c in spent)
            rows.append((wall - ev, ev, cpu - evc, evc))
            spent.clear()
            start, cstart = time.perf_counter(), time.process_time()
    finally:
        T.evaluate = real
    # the fastest epoch: on a shared machine, the one least slowed by other processes
    best = min(rows[:-1], key=lambda r: r[0] + r[1])
    return {
        "threads": torch.get_num_threads(),
        "train": best[0],
        "eval": best[1],
        "eval_last": rows[-1][1],
        "train_cpu": best[2],
        "eval_cpu": best[3],
    }


def share(m: dict, run_epochs: int, k: int) -> float:
    n_eval = len(T.eval_epochs(run_epochs, k))
    ev = (n_eval - 1) * m["eval"] + m["eval_last"]
    return ev / (run_epochs * m["train"] + ev)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="0 = torch's default")
    ap.add_argument("--epochs", type=int, default=4, help="epochs timed per thread count (>= 2; the fastest counts)")
    ap.add_argument("--run-epochs", type=int, default=15, help="the run length the shares are computed for")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--train-subset", type=int, default=None, help="data.train_subset (default: all 55,000)")
    ap.add_argument("--root", default=str(PROJECT_ROOT / "data" / "files"))
    args = ap.parse_args()
    default_threads = torch.get_num_threads()
    print(
        f"torch {torch.__version__}, {default_threads} default threads, precision {args.precision}, "
        f"train_subset {args.train_subset}, shares for {args.run_epochs}-epoch runs"
    )
    print(
        "threads  train s/epoch  eval s/epoch  eval s (last epoch)  cpu s train/eval  "
        + "  ".join(f"share k={k}" for k in (1, 2, 3, 5))
    )
    for threads in args.threads:
        m = measure(threads or default_threads, args.epochs, args.root, args.precision, args.train_subset)
        shares = "  ".join(f"{100 * share(m, args.run_epochs, k):8.1f}%" for k in (1, 2, 3, 5))
        print(
            f"{m['threads']:7d}  {m['train']:13.2f}  {m['eval']:12.2f}  {m['eval_last']:19.2f}  "
            f"{m['train_cpu']:8.2f}/{m['eval_cpu']:<7.2f}  {shares}",
            flush=True,
        )


if __name__ == "__main__":
    main()
