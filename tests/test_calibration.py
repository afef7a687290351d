"""Calibration metrics against hand-computed values, and MC dropout against explicit dropout passes."""

import math

import pytest
import torch
import torch.nn.functional as F

from models import build_mlp
from sweep.training import calibration as cal

# Five samples, three classes (rows are the predicted probabilities):
#   s1 [0.70, 0.20, 0.10] y=0  argmax 0, right  confidence 0.70  bin 10 = (10/15, 11/15] = (0.667, 0.733]
#   s2 [0.20, 0.55, 0.25] y=2  argmax 1, wrong  confidence 0.55  bin 8  = (0.533, 0.600]
#   s3 [0.10, 0.05, 0.85] y=2  argmax 2, right  confidence 0.85  bin 12 = (0.800, 0.867]
#   s4 [0.50, 0.25, 0.25] y=1  argmax 0, wrong  confidence 0.50  bin 7  = (0.467, 0.533]
#   s5 [0.72, 0.18, 0.10] y=1  argmax 0, wrong  confidence 0.72  bin 10
P = torch.tensor([[0.70, 0.20, 0.10], [0.20, 0.55, 0.25], [0.10, 0.05, 0.85], [0.50, 0.25, 0.25], [0.72, 0.18, 0.10]])
Y = torch.tensor([0, 2, 2, 1, 1])


def test_accuracy_by_hand():
    assert cal.accuracy(P, Y) == pytest.approx(2 / 5)  # s1 and s3


def test_nll_by_hand():
    # -(ln 0.70 + ln 0.25 + ln 0.85 + ln 0.25 + ln 0.18) / 5
    # = (0.356675 + 1.386294 + 0.162519 + 1.386294 + 1.714798) / 5 = 5.006581 / 5 = 1.001316
    assert cal.nll(P, Y) == pytest.approx(1.001316, abs=1e-6)


def test_brier_by_hand():
    # sum_k (p_k - y_k)^2 per sample, y one-hot:
    #   s1 0.3^2 + 0.2^2 + 0.1^2          = 0.09 + 0.04 + 0.01      = 0.14
    #   s2 0.2^2 + 0.55^2 + 0.75^2        = 0.04 + 0.3025 + 0.5625  = 0.905
    #   s3 0.1^2 + 0.05^2 + 0.15^2        = 0.01 + 0.0025 + 0.0225  = 0.035
    #   s4 0.5^2 + 0.75^2 + 0.25^2        = 0.25 + 0.5625 + 0.0625  = 0.875
    #   s5 0.72^2 + 0.82^2 + 0.1^2        = 0.5184 + 0.6724 + 0.01  = 1.2008
    # mean = 3.1558 / 5 = 0.63116 (not divided by the 3 classes)
    assert cal.brier(P, Y) == pytest.approx(0.63116, abs=1e-6)


def test_ece_by_hand():
    # bin 10: s1 (right, 0.70) and s5 (wrong, 0.72): accuracy 0.5, confidence 0.71 -> 2/5 * 0.21 = 0.084
    # bin 8: s2 wrong at 0.55 -> 1/5 * 0.55 = 0.11;  bin 12: s3 right at 0.85 -> 1/5 * 0.15 = 0.03
    # bin 7: s4 wrong at 0.50 -> 1/5 * 0.50 = 0.10;  ECE = 0.084 + 0.11 + 0.03 + 0.10 = 0.324
    assert cal.ece(P, Y) == pytest.approx(0.324, abs=1e-6)
    r = cal.reliability(P, Y)
    assert {i: c for i, c in enumerate(r["count"]) if c} == {7: 1, 8: 1, 10: 2, 12: 1}
    assert r["accuracy"][10] == 0.5 and r["confidence"][10] == pytest.approx(0.71)
    assert len(r["lower"]) == len(r["upper"]) == cal.ECE_BINS == 15
    assert cal.scores(P, Y) == pytest.approx({"acc": 0.4, "nll": 1.001316, "ece": 0.324, "brier": 0.63116}, abs=1e-6)


def test_bins_are_closed_on_the_right():
    # 4 bins, edges 0, 0.25, 0.5, 0.75, 1 (exact in binary): a confidence on an edge goes to the bin below it
    probs = torch.tensor([[0.5, 0.5], [0.75, 0.25], [1.0, 0.0], [0.6, 0.4]])
    y = torch.tensor([0, 0, 0, 1])
    r = cal.reliability(probs, y, bins=4)
    assert r["count"] == [0, 1, 2, 1]  # 0.5 -> (0.25, 0.5]; 0.75 and 0.6 -> (0.5, 0.75]; 1.0 -> (0.75, 1]
    # bin 2: 0.75 right, 0.6 wrong: |0.5 - 0.675| * 2/4; bin 1: |1 - 0.5| / 4; bin 3: |1 - 1| / 4
    assert cal.ece(probs, y, bins=4) == pytest.approx(0.175 * 0.5 + 0.5 * 0.25)


def test_perfect_one_hot_predictions_score_zero():
    y = torch.tensor([2, 0, 1])
    p = F.one_hot(y, 3).float()
    assert cal.scores(p, y) == {"acc": 1.0, "nll": 0.0, "ece": 0.0, "brier": 0.0}


def test_nll_of_a_zero_probability_is_large_but_finite():
    v = cal.nll(torch.tensor([[1.0, 0.0]]), torch.tensor([1]))
    assert math.isfinite(v) and v == pytest.approx(-math.log(torch.finfo(torch.float32).tiny))


def _model(drop=0.5, inp=0.2):
    torch.manual_seed(0)
    return build_mlp(in_features=20, hidden_sizes=[16, 16], num_classes=5, drop_prob=drop, input_drop_prob=inp)


def _explicit_passes(model, x, T, batch, generator=None):
    """T dropout passes by hand: train mode, the same batches in the same order."""
    model.train()
    for d in model:
        if isinstance(d, torch.nn.Dropout):
            d.generator = generator
    with torch.no_grad():
        passes = [torch.cat([F.softmax(model(x[i : i + batch]), 1) for i in range(0, len(x), batch)]) for _ in range(T)]
    for d in model:
        if isinstance(d, torch.nn.Dropout):
            d.generator = None
    model.eval()
    return passes


@pytest.mark.parametrize("batch", [7, 5000])
def test_mc_average_is_the_mean_of_explicit_passes_for_a_fixed_generator(batch):
    model, x, T = _model(), torch.rand(30, 20), 6
    model.eval()
    avgs = list(cal.mc_predict(model, x, T, generator=torch.Generator().manual_seed(123), batch=batch))
    passes = _explicit_passes(model, x, T, batch, torch.Generator().manual_seed(123))
    assert len(avgs) == T
    for t in range(1, T + 1):
        assert torch.allclose(avgs[t - 1], torch.stack(passes[:t]).mean(0), atol=1e-6)
    assert not torch.allclose(passes[0], passes[1])  # dropout was on: the passes differ
    assert not torch.allclose(avgs[-1], cal.predict_proba(model, x))  # and MC is not weight scaling here


def test_mc_with_the_global_rng_matches_explicit_passes_after_the_same_seed():
    model, x = _model(), torch.rand(30, 20)
    torch.manual_seed(5)
    avgs = list(cal.mc_predict(model, x, 3, batch=10))
    torch.manual_seed(5)
    passes = _explicit_passes(model, x, 3, 10)
    assert torch.allclose(avgs[-1], torch.stack(passes).mean(0), atol=1e-6)


def test_t_equal_one_is_one_dropout_pass():
    model, x = _model(), torch.rand(30, 20)
    (avg,) = cal.mc_predict(model, x, 1, generator=torch.Generator().manual_seed(9))
    (one,) = _explicit_passes(model, x, 1, cal.EVAL_BATCH, torch.Generator().manual_seed(9))
    assert torch.equal(avg, one)


def test_mc_is_repeatable_leaves_the_global_rng_and_the_model_alone():
    model, x = _model(), torch.rand(30, 20)
    model.train()  # e.g. called between epochs: the caller's mode survives
    state = torch.get_rng_state()
    a = list(cal.mc_predict(model, x, 4, generator=torch.Generator().manual_seed(1)))
    b = list(cal.mc_predict(model, x, 4, generator=torch.Generator().manual_seed(1)))
    c = list(cal.mc_predict(model, x, 4, generator=torch.Generator().manual_seed(2)))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(u, v) for u, v in zip(a, b)) and not torch.equal(a[-1], c[-1])
    assert all(m.training for m in model.modules())
    assert all(d.generator is None for d in model if isinstance(d, torch.nn.Dropout))


def test_mc_of_a_network_without_dropout_is_weight_scaling():
    model, x = _model(drop=0.0, inp=0.0), torch.rand(30, 20)
    curve, avg = cal.mc_curve(model, x, torch.zeros(30, dtype=torch.long), 3, generator=torch.Generator())
    assert torch.allclose(avg, cal.predict_proba(model, x), atol=1e-6)
    assert [p["t"] for p in curve] == [1, 2, 3] and set(curve[0]) == {"t", "acc", "nll", "ece", "brier"}


def test_mc_curve_scores_each_running_average():
    model, x, y = _model(), torch.rand(40, 20), torch.randint(0, 5, (40,))
    curve, _ = cal.mc_curve(model, x, y, 4, generator=torch.Generator().manual_seed(3), batch=16)
    avgs = list(cal.mc_predict(model, x, 4, generator=torch.Generator().manual_seed(3), batch=16))
    assert [{k: v for k, v in p.items() if k != "t"} for p in curve] == [cal.scores(a, y) for a in avgs]


@pytest.mark.parametrize("T", [0, -1, 2.5, True])
def test_mc_needs_at_least_one_pass(T):
    with pytest.raises(ValueError, match="T="):
        cal.mc_predict(_model(), torch.rand(3, 20), T)  # at the call, before any pass
