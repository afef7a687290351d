"""Learning-rate schedules (`optimizer.schedule`), stepped once per optimizer step (per batch).

Per batch rather than per epoch so that warm-up ramps smoothly and cosine has no staircase; the
step schedule still changes the rate only at epoch boundaries. With s = the number of optimizer steps
already taken (0 for the first batch), S = epochs * steps_per_epoch and W = warmup_epochs * steps_per_epoch,
the learning rate of step s is lr * warm(s) * main(s):

    warm(s)  = (s + 1) / W for s < W, else 1       linear warm-up from lr/W, reaching lr at the end of it
    none     main = 1
    cosine   main = (1 + cos(pi * (s - W) / (S - W))) / 2 for s >= W (1 during warm-up): from lr down
             towards 0 over the steps after warm-up; half way through them it is lr/2
    step     main = gamma ** floor(epoch / step_size), epoch = s // steps_per_epoch (0-based, counted from
             the start of training, as torch's StepLR): lr * gamma after `step_size` epochs, and so on
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

SCHEDULES = ("none", "cosine", "step")  # the allowed values of optimizer.schedule (sweep/config.py checks them)


def lr_factor(
    name: str, *, epochs: int, steps_per_epoch: int, warmup_epochs: int = 0, step_size: int = 1, gamma: float = 0.1
) -> Callable[[int], float]:
    """The multiplier of the base learning rate for optimizer step s (0-based); see the module docstring."""
    if name not in SCHEDULES:
        raise ValueError(f"optimizer.schedule={name!r} is unknown; allowed: {', '.join(SCHEDULES)}")
    if epochs < 1 or steps_per_epoch < 1:
        raise ValueError(f"need epochs >= 1 and steps_per_epoch >= 1 (got {epochs}, {steps_per_epoch})")
    if not 0 <= warmup_epochs < epochs:
        raise ValueError(f"optimizer.warmup_epochs={warmup_epochs} is invalid: must be in [0, epochs={epochs})")
    total, warm = epochs * steps_per_epoch, warmup_epochs * steps_per_epoch

    def factor(s: int) -> float:
        f = (s + 1) / warm if s < warm else 1.0
        if name == "cosine" and s >= warm:
            f *= 0.5 * (1.0 + math.cos(math.pi * (s - warm) / (total - warm)))
        elif name == "step":
            f *= gamma ** ((s // steps_per_epoch) // step_size)
        return f

    return factor


def make_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: int = 0,
    step_size: int = 1,
    gamma: float = 0.1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over `optimizer`: call `.step()` after every `optimizer.step()`. On creation it sets the
    optimizer's rate to that of step 0 (with warm-up, lr / W)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lr_factor(
            name,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            warmup_epochs=warmup_epochs,
            step_size=step_size,
            gamma=gamma,
        ),
    )
