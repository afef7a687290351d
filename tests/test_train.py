import math

import pytest
import torch

import data
from models import build_mlp
from sweep.train import Diverged, evaluate, fit, make_optimizer, pick_device, seed_everything


def _train(root, seed, epochs=2, precision="fp32", lr=1e-3):
    seed_everything(seed)
    splits = data.load_splits("mnist", root, val_size=100, seed=seed, verify=False, download=False)
    model = build_mlp(hidden_sizes=[64, 64], drop_prob=0.3)
    opt = make_optimizer("adam", model.parameters(), lr)
    return list(fit(model, opt, splits, epochs=epochs, batch_size=50, seed=seed, precision=precision,
                    train_eval_size=200))


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
