import pytest
import torch
from torch import nn

from models import build_mlp


def dropouts(model):
    return [m for m in model if isinstance(m, nn.Dropout)]


def test_lab_architecture():
    m = build_mlp(drop_prob=0.3)
    linears = [l for l in m if isinstance(l, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [
        (784, 512),
        (512, 512),
        (512, 512),
        (512, 512),
        (512, 10),
    ]
    kinds = [type(x).__name__ for x in m]
    assert kinds == ["Linear", "ReLU", "Dropout"] * 4 + ["Linear"]
    assert [d.p for d in dropouts(m)] == [0.3] * 4


def test_per_layer_rates_override_shared_rate_and_input_rate_comes_first():
    m = build_mlp(drop_prob=0.3, input_drop_prob=0.2, layer_drop_probs=[0.1, None, 0.5, None])
    assert isinstance(m[0], nn.Dropout) and m[0].p == 0.2
    assert [d.p for d in dropouts(m)] == [0.2, 0.1, 0.3, 0.5, 0.3]
    assert m.drop_probs == (0.2, 0.1, 0.3, 0.5, 0.3)


def test_zero_rate_adds_no_dropout_module():
    m = build_mlp(drop_prob=0.0, layer_drop_probs=[None, 0.4, None, None])
    assert [d.p for d in dropouts(m)] == [0.4]
    assert dropouts(build_mlp(drop_prob=0.0)) == []


@pytest.mark.parametrize(
    "kwargs",
    [dict(drop_prob=1.0), dict(drop_prob=-0.1), dict(input_drop_prob=float("nan")), dict(layer_drop_probs=[0.1, 0.2])],
)
def test_bad_rates_are_refused(kwargs):
    with pytest.raises(ValueError):
        build_mlp(**kwargs)


def test_dropout_only_in_train_mode_with_inverted_scaling():
    torch.manual_seed(0)
    m = build_mlp(hidden_sizes=[64], drop_prob=0.5)
    x = torch.rand(256, 784)
    m.eval()
    assert torch.equal(m(x), m(x)), "eval mode must be deterministic (dropout off)"
    m.train()
    assert not torch.equal(m(x), m(x)), "train mode must drop units"
    # inverted dropout: kept activations are scaled by 1/(1-p), so the mean activation is preserved
    drop = dropouts(m)[0]
    h = torch.ones(2000, 64)
    out = drop(h)
    kept = out[out != 0]
    assert torch.allclose(kept, torch.full_like(kept, 2.0))
    assert abs(out.mean().item() - 1.0) < 0.05
    assert abs((out == 0).float().mean().item() - 0.5) < 0.02  # about p of the units are dropped


def test_xavier_uniform_bounds():
    m = build_mlp()
    w = m[0].weight
    bound = (6 / (784 + 512)) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound


def widths(model):
    return [l.out_features for l in model if isinstance(l, nn.Linear)][:-1]


@pytest.mark.parametrize("p, expected", [(0.0, [512] * 4), (0.5, [1024] * 4), (0.2, [640] * 4), (0.3, [731] * 4)])
def test_constant_capacity_widens_each_hidden_layer_by_one_over_keep(p, expected):
    # 512 / 0.7 = 731.43 -> 731; the expected number of kept units stays 512 in every layer
    m = build_mlp(drop_prob=p, constant_capacity=True)
    assert widths(m) == expected and list(m.hidden_sizes) == expected
    linears = [l for l in m if isinstance(l, nn.Linear)]
    assert linears[0].in_features == 784 and linears[-1].out_features == 10  # input and output keep their widths


def test_constant_capacity_uses_each_layers_own_rate_and_never_widens_the_input():
    m = build_mlp(
        hidden_sizes=[100, 200, 300],
        drop_prob=0.5,
        input_drop_prob=0.2,
        layer_drop_probs=[0.0, None, 0.75],
        constant_capacity=True,
    )
    assert widths(m) == [100, 400, 1200]
    linears = [l for l in m if isinstance(l, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(784, 100), (100, 400), (400, 1200), (1200, 10)]
    assert m.drop_probs == (0.2, 0.0, 0.5, 0.75)


def test_constant_capacity_at_p0_is_the_same_network():
    torch.manual_seed(3)
    plain = build_mlp(drop_prob=0.0)
    torch.manual_seed(3)
    wide = build_mlp(drop_prob=0.0, constant_capacity=True)
    assert [type(x) for x in plain] == [type(x) for x in wide]
    for a, b in zip(plain.state_dict().values(), wide.state_dict().values()):
        assert torch.equal(a, b)
    assert widths(build_mlp(drop_prob=0.3)) == [512] * 4  # off by default: the lab's widths


# keep_mask (models/mlp.py): 16 random bits per unit, four units to a 64-bit word, ties drawn again.
N_MASK = 2_000_000


@pytest.mark.parametrize("p", [0.3, 0.5, 0.8, 0.1234567])
def test_keep_mask_drops_each_unit_with_probability_p(p):
    from models.mlp import keep_mask

    torch.manual_seed(1)
    mask = keep_mask(torch.Size((N_MASK,)), 1.0 - p, torch.device("cpu"))
    sigma = (p * (1 - p) / N_MASK) ** 0.5  # binomial standard error of the drop rate: 3.2e-4 at p=0.3
    assert abs((~mask).float().mean().item() - p) < 5 * sigma
    # each position within a word (units share 64-bit draws 4 at a time) has the rate too
    per_slot = (~mask).view(-1, 4).float().mean(0)
    assert (per_slot - p).abs().max().item() < 5 * (p * (1 - p) / (N_MASK / 4)) ** 0.5


def test_keep_mask_units_are_uncorrelated():
    """Units sharing a 64-bit word (0-3), neighbours across words (3-4) and far apart: Pearson r ~ 0,
    |r| < 5/sqrt(n) (n = 250,000 rows: 0.01)."""
    from models.mlp import keep_mask

    torch.manual_seed(2)
    m = keep_mask(torch.Size((250_000, 8)), 0.7, torch.device("cpu")).float()
    r = torch.corrcoef(m.T)
    off = r[~torch.eye(8, dtype=torch.bool)]
    assert off.abs().max().item() < 5 / 250_000**0.5


def test_keep_mask_ties_with_the_threshold_are_kept_with_the_fractional_probability():
    """keep * 2**16 = 40000.5: u + 2**15 < 40000 kept, > 40000 dropped, == 40000 (a tie) kept half the time. The
    same seed gives the same 16-bit draws, so the test sees u and checks each class of unit."""
    from models.mlp import keep_mask

    n, keep = 4_000_000, 40000.5 / 2**16
    torch.manual_seed(3)
    u = torch.empty(n // 4, dtype=torch.int64).random_(-(2**63), None).view(torch.int16).int() + 2**15
    torch.manual_seed(3)
    mask = keep_mask(torch.Size((n,)), keep, torch.device("cpu"))
    assert mask[u < 40000].all() and not mask[u > 40000].any()
    ties = mask[u == 40000]
    assert len(ties) > 20  # n / 2**16 = 61 expected
    assert 0 < ties.sum().item() < len(ties)  # both outcomes occur: P(all 61 the same) ~ 2**-60


def test_dropout_module_matches_its_mask_and_scale():
    from models.mlp import Dropout

    torch.manual_seed(4)
    out = Dropout(0.25)(torch.ones(1000, 100))
    assert set(out.unique().tolist()) <= {0.0, torch.tensor(1 / 0.75).item()}  # 1/(1-p) in float32
    assert abs((out == 0).float().mean().item() - 0.25) < 5 * (0.25 * 0.75 / 100_000) ** 0.5
