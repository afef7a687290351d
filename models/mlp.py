"""The lab's MLP, generalised to any depth and to one dropout rate per layer.

Layout: [Dropout(p_in)] -> (Linear -> ReLU -> Dropout(p_i)) per hidden layer -> Linear.
A rate of 0 adds no Dropout module at all, so p=0 is exactly the undropped network
(no identity modules to trip over when inspecting or exporting it).

Constant capacity (Srivastava et al. 2014, Fig. 9b): a hidden layer of n units kept with probability
1 - p has n(1 - p) active units on average, so dropout also shrinks the network. Widening each hidden
layer to n / (1 - p) keeps that expected number fixed, which separates dropout's regularisation from
the capacity it takes away. The input is never widened (its width is the data's).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
INITS = {
    "xavier_uniform": nn.init.xavier_uniform_,
    "xavier_normal": nn.init.xavier_normal_,
    "kaiming_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
    "default": None,  # keep torch's own Linear init
}


class Dropout(nn.Dropout):
    """nn.Dropout with the same contract (off in eval mode, kept units scaled by 1/(1-p)) and a cheaper
    mask: `rand < keep` costs a third of torch's bernoulli mask on CPU, ~10 % of a training step here.

    `generator` (None: torch's global RNG) lets MC-dropout evaluation draw its masks from its own seeded
    stream (sweep/calibration.py sets it for the passes and clears it after), so the evaluation is
    repeatable and leaves training's RNG untouched. It must live on the input's device. Every unit is
    kept with probability exactly 1 - p (`rand` is uniform on [0, 1)), independently of the others."""

    generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = 1.0 - self.p
        mask = torch.rand(x.shape, device=x.device, generator=self.generator) < keep
        return x * mask.to(x.dtype).mul_(1.0 / keep)


def _check_rate(name: str, p: float) -> float:
    if not 0.0 <= p < 1.0:  # also rejects NaN
        raise ValueError(f"{name}={p} is invalid: a dropout rate must be in [0, 1)")
    return float(p)


class MLP(nn.Sequential):
    """Fully connected classifier with inverted dropout (nn.Dropout scales kept units by 1/(1-p) in train mode)."""

    def __init__(
        self,
        in_features: int,
        hidden_sizes: Sequence[int],
        num_classes: int,
        layer_drop_probs: Sequence[float],
        input_drop_prob: float = 0.0,
        activation: str = "relu",
        init: str = "xavier_uniform",
    ):
        if len(layer_drop_probs) != len(hidden_sizes):
            raise ValueError(
                f"got {len(layer_drop_probs)} per-layer dropout rates for {len(hidden_sizes)} hidden layers"
            )
        layers: list[nn.Module] = []
        if _check_rate("input_drop_prob", input_drop_prob) > 0:
            layers.append(Dropout(input_drop_prob))
        width = in_features
        for i, (size, p) in enumerate(zip(hidden_sizes, layer_drop_probs), start=1):
            layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
            if _check_rate(f"layer {i} drop prob", p) > 0:
                layers.append(Dropout(p))
            width = size
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)
        self.hidden_sizes = tuple(hidden_sizes)
        self.drop_probs = (float(input_drop_prob), *map(float, layer_drop_probs))
        init_fn = INITS[init]
        if init_fn is not None:
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    init_fn(m.weight)  # the lab: Xavier weights, torch's default bias init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1))


def constant_capacity_widths(hidden_sizes: Sequence[int], rates: Sequence[float]) -> list[int]:
    """Hidden widths n_i / (1 - p_i), to the nearest integer: the expected number of kept units stays n_i."""
    if len(rates) != len(hidden_sizes):
        raise ValueError(f"got {len(rates)} dropout rates for {len(hidden_sizes)} hidden layers")
    return [int(round(n / (1.0 - _check_rate(f"layer {i} drop prob", p))))
            for i, (n, p) in enumerate(zip(hidden_sizes, rates), start=1)]


def build_mlp(
    in_features: int = 784,
    hidden_sizes: Sequence[int] = (512, 512, 512, 512),
    num_classes: int = 10,
    drop_prob: float = 0.3,
    input_drop_prob: float = 0.0,
    layer_drop_probs: Sequence[float | None] | None = None,
    activation: str = "relu",
    init: str = "xavier_uniform",
    constant_capacity: bool = False,
) -> MLP:
    """Resolve per-layer rates: an explicit rate for layer i wins over the shared `drop_prob`.
    `constant_capacity` widens hidden layer i to hidden_sizes[i] / (1 - rate_i) (the model's
    `hidden_sizes` attribute holds the widths it was built with)."""
    overrides = list(layer_drop_probs or [])
    if overrides and len(overrides) != len(hidden_sizes):
        raise ValueError(
            f"layer_drop_probs has {len(overrides)} entries but the model has {len(hidden_sizes)} hidden layers"
        )
    rates = [drop_prob if (not overrides or overrides[i] is None) else overrides[i] for i in range(len(hidden_sizes))]
    widths = constant_capacity_widths(hidden_sizes, rates) if constant_capacity else list(hidden_sizes)
    return MLP(in_features, widths, num_classes, rates, input_drop_prob, activation, init)
