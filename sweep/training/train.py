"""The fit/evaluate loop: pure torch, no Hydra, no MLflow.

`fit` is a generator that yields one metrics dict per epoch, so the caller decides what to
record and when to stop (divergence, pruning) without the loop knowing about either.
Speed comes from keeping every split on the device as one tensor: a batch is an index slice,
and nothing forces a device->host sync until the epoch's metrics are read.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import os
import random
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from models.maxnorm import apply_max_norm
from sweep.keys import BEST_BY, METRICS, TEST_METRICS

# The allowed values of trainer.precision, trainer.device, optimizer.name and objective live here, beside
# the code that implements them; sweep/config.py checks configs against these.
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # name -> autocast dtype (None: no autocast)
DEVICES = ("auto", "cpu", "cuda", "mps")
# What `fit` yields, the direction that improves each, and which read the test set: sweep/keys.py (the reader
# of the store shares them).
EVAL_BATCH = 5000  # big enough to be fast, small enough to keep activations modest


def selection_error(objective: list[str]) -> str | None:
    """Why `objective` may not drive a search (optimise, prune), or None when it may: the test set must not select."""
    bad = [name for name in objective if name in TEST_METRICS]
    if not bad:
        return None
    allowed = [m for m in METRICS if m.startswith("val_")]
    shown = bad[0] if len(objective) == 1 else "[" + ",".join(objective) + "]"
    reads = f"{bad[0]} reads" if len(bad) == 1 else f"{', '.join(bad[:-1])} and {bad[-1]} read"
    return (
        f"objective={shown} is refused for a search: {reads} the test set, and the test set must not select; "
        f"use {allowed[0]} (or {', '.join(allowed[1:])}); test metrics are still recorded for every run"
    )


class Diverged(RuntimeError):
    """Raised when the training loss stops being a finite number."""


def pick_device(name: str = "auto") -> torch.device:
    """`auto` prefers CUDA, then Apple's MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("trainer.device=cuda but no CUDA device is visible; use trainer.device=auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise RuntimeError(
            "trainer.device=mps but this machine has no usable Apple MPS device; use trainer.device=auto or cpu"
        )
    return torch.device(name)


THREADS_PER_CPU = 4  # more torch threads than this only oversubscribe the cores (and 100000 exhausts memory)


def max_threads() -> int:
    """The most intra-op threads `trainer.threads` may ask for on this machine."""
    return THREADS_PER_CPU * (os.cpu_count() or 1)


# torch.manual_seed and torch.Generator.manual_seed take an integer < 2**64 (a uint64); `fit` also seeds
# seed + 1, so the largest seed a run can use is 2**64 - 2. random.seed takes any integer and numpy gets
# seed % 2**32, so torch sets the bound.
SEED_MAX = 2**64 - 2


def seed_everything(seed: int) -> None:
    """Seed every RNG the run touches. Seed 0 is a seed like any other."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds CUDA


def autocast(device: torch.device, precision: str):
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


@functools.cache
def _eager(cls: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """`cls` without the import of torch's compiler (torch._dynamo, ~0.7-1 s per process) that its methods trigger.

    torch marks Optimizer.add_param_group / zero_grad / state_dict / load_state_dict "not to be compiled" by
    importing the compiler at their first call, and `step` imports it at every call, only to tell the compiler
    about grad mode. This project never compiles, so: those four methods find their "disabled" version cached
    (themselves), and `step` runs torch's own step function under no_grad, which is all that torch's wrapper
    does outside compilation (for a non-differentiable optimizer). Same arithmetic, bit for bit (tests/test_train.py).
    If a torch release changes this plumbing, the lookups below find nothing and the class is torch's own."""
    for name in ("add_param_group", "zero_grad", "state_dict", "load_state_dict"):
        method = getattr(torch.optim.Optimizer, name)
        fn = inspect.unwrap(method)
        if fn is not method:
            setattr(fn, "__dynamo_disable", fn)  # the cache torch._disable_dynamo looks in before importing
    raw = inspect.unwrap(cls.step)
    if raw is cls.step:
        return cls

    def step(self, closure=None):
        if self.defaults.get("differentiable"):
            return cls.step(self, closure)
        with torch.no_grad():
            return raw(self, closure)

    return type(cls.__name__, (cls,), {"step": functools.wraps(raw)(step), "__doc__": cls.__doc__})


def _adam(params, lr, momentum, weight_decay, betas) -> torch.optim.Optimizer:
    # the fused kernel (CPU and CUDA) saves ~12-20 % of a training step here; None = torch's default
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params) or None
    return _eager(torch.optim.Adam)(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, fused=fused)


def _sgd(params, lr, momentum, weight_decay, betas) -> torch.optim.Optimizer:
    return _eager(torch.optim.SGD)(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


OPTIMIZERS = {"adam": _adam, "sgd": _sgd}  # optimizer.name -> factory(params, lr, momentum, weight_decay, betas)


def make_optimizer(
    name: str,
    params,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer={name!r} is unknown; allowed: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](list(params), lr, momentum, weight_decay, betas)


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss and accuracy with dropout off, in fp32 whatever the training precision (autocast is switched
    off here, also inside a caller's autocast), so bf16 and fp32 runs are judged alike.
    Returns device tensors (no host sync here)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    with torch.autocast(device_type=x.device.type, enabled=False):
        for i in range(0, len(x), EVAL_BATCH):
            xb, yb = x[i : i + EVAL_BATCH], y[i : i + EVAL_BATCH]
            logits = model(xb)
            loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum")
            correct += (logits.argmax(1) == yb).sum()
    model.train(was_training)
    n = max(len(x), 1)
    return loss_sum / n, correct.float() / n  # float32: MPS has no float64


def train_eval_indices(n: int, size: int, split_seed: int) -> torch.Tensor:
    """The fixed subset of the n training images that train_* is measured on (all but the last epoch).
    Drawn by the split seed, not the run's seed: every seed is measured on the same images. (+1: not the
    very stream that drew the validation split, data/load.py split_indices.)"""
    return torch.randperm(n, generator=torch.Generator().manual_seed(split_seed + 1))[:size]


def eval_epochs(epochs: int, every: int) -> list[int]:
    """The epochs `fit` evaluates: every `every`-th one, and always the last."""
    return sorted(set(range(every, epochs + 1, every)) | {epochs})


class BestEpoch:
    """The evaluated epoch with the highest validation accuracy so far (ties: the earlier one) and its metrics,
    so a run shows both its last-epoch metrics and those at its best-validation epoch."""

    def __init__(self):
        self.epoch: int | None = None
        self.metrics: dict[str, float] = {}

    def update(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Offer one evaluated epoch; True when it is the new best. Without `val_acc` nothing is ever best."""
        value = metrics.get(BEST_BY)
        if value is None or not math.isfinite(value):
            return False
        if self.epoch is not None and value <= self.metrics[BEST_BY]:
            return False
        self.epoch, self.metrics = epoch, {k: v for k, v in metrics.items() if k in METRICS}
        return True


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    splits,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    split_seed: int = 0,
    precision: str = "fp32",
    train_eval_size: int = 10_000,
    drop_last: bool = True,
    eval_every: int = 1,
    max_norm: float | None = None,
    make_sched: Callable[[torch.optim.Optimizer, int], LRScheduler] | None = None,
) -> Iterator[dict[str, float]]:
    """Train for `epochs`, yielding the metrics of every evaluated epoch (see `eval_epochs`).

    `seed` draws the batch order (initialisation and dropout masks come from the global RNG that
    `seed_everything` seeded); `split_seed` draws the fixed subset train_* is measured on, like the split.
    train_* is measured in eval mode (dropout off) on that subset, and on the whole training split after
    the last epoch, so it is comparable with test_*. `fit_loss` is the mean minibatch loss of the evaluated
    epoch (dropout on). Every epoch checks the loss for divergence, evaluated or not.

    The paper's tools (Srivastava et al. 2014), both per optimizer step: `max_norm` projects every hidden unit's
    incoming weights onto the ball of that radius right after the step (models/maxnorm.py); `make_sched(optimizer,
    steps_per_epoch)` builds a scheduler (sweep/training/schedules.py) stepped right after it. `lr` is the rate the
    evaluated epoch's last step used.
    """
    device = splits.train_x.device
    x, y = splits.train_x, splits.train_y
    n = len(x)
    shuffle = torch.Generator().manual_seed(seed)  # batch order: independent of dropout's RNG stream
    probe = train_eval_indices(n, train_eval_size, split_seed).to(device)
    steps = n // batch_size if drop_last else math.ceil(n / batch_size)
    if steps == 0:
        raise ValueError(f"trainer.batch_size={batch_size} is larger than the {n} training images")
    has_val = len(splits.val_x) > 0
    evaluated = set(eval_epochs(epochs, eval_every))
    sched = make_sched(optimizer, steps) if make_sched is not None else None
    eval_seconds = 0.0

    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=shuffle).to(device)
        loss_sum = torch.zeros((), device=device)
        for i in range(steps):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            with autocast(device, precision):
                logits = model(x[idx])
            loss = F.cross_entropy(logits.float(), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if max_norm is not None:
                apply_max_norm(model, max_norm)
            if sched is not None:
                lr = optimizer.param_groups[0]["lr"]  # the rate this step used; the scheduler moves it on
                sched.step()
            loss_sum += loss.detach()

        fit_loss = (loss_sum / steps).item()  # the one sync per epoch
        if not math.isfinite(fit_loss):
            raise Diverged(f"training loss became {fit_loss} in epoch {epoch}")
        if epoch not in evaluated:
            continue

        t_eval = time.perf_counter()
        last = epoch == epochs
        tx, ty = (x, y) if last else (x[probe], y[probe])
        tensors = {"train": evaluate(model, tx, ty), "test": evaluate(model, splits.test_x, splits.test_y)}
        if has_val:
            tensors["val"] = evaluate(model, splits.val_x, splits.val_y)
        metrics = {"fit_loss": fit_loss, "lr": lr if sched is not None else optimizer.param_groups[0]["lr"]}
        for split, (loss_t, acc_t) in tensors.items():
            metrics[f"{split}_loss"] = loss_t.item()
            metrics[f"{split}_acc"] = acc_t.item()
        metrics["gap"] = metrics["train_acc"] - metrics["test_acc"]
        if has_val:
            metrics["val_gap"] = metrics["train_acc"] - metrics["val_acc"]
        eval_seconds += time.perf_counter() - t_eval  # the .item() calls above have synced
        metrics["eval_seconds"] = eval_seconds  # so far: a study's evaluation share (bench/study.py)
        metrics["epoch"] = epoch
        yield metrics
