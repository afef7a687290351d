"""The lab's MLP, generalised to any depth and to one dropout rate per layer.

Layout: [Dropout(p_in)] -> (Linear -> ReLU -> Dropout(p_i)) per hidden layer -> Linear, where Linear is
nn.Linear with its fp32 CPU products on oneDNN (models/linear.py).
A rate of 0 adds no Dropout module at all, so p=0 is exactly the undropped network
(no identity modules to trip over when inspecting or exporting it).

Constant capacity (Srivastava et al. 2014, Fig. 9b): a hidden layer of n units kept with probability
1 - p has n(1 - p) active units on average, so dropout also shrinks the network. Widening each hidden
layer to n / (1 - p) keeps that expected number fixed, which separates dropout's regularisation from
the capacity it takes away. The input is never widened (its width is the data's).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from models.linear import Linear, use_onednn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
INITS = {
    "xavier_uniform": nn.init.xavier_uniform_,
    "xavier_normal": nn.init.xavier_normal_,
    "kaiming_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
    "default": None,  # keep torch's own Linear init
}


MASK_BITS = 16  # random bits a CPU dropout mask draws per unit; a tie with the threshold draws 24 more


def keep_mask(
    shape: torch.Size, keep: float, device: torch.device, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A bool mask, each entry True with probability `keep` (to within 2**-40), independently of the others.

    On CPU the random numbers cost most of a dropout layer, and torch draws them one 32-bit word per element
    whatever the dtype. So this draws 64-bit words and reads them as 16-bit integers (4 units a draw): unit i
    is kept when u_i < K = keep * 2**16, i.e. kept for u_i < floor(K), dropped for u_i > floor(K), and on a tie
    (probability 2**-16) kept with probability frac(K) by a fresh 24-bit uniform. P(kept) = floor(K) / 2**16 +
    frac(K) / 2**16 = keep exactly, up to that last draw's 2**-24 resolution. The 16-bit slices of a uniform
    64-bit word are independent uniforms, so the units are independent. Elsewhere (CUDA, MPS) random numbers
    are cheap and a tie check would sync: `rand < keep` there (24-bit resolution).
    """
    if device.type != "cpu":
        return torch.rand(shape, device=device, generator=generator) < keep
    n = shape.numel()
    words = torch.empty((n * MASK_BITS + 63) // 64, dtype=torch.int64).random_(
        -(2**63), None, generator=generator
    )  # full 64-bit range
    u = words.view(torch.int16)[:n].view(shape)  # uniform on [-2**15, 2**15): u + 2**15 uniform on [0, 2**16)
    scaled = keep * 2**MASK_BITS
    threshold = math.floor(scaled)  # <= 2**16 - 1, since keep < 1
    edge = threshold - 2 ** (MASK_BITS - 1)
    mask = u < edge
    frac = scaled - threshold
    if frac > 0:
        tie = u == edge
        if tie.any():  # half the cost of counting them; ~0.8 ties per 51,200 units
            where = tie.nonzero(as_tuple=True)
            mask[where] = torch.rand(len(where[0]), generator=generator) < frac
    return mask


class Dropout(nn.Dropout):
    """nn.Dropout with the same contract (off in eval mode, each unit dropped with probability p independently,
    kept units scaled by 1/(1-p)) and a cheaper mask (`keep_mask`): torch's bernoulli mask costs ~3x the
    random draws of `rand < keep`, and those ~4x the draws `keep_mask` makes on CPU.

    `generator` (None: torch's global RNG) lets MC-dropout evaluation draw its masks from its own seeded
    stream (sweep/training/calibration.py sets it for the passes and clears it after), so the evaluation is
    repeatable and leaves training's RNG untouched. It must live on the input's device."""

    generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = 1.0 - self.p
        return x * keep_mask(x.shape, keep, x.device, self.generator).to(x.dtype).mul_(1.0 / keep)


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
        cpu_matmul: str = "auto",
    ):
        if len(layer_drop_probs) != len(hidden_sizes):
            raise ValueError(
                f"got {len(layer_drop_probs)} per-layer dropout rates for {len(hidden_sizes)} hidden layers"
            )
        onednn = use_onednn(cpu_matmul)  # fp32 products on the CPU: oneDNN or torch's BLAS (models/linear.py)
        layers: list[nn.Module] = []
        if _check_rate("input_drop_prob", input_drop_prob) > 0:
            layers.append(Dropout(input_drop_prob))
        width = in_features
        for i, (size, p) in enumerate(zip(hidden_sizes, layer_drop_probs), start=1):
            layers += [Linear(width, size, onednn=onednn), ACTIVATIONS[activation]()]
            if _check_rate(f"layer {i} drop prob", p) > 0:
                layers.append(Dropout(p))
            width = size
        layers.append(Linear(width, num_classes, onednn=onednn))
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
    return [
        int(round(n / (1.0 - _check_rate(f"layer {i} drop prob", p))))
        for i, (n, p) in enumerate(zip(hidden_sizes, rates), start=1)
    ]


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
    cpu_matmul: str = "auto",
) -> MLP:
    """Resolve per-layer rates: an explicit rate for layer i wins over the shared `drop_prob`.
    `constant_capacity` widens hidden layer i to hidden_sizes[i] / (1 - rate_i) (the model's
    `hidden_sizes` attribute holds the widths it was built with). `cpu_matmul` picks where fp32 products
    run on the CPU (models/linear.py)."""
    overrides = list(layer_drop_probs or [])
    if overrides and len(overrides) != len(hidden_sizes):
        raise ValueError(
            f"layer_drop_probs has {len(overrides)} entries but the model has {len(hidden_sizes)} hidden layers"
        )
    rates = [drop_prob if (not overrides or overrides[i] is None) else overrides[i] for i in range(len(hidden_sizes))]
    widths = constant_capacity_widths(hidden_sizes, rates) if constant_capacity else list(hidden_sizes)
    return MLP(in_features, widths, num_classes, rates, input_drop_prob, activation, init, cpu_matmul)
