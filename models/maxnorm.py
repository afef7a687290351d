"""Max-norm regularisation (Srivastava et al. 2014, sec. 5.1): after every optimizer step, each hidden
unit's incoming weight vector w (one row of its layer's weight matrix, bias excluded) is projected onto
the ball ||w||_2 <= c. The paper pairs it with dropout and large learning rates: the constraint keeps the
weights from blowing up however big the steps are, so the noisy search can range widely.

Which layers: the hidden ones, as the paper states the constraint ("the incoming weight vector at each
hidden unit"). The output layer's rows (one per class) are left free: they are not hidden units, and
constraining them would also cap the logits' scale, i.e. the softmax's temperature, which the
calibration metrics (sweep/training/calibration.py) are there to measure.
"""

from __future__ import annotations

import torch
from torch import nn

ULPS_INSIDE = 8  # a projected row lands this many float eps inside the sphere (see apply_max_norm)


def hidden_linears(model: nn.Module) -> list[nn.Linear]:
    """The model's Linear layers in order, without the last one (the output layer)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[:-1]


@torch.no_grad()
def apply_max_norm(model: nn.Module, c: float) -> None:
    """Project, in place, every row of every hidden Linear's weight whose L2 norm exceeds `c` back onto the
    ball (one vectorised scaling per layer); rows already inside stay bit-for-bit as they were. Call it
    right after `optimizer.step()`.

    A projected row is scaled to norm c * (1 - 8 eps) rather than exactly c (torch.renorm's target): the
    norm recomputed in float32 then never reads above c, and a second call changes nothing."""
    if not c > 0:  # also rejects NaN
        raise ValueError(f"max_norm={c} is invalid: it must be a number > 0")
    for layer in hidden_linears(model):
        w = layer.weight
        norms = torch.linalg.vector_norm(w, dim=1, keepdim=True)
        target = c * (1.0 - ULPS_INSIDE * torch.finfo(w.dtype).eps)
        w.mul_(torch.where(norms > c, target / norms, torch.ones_like(norms)))


@torch.no_grad()
def max_row_norm(model: nn.Module) -> float:
    """The largest L2 norm of any hidden unit's incoming weights: <= c under `apply_max_norm(model, c)`, and,
    without the constraint, the radius a c would have to stay under to bind at all."""
    return max(torch.linalg.vector_norm(layer.weight, dim=1).max().item() for layer in hidden_linears(model))
