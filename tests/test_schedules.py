"""Learning-rate schedules: the rate of each optimizer step against hand-computed values."""

import math

import pytest
import torch

from sweep.training.schedules import SCHEDULES, make_scheduler

LR, EPOCHS, STEPS = 0.1, 4, 10  # 40 optimizer steps in all


def rates(name, **kw):
    """The learning rate every optimizer step s = 0..39 ran with (scheduler stepped after each step)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    sched = make_scheduler(name, opt, epochs=EPOCHS, steps_per_epoch=STEPS, **kw)
    out = []
    for _ in range(EPOCHS * STEPS):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_none_is_constant():
    assert rates("none") == pytest.approx([LR] * 40)


def test_cosine():
    r = rates("cosine")
    assert r[0] == pytest.approx(0.1)
    assert r[10] == pytest.approx(0.1 * (1 + math.cos(math.pi / 4)) / 2)  # a quarter through: 0.0853553
    assert r[20] == pytest.approx(0.05)  # half way: lr / 2
    assert r[30] == pytest.approx(0.1 * (1 + math.cos(3 * math.pi / 4)) / 2)  # 0.0146447
    assert r[39] == pytest.approx(0.1 * (1 + math.cos(39 * math.pi / 40)) / 2)  # 0.000154: towards 0
    assert all(a > b for a, b in zip(r, r[1:]))


def test_cosine_after_warmup():
    r = rates("cosine", warmup_epochs=1)  # W = 10 steps, then cosine over the remaining 30
    assert r[0] == pytest.approx(0.01)  # lr * 1/10
    assert r[4] == pytest.approx(0.05)  # lr * 5/10
    assert r[9] == pytest.approx(0.1) and r[10] == pytest.approx(0.1)  # end of warm-up; cosine starts at lr
    assert r[25] == pytest.approx(0.05)  # half way through the 30 cosine steps


def test_step_counts_epochs_from_the_start():
    r = rates("step", step_size=2, gamma=0.1)
    assert r[:20] == pytest.approx([0.1] * 20) and r[20:] == pytest.approx([0.01] * 20)
    r = rates("step", step_size=1, gamma=0.5)
    assert [r[s] for s in (0, 9, 10, 20, 30, 39)] == pytest.approx([0.1, 0.1, 0.05, 0.025, 0.0125, 0.0125])


def test_step_with_warmup_and_none_with_warmup():
    r = rates("step", step_size=2, gamma=0.1, warmup_epochs=1)
    assert [r[s] for s in (0, 9, 19, 20)] == pytest.approx([0.01, 0.1, 0.1, 0.01])
    r = rates("none", warmup_epochs=2)  # W = 20: lr * (s + 1) / 20
    assert [r[s] for s in (0, 9, 19, 20, 39)] == pytest.approx([0.005, 0.05, 0.1, 0.1, 0.1])


def test_unknown_schedule_and_too_long_warmup_are_refused():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    with pytest.raises(ValueError, match="linear.*none, cosine, step"):
        make_scheduler("linear", opt, epochs=4, steps_per_epoch=10)
    with pytest.raises(ValueError, match="warmup_epochs=4"):
        make_scheduler("cosine", opt, epochs=4, steps_per_epoch=10, warmup_epochs=4)
    assert SCHEDULES == ("none", "cosine", "step")
