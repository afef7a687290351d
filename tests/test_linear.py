"""models/linear.py: fp32 CPU products on oneDNN agree with torch's own to float rounding, in both passes."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import build_mlp
from models.linear import CPU_MATMULS, Linear, onednn_available, use_onednn

needs_onednn = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN")


def pair(in_f=784, out_f=512, bias=True, seed=0):
    torch.manual_seed(seed)
    ours = Linear(in_f, out_f, bias=bias, onednn=True)
    ref = nn.Linear(in_f, out_f, bias=bias)
    ref.load_state_dict(ours.state_dict())  # same parameters, same state-dict keys
    return ours, ref


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
def test_forward_and_all_gradients_match_torch_to_float_rounding(bias):
    ours, ref = pair(bias=bias)
    x = torch.randn(100, 784)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), ref(xb)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    assert ya.grad_fn is not None and type(ya.grad_fn).__name__ == "_OneDNNLinearBackward"  # oneDNN did run
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-5)
    if bias:
        torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-5, atol=1e-5)
    else:
        assert ours.bias is None


@needs_onednn
def test_an_input_that_needs_no_gradient_gets_none_and_frozen_weights_too():
    ours, ref = pair(in_f=20, out_f=7)
    ours.weight.requires_grad_(False)
    x = torch.randn(5, 20)
    ours(x).sum().backward()
    assert ours.weight.grad is None and ours.bias.grad is not None
    torch.testing.assert_close(ours.bias.grad, torch.full((7,), 5.0))


@needs_onednn
def test_weights_changed_in_place_are_read_again():
    """An optimizer updates weights in place; nothing may be cached from an earlier call."""
    ours, ref = pair(in_f=64, out_f=32)
    x = torch.randn(10, 64)
    before = ours(x)
    with torch.no_grad():
        ours.weight.mul_(-2.0)
        ref.weight.mul_(-2.0)
    after = ours(x)
    torch.testing.assert_close(after, ref(x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before, after)


@needs_onednn
def test_evaluation_runs_on_onednn_without_a_graph_and_repeats_exactly():
    ours, ref = pair()
    x = torch.randn(50, 784)
    with torch.inference_mode():
        a, b = ours(x), ours(x)
    assert a.grad_fn is None and torch.equal(a, b)
    torch.testing.assert_close(a, ref(x).detach(), rtol=1e-5, atol=1e-5)


def test_autocast_other_dtypes_and_odd_shapes_take_torchs_own_path_bit_for_bit():
    ours, ref = pair(in_f=16, out_f=8)
    x = torch.randn(4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 training: torch's path (oneDNN bf16 already)
        ya, yb = ours(x), ref(x)
    assert ya.dtype == torch.bfloat16 and torch.equal(ya, yb)
    assert torch.equal(ours(x[:0]), ref(x[:0]))  # an empty batch
    x3 = torch.randn(2, 4, 16)  # not a 2-D batch
    assert torch.equal(ours(x3), ref(x3))
    off = Linear(16, 8, onednn=False)
    off.load_state_dict(ref.state_dict())
    assert torch.equal(off(x), ref(x)) and off(x).grad_fn.name() == ref(x).grad_fn.name()


def test_blas_builds_torchs_own_network_bit_for_bit():
    torch.manual_seed(3)
    ours = build_mlp(drop_prob=0.0, cpu_matmul="blas")
    torch.manual_seed(3)
    auto = build_mlp(drop_prob=0.0)  # same init draws whatever the product path
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), auto.state_dict().values()))
    assert not any(m.onednn for m in ours if isinstance(m, Linear))
    assert all(m.onednn for m in auto if isinstance(m, Linear)) == onednn_available()
    x = torch.randn(8, 784)
    plain = nn.Sequential(*[nn.Linear(m.in_features, m.out_features) if isinstance(m, Linear) else m for m in ours])
    plain.load_state_dict(ours.state_dict())
    assert torch.equal(ours(x), plain(x))


@needs_onednn
def test_a_training_step_matches_torchs_closely_and_repeats_exactly():
    """Two identical seeded fits on oneDNN give identical weights; against BLAS they agree to rounding."""

    def train(cpu_matmul):
        torch.manual_seed(0)
        m = build_mlp(hidden_sizes=(64, 64), drop_prob=0.3, cpu_matmul=cpu_matmul)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(1)
        x, y = torch.rand(64, 784, generator=g), torch.randint(0, 10, (64,), generator=g)
        for _ in range(5):
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            opt.step()
        return [p.detach().clone() for p in m.parameters()]

    a, b, ref = train("onednn"), train("onednn"), train("blas")
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    for u, v in zip(a, ref):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-5)


def test_unknown_choice_is_refused_and_auto_follows_the_build():
    with pytest.raises(ValueError, match="cpu_matmul='mkl' is unknown; allowed: auto, onednn, blas"):
        use_onednn("mkl")
    assert use_onednn("auto") == onednn_available() and use_onednn("blas") is False
    assert CPU_MATMULS == ("auto", "onednn", "blas")


def test_a_wrong_input_width_gets_torchs_own_message():
    """oneDNN's own error ("could not create a primitive descriptor") says nothing a user can act on."""
    ours, _ = pair(in_f=16, out_f=8)
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        ours(torch.randn(4, 15))
