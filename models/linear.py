"""nn.Linear whose fp32 products on the CPU can run on oneDNN instead of the BLAS torch links (MKL).

torch sends an fp32 `nn.Linear` on the CPU to MKL's sgemm, and only reduced precisions (bf16 autocast) to
oneDNN. On CPUs that MKL does not tune for (the AMD EPYC of this project's CI: MKL runs its generic path there)
oneDNN's fp32 kernels are about twice as fast for this MLP's shapes (100 x 512 x 512: ~130 against ~270 us), and
the matrix products are most of a training step. oneDNN picks its code path from the CPU's features, not its
vendor. `Linear` runs the forward product and both backward ones (input and weight gradients) there; the sums
are the same sums in another order, so results agree with MKL's to float rounding (~1e-6), not bit for bit.
`cpu_matmul="blas"` keeps torch's own path (bit-identical to a plain nn.Linear: to reproduce older runs).

Anything else takes torch's own path unchanged: other devices, other dtypes, and autocast (bf16 training,
which torch already runs on oneDNN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# trainer.cpu_matmul: auto = oneDNN where this torch build has it, else BLAS; onednn = required; blas = torch's own
CPU_MATMULS = ("auto", "onednn", "blas")


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def use_onednn(cpu_matmul: str) -> bool:
    """Whether `cpu_matmul` (one of CPU_MATMULS) means oneDNN on this machine."""
    if cpu_matmul not in CPU_MATMULS:
        raise ValueError(f"cpu_matmul={cpu_matmul!r} is unknown; allowed: {', '.join(CPU_MATMULS)}")
    if cpu_matmul == "onednn" and not onednn_available():
        raise RuntimeError("cpu_matmul=onednn but this torch build has no oneDNN (mkldnn); use auto or blas")
    return cpu_matmul != "blas" and onednn_available()


def _product(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """x @ w.T (+ b) on oneDNN; x and w may be transposed views."""
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """y = x @ W.T + b with all three products on oneDNN: dx = dy @ W, dW = dy.T @ x, db = sum of dy."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return _product(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad  # need_b is False when there is no bias
        grad_x = _product(grad, weight.t(), None) if need_x else None
        grad_w = _product(grad.t(), x.t(), None) if need_w else None
        grad_b = grad.sum(0) if need_b else None
        return grad_x, grad_w, grad_b


class Linear(nn.Linear):
    """nn.Linear (same parameters, init and state dict) that runs fp32 CPU batches on oneDNN when `onednn`."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, onednn: bool = False, **kwargs):
        super().__init__(in_features, out_features, bias=bias, **kwargs)
        self.onednn = onednn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (
            self.onednn
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.dim() == 2
            and len(x) > 0
            and x.shape[1] == self.in_features
            and self.weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
        ):  # a wrong width gets torch's own error message
            return F.linear(x, self.weight, self.bias)
        if torch.is_grad_enabled():  # records a graph only when an input requires grad
            return _OneDNNLinear.apply(x, self.weight, self.bias)
        return _product(x, self.weight, self.bias)  # evaluation: no graph to record

    def extra_repr(self) -> str:
        return super().extra_repr() + (", onednn=True" if self.onednn else "")
