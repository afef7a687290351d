"""Max-norm (Srivastava et al. 2014, sec. 5.1): every hidden unit's incoming weight row has norm <= c after a step."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import apply_max_norm, build_mlp


def _linears(m):
    return [l for l in m if isinstance(l, nn.Linear)]


def test_every_hidden_row_is_inside_the_ball_after_a_step_and_rows_inside_are_untouched():
    torch.manual_seed(0)
    m = build_mlp(in_features=30, hidden_sizes=[20, 20, 20], num_classes=4, drop_prob=0.5)
    c = 1.5
    with torch.no_grad():
        for l in _linears(m):
            l.weight.mul_(torch.where(torch.rand(l.out_features, 1) < 0.5, 10.0, 0.1))  # some rows far out, some in
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    F.cross_entropy(m(torch.randn(64, 30)), torch.randint(0, 4, (64,))).backward()
    opt.step()
    before = [(l.weight.clone(), l.bias.clone()) for l in _linears(m)]
    apply_max_norm(m, c)
    hidden, out = _linears(m)[:-1], _linears(m)[-1]
    n_out = n_in = 0
    for l, (w0, b0) in zip(hidden, before):
        norms0, norms = w0.norm(dim=1), l.weight.norm(dim=1)
        assert (norms <= c).all(), norms.max()
        inside = norms0 <= c
        assert torch.equal(l.weight[inside], w0[inside])  # bit for bit
        outside = ~inside
        assert torch.allclose(
            norms[outside], torch.full_like(norms[outside], c), rtol=1e-5
        )  # projected onto the sphere
        # a projection: the direction is kept (row = w0 * c / |w0|)
        assert torch.allclose(l.weight[outside], w0[outside] * (c / norms0[outside])[:, None], rtol=1e-5)
        assert torch.equal(l.bias, b0)  # the bias is not part of the incoming weight vector
        n_out, n_in = n_out + int(outside.sum()), n_in + int(inside.sum())
    assert n_out > 0 and n_in > 0  # the test saw both kinds of row
    assert torch.equal(out.weight, before[-1][0])  # the output layer is not constrained
    assert (out.weight.norm(dim=1) > c).any()
    after = [l.weight.clone() for l in hidden]
    apply_max_norm(m, c)  # every row is inside now: a second call changes nothing
    assert all(torch.equal(a, l.weight) for a, l in zip(after, hidden))


def test_lab_sized_layers_read_at_most_c_in_float32():
    # 784- and 512-wide rows, norms up to 50, several c: the recomputed norm never rounds above c
    torch.manual_seed(1)
    m = build_mlp(drop_prob=0.5)
    with torch.no_grad():
        for l in _linears(m):
            l.weight.mul_(torch.rand(l.out_features, 1) * 50)
    for c in (0.3, 1.0, 2.0, 3.5, 4.0):
        apply_max_norm(m, c)
        assert all((l.weight.norm(dim=1) <= c).all() for l in _linears(m)[:-1])


@pytest.mark.parametrize("c", [0.0, -1.0, float("nan")])
def test_max_norm_must_be_positive(c):
    with pytest.raises(ValueError, match="max_norm"):
        apply_max_norm(build_mlp(hidden_sizes=[8]), c)
