import math

import pytest
import torch

import data
from models import build_mlp
from sweep.training.train import (
    METRICS,
    TEST_METRICS,
    BestEpoch,
    Diverged,
    eval_epochs,
    evaluate,
    fit,
    make_optimizer,
    pick_device,
    seed_everything,
    selection_error,
    train_eval_indices,
)


def _train(root, seed, epochs=2, precision="fp32", lr=1e-3):
    seed_everything(seed)
    splits = data.load_splits("mnist", root, val_size=100, split_seed=0, verify=False, download=False)
    model = build_mlp(hidden_sizes=[64, 64], drop_prob=0.3)
    opt = make_optimizer("adam", model.parameters(), lr)
    hist = list(
        fit(model, opt, splits, epochs=epochs, batch_size=50, seed=seed, precision=precision, train_eval_size=200)
    )
    for h in hist:  # a wall time, the one metric a seed does not fix
        assert h.pop("eval_seconds") > 0
    return hist


def test_same_seed_same_metrics_on_cpu(tiny_root):
    torch.set_num_threads(1)
    a, b = _train(tiny_root, 0), _train(tiny_root, 0)  # seed 0 is a seed like any other
    assert a == b
    c = _train(tiny_root, 1)
    assert c != a


def test_metrics_per_epoch_and_learning(tiny_root):
    hist = _train(tiny_root, 3, epochs=3)
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    for h in hist:
        assert set(h) >= {"train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "gap", "fit_loss"}
        assert h["gap"] == pytest.approx(h["train_acc"] - h["test_acc"])
    assert hist[-1]["test_acc"] > 0.5  # learnable synthetic data: far above 10 % chance


def test_bf16_autocast_runs(tiny_root):
    hist = _train(tiny_root, 3, epochs=1, precision="bf16")
    assert 0 <= hist[0]["test_acc"] <= 1


def test_divergence_stops_at_once(tiny_root):
    with pytest.raises(Diverged):
        _train(tiny_root, 0, epochs=3, lr=1e12)


def test_evaluate_uses_eval_mode_and_restores_train_mode():
    m = build_mlp(hidden_sizes=[32], drop_prob=0.9)
    m.train()
    x, y = torch.rand(100, 784), torch.randint(0, 10, (100,))
    l1, a1 = evaluate(m, x, y)
    l2, a2 = evaluate(m, x, y)
    assert l1.item() == l2.item() and a1.item() == a2.item()
    assert m.training


def test_pick_device():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else pick_device("auto").type)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="trainer.device=cuda"):
            pick_device("cuda")


# ----------------------------------------------------------------------------- issue 10: selection, fp32 eval, cadence


def _setup(root, seed=0, split_seed=0, val_size=100):
    seed_everything(seed)
    splits = data.load_splits("mnist", root, val_size=val_size, split_seed=split_seed, verify=False, download=False)
    model = build_mlp(hidden_sizes=[64, 64], drop_prob=0.3)
    return splits, model, make_optimizer("adam", model.parameters(), 1e-3)


def test_val_gap_is_train_minus_val_and_gap_stays_train_minus_test(tiny_root):
    for h in _train(tiny_root, 3, epochs=2):
        assert h["val_gap"] == pytest.approx(h["train_acc"] - h["val_acc"])
        assert h["gap"] == pytest.approx(h["train_acc"] - h["test_acc"])


def test_no_val_gap_without_a_validation_split(tiny_root):
    splits, model, opt = _setup(tiny_root, val_size=0)
    (h,) = fit(model, opt, splits, epochs=1, batch_size=50, seed=0, train_eval_size=200)
    assert "val_gap" not in h and "val_acc" not in h and "gap" in h


def test_bf16_training_is_evaluated_in_fp32(tiny_root):
    """The metrics fit reports after bf16 training are exactly an fp32 evaluation of the same weights."""
    torch.set_num_threads(1)
    splits, model, opt = _setup(tiny_root, seed=4)
    (last,) = list(fit(model, opt, splits, epochs=1, batch_size=50, seed=4, precision="bf16", train_eval_size=200))
    loss, acc = evaluate(model, splits.test_x, splits.test_y)
    assert last["test_acc"] == acc.item() and last["test_loss"] == loss.item()
    # and an evaluation inside a caller's bf16 autocast is still fp32: bf16 logits would change the loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inner_loss, inner_acc = evaluate(model, splits.test_x, splits.test_y)
        assert model(splits.test_x[:5]).dtype == torch.bfloat16  # autocast really is on out here
    assert (inner_loss.item(), inner_acc.item()) == (loss.item(), acc.item())


def test_train_metrics_use_a_subset_fixed_by_the_split_seed_not_the_seed(tiny_root):
    torch.set_num_threads(1)
    splits, model, opt = _setup(tiny_root, seed=5, split_seed=2)
    gen = fit(model, opt, splits, epochs=2, batch_size=50, seed=5, split_seed=2, train_eval_size=200)
    first = next(gen)  # the generator pauses here: the model is as it was after epoch 1
    probe = train_eval_indices(len(splits.train_x), 200, split_seed=2)
    loss, acc = evaluate(model, splits.train_x[probe], splits.train_y[probe])
    assert (first["train_loss"], first["train_acc"]) == (loss.item(), acc.item())
    assert torch.equal(probe, train_eval_indices(len(splits.train_x), 200, split_seed=2))
    assert not torch.equal(probe, train_eval_indices(len(splits.train_x), 200, split_seed=3))
    last = next(gen)  # the last epoch: the whole training split
    loss, acc = evaluate(model, splits.train_x, splits.train_y)
    assert (last["train_loss"], last["train_acc"]) == (loss.item(), acc.item())


@pytest.mark.parametrize(
    "epochs, every, expected",
    [
        (15, 1, list(range(1, 16))),
        (15, 4, [4, 8, 12, 15]),
        (15, 5, [5, 10, 15]),
        (3, 5, [3]),
        (1, 1, [1]),
        (6, 2, [2, 4, 6]),
    ],
)
def test_eval_schedule_every_k_epochs_and_always_the_last(epochs, every, expected):
    assert eval_epochs(epochs, every) == expected


def test_fit_yields_only_evaluated_epochs(tiny_root):
    splits, model, opt = _setup(tiny_root)
    hist = list(fit(model, opt, splits, epochs=5, batch_size=50, seed=0, train_eval_size=200, eval_every=2))
    assert [h["epoch"] for h in hist] == [2, 4, 5]
    assert all({"fit_loss", "val_acc", "test_acc", "gap", "val_gap"} <= set(h) for h in hist)
    spent = [h["eval_seconds"] for h in hist]  # cumulative over the evaluated epochs
    assert 0 < spent[0] < spent[1] < spent[2]


def test_divergence_is_caught_on_an_epoch_that_is_not_evaluated(tiny_root):
    splits, model, opt = _setup(tiny_root)
    opt = make_optimizer("adam", model.parameters(), 1e12)
    with pytest.raises(Diverged, match="in epoch 1"):
        list(fit(model, opt, splits, epochs=4, batch_size=50, seed=0, train_eval_size=200, eval_every=4))


def test_best_epoch_is_the_first_with_the_highest_val_acc():
    best = BestEpoch()
    seen = [(1, 0.5), (2, 0.7), (4, 0.7), (6, 0.6), (8, math.nan)]
    news = [best.update(e, {"val_acc": v, "test_acc": v / 2, "gap": e / 100, "fit_loss": 1.0}) for e, v in seen]
    assert news == [True, True, False, False, False]
    assert best.epoch == 2 and best.metrics == {"val_acc": 0.7, "test_acc": 0.35, "gap": 0.02}  # fit_loss is not kept
    assert best.update(9, {"val_acc": 0.71}) and best.epoch == 9


def test_without_val_acc_there_is_no_best_epoch():
    best = BestEpoch()
    assert not best.update(1, {"test_acc": 0.9, "train_acc": 1.0})
    assert best.epoch is None and best.metrics == {}


@pytest.mark.parametrize(
    "objective, bad",
    [
        (["test_acc"], "test_acc reads"),
        (["test_loss"], "test_loss reads"),
        (["gap"], "gap reads"),
        (["val_acc", "gap"], "gap reads"),
        (["test_acc", "gap"], "test_acc and gap read"),
    ],
)
def test_test_metrics_may_not_select(objective, bad):
    msg = selection_error(objective)
    assert bad in msg and "the test set must not select" in msg and "use val_acc" in msg and "\n" not in msg


def test_validation_and_train_metrics_may_select():
    assert set(TEST_METRICS) < set(METRICS)
    for name in set(METRICS) - set(TEST_METRICS):
        assert selection_error([name]) is None
    assert selection_error(["val_acc", "val_gap"]) is None


@pytest.mark.parametrize("name,kwargs", [("adam", {}), ("sgd", {"momentum": 0.9, "weight_decay": 1e-4})])
def test_optimizers_step_exactly_like_torchs_own(name, kwargs):
    """make_optimizer's classes skip torch's compiler import (sweep/training/train.py `_eager`), not its arithmetic: the
    same steps from the same start give bit-identical weights, with a scheduler and zero_grad in between."""

    def train(make):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 3))
        opt = make(model.parameters())
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        for _ in range(6):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(torch.randn(16, 20)), torch.randint(0, 3, (16,))).backward()
            opt.step()
            sched.step()
        return [p.detach().clone() for p in model.parameters()], opt.state_dict()

    ours, state = train(lambda ps: make_optimizer(name, ps, 0.05, **kwargs))
    torch_cls = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[name]
    fused = {"fused": True} if name == "adam" else {}
    theirs, _ = train(lambda ps: torch_cls(ps, lr=0.05, **kwargs, **fused))
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert isinstance(make_optimizer(name, [torch.nn.Parameter(torch.ones(2))], 0.1), torch_cls)
    assert state["param_groups"][0]["lr"] == pytest.approx(0.05 * 0.5**3)


def test_a_training_step_does_not_import_torchs_compiler():
    """~0.7-1 s of every process (README "Speed"). In a fresh interpreter: build, step, zero_grad, schedule."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, torch; sys.path.insert(0, sys.argv[1]); from sweep.training.train import make_optimizer\n"
        "for name in ('adam', 'sgd'):\n"
        "    m = torch.nn.Linear(4, 2); o = make_optimizer(name, m.parameters(), 0.1, momentum=0.9)\n"
        "    s = torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1.0)\n"
        "    o.zero_grad(); m(torch.ones(3, 4)).sum().backward(); o.step(); s.step(); o.state_dict()\n"
        "print('torch._dynamo' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).resolve().parents[1])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
