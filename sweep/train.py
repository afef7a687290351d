"""The fit/evaluate loop: pure torch, no Hydra, no MLflow.

`fit` is a generator that yields one metrics dict per epoch, so the caller decides what to
record and when to stop (divergence, pruning) without the loop knowing about either.
Speed comes from keeping every split on the device as one tensor: a batch is an index slice,
and nothing forces a device->host sync until the epoch's metrics are read.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# The allowed values of trainer.precision, trainer.device, optimizer.name and objective live here, beside
# the code that implements them; sweep/config.py checks configs against these.
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # name -> autocast dtype (None: no autocast)
DEVICES = ("auto", "cpu", "cuda", "mps")
# what `fit` yields each epoch (besides `epoch` and `fit_loss`, the mean minibatch loss with dropout on):
# measured with dropout off, any of them can be a sweep's objective
# The metrics `fit` yields that a run can return as its objective, and what each means to a search:
# accuracies are maximised; losses and the train-test accuracy gap (overfitting) minimised.
METRIC_DIRECTIONS = {"val_acc": "maximize", "val_loss": "minimize", "test_acc": "maximize",
                     "test_loss": "minimize", "train_acc": "maximize", "train_loss": "minimize", "gap": "minimize"}
METRICS = tuple(METRIC_DIRECTIONS)
EVAL_BATCH = 5000  # big enough to be fast, small enough to keep activations modest


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
        raise RuntimeError("trainer.device=mps but this machine has no usable Apple MPS device; "
                           "use trainer.device=auto or cpu")
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


def _adam(params, lr, momentum, weight_decay, betas) -> torch.optim.Optimizer:
    # the fused kernel (CPU and CUDA) saves ~12-20 % of a training step here; None = torch's default
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params) or None
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, fused=fused)


def _sgd(params, lr, momentum, weight_decay, betas) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


OPTIMIZERS = {"adam": _adam, "sgd": _sgd}  # optimizer.name -> factory(params, lr, momentum, weight_decay, betas)


def make_optimizer(name: str, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                   betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer={name!r} is unknown; allowed: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](list(params), lr, momentum, weight_decay, betas)


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss and accuracy with dropout off. Returns device tensors (no host sync here)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for i in range(0, len(x), EVAL_BATCH):
        xb, yb = x[i:i + EVAL_BATCH], y[i:i + EVAL_BATCH]
        with autocast(x.device, precision):
            logits = model(xb)
        loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
    model.train(was_training)
    n = max(len(x), 1)
    return loss_sum / n, correct.float() / n  # float32: MPS has no float64


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, splits, *, epochs: int, batch_size: int, seed: int,
        precision: str = "fp32", train_eval_size: int = 10_000, drop_last: bool = True) -> Iterator[dict[str, float]]:
    """Train for `epochs`, yielding per-epoch metrics.

    train_* is measured in eval mode (dropout off) on a fixed seeded subset of the training split,
    and on the whole training split after the last epoch, so it is comparable with test_*.
    `fit_loss` is the mean minibatch loss seen during training (dropout on).
    """
    device = splits.train_x.device
    x, y = splits.train_x, splits.train_y
    n = len(x)
    shuffle = torch.Generator().manual_seed(seed)  # batch order: independent of dropout's RNG stream
    probe = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))[:train_eval_size].to(device)
    steps = n // batch_size if drop_last else math.ceil(n / batch_size)
    if steps == 0:
        raise ValueError(f"trainer.batch_size={batch_size} is larger than the {n} training images")
    has_val = len(splits.val_x) > 0

    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=shuffle).to(device)
        loss_sum = torch.zeros((), device=device)
        for i in range(steps):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            with autocast(device, precision):
                logits = model(x[idx])
            loss = F.cross_entropy(logits.float(), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()

        fit_loss = (loss_sum / steps).item()  # the one sync per epoch
        if not math.isfinite(fit_loss):
            raise Diverged(f"training loss became {fit_loss} in epoch {epoch}")

        last = epoch == epochs
        tx, ty = (x, y) if last else (x[probe], y[probe])
        tensors = {"train": evaluate(model, tx, ty, precision), "test": evaluate(model, splits.test_x, splits.test_y, precision)}
        if has_val:
            tensors["val"] = evaluate(model, splits.val_x, splits.val_y, precision)
        metrics = {"fit_loss": fit_loss}
        for split, (loss_t, acc_t) in tensors.items():
            metrics[f"{split}_loss"] = loss_t.item()
            metrics[f"{split}_acc"] = acc_t.item()
        metrics["gap"] = metrics["train_acc"] - metrics["test_acc"]
        metrics["epoch"] = epoch
        yield metrics
