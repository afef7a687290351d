"""Issue 12 wired into training: fit's max-norm and per-batch schedule, the final evaluation a run records,
and MLflow's curve logging (record.log_steps)."""

import math

import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

import data
from models import build_mlp, max_row_norm
from sweep import record
from sweep.config import TrackingConf
from sweep.training import calibration as cal
from sweep.training.schedules import make_scheduler
from sweep.training.train import METRICS, fit, make_optimizer, seed_everything


def _fit(root, epochs=3, max_norm=None, make_sched=None, lr=0.5, optimizer="sgd"):
    """The tiny set: 600 training images - 100 validation = 500, batch 50 -> 10 steps per epoch."""
    seed_everything(0)
    splits = data.load_splits("mnist", root, val_size=100, split_seed=0, verify=False, download=False)
    model = build_mlp(hidden_sizes=[64, 64, 64], drop_prob=0.5, input_drop_prob=0.2)
    opt = make_optimizer(optimizer, model.parameters(), lr, momentum=0.9)
    hist = list(
        fit(
            model,
            opt,
            splits,
            epochs=epochs,
            batch_size=50,
            seed=0,
            train_eval_size=200,
            max_norm=max_norm,
            make_sched=make_sched,
        )
    )
    return model, hist, splits


def _row_norms(model):
    return [layer.weight.norm(dim=1) for layer in model if isinstance(layer, nn.Linear)]


def test_max_norm_keeps_every_hidden_row_inside_the_ball(tiny_root):
    torch.set_num_threads(1)
    free, _, _ = _fit(tiny_root)
    free_hidden = _row_norms(free)[:-1]
    c = 0.9 * min(n.max().item() for n in free_hidden)  # binds in every hidden layer of the free run
    assert max_row_norm(free) == pytest.approx(max(n.max().item() for n in free_hidden))
    capped, hist, _ = _fit(tiny_root, max_norm=c)
    *hidden, out = _row_norms(capped)
    for norms in hidden:
        assert (norms <= c).all(), norms.max()
        assert norms.max() > 0.99 * c  # the constraint was active, not a model that never got there
    assert max_row_norm(capped) <= c
    assert out.max() > c  # the output layer is left free (models/maxnorm.py says why)
    assert all(math.isfinite(h["fit_loss"]) for h in hist)


def test_max_norm_is_applied_after_every_step_not_only_at_the_end(tiny_root):
    """The hidden row norms seen as each optimizer step starts: after the first, max-norm has run in between."""
    seed_everything(0)
    splits = data.load_splits("mnist", tiny_root, val_size=100, split_seed=0, verify=False, download=False)
    model = build_mlp(hidden_sizes=[32, 32], drop_prob=0.5)
    norms_after_step = []
    opt = torch.optim.SGD(model.parameters(), lr=5.0)
    hook = opt.register_step_pre_hook(lambda o, a, k: norms_after_step.append(max_row_norm(model)))
    list(fit(model, opt, splits, epochs=2, batch_size=100, seed=0, train_eval_size=200, max_norm=0.5))
    hook.remove()
    assert len(norms_after_step) == 10  # 500 images / 100 per batch * 2 epochs
    assert norms_after_step[0] > 0.5  # the initial weights are outside the ball (Xavier: about 1 per row)
    assert all(n <= 0.5 for n in norms_after_step[1:]), norms_after_step


def test_the_schedule_steps_per_batch_and_lr_is_the_rate_of_the_epochs_last_step(tiny_root):
    base = 0.1
    sched = lambda opt, steps: make_scheduler("cosine", opt, epochs=3, steps_per_epoch=steps, warmup_epochs=1)
    _, hist, _ = _fit(tiny_root, make_sched=sched, lr=base)
    # S = 30 steps, W = 10; the last step of epoch e is s = 10e - 1:
    #   e=1 s=9   warm-up (9+1)/10 = 1                      -> 0.1
    #   e=2 s=19  (1 + cos(pi * 9/20)) / 2 = (1 + 0.15643447) / 2 = 0.57821723 -> 0.057821723
    #   e=3 s=29  (1 + cos(pi * 19/20)) / 2 = (1 - 0.98768834) / 2 = 0.00615583 -> 0.000615583
    assert [h["lr"] for h in hist] == pytest.approx([0.1, 0.057821723, 0.000615583], rel=1e-6)


def test_without_a_schedule_lr_is_the_constant_rate(tiny_root):
    _, hist, _ = _fit(tiny_root, epochs=2, lr=0.05)
    assert [h["lr"] for h in hist] == [0.05, 0.05]


def test_the_final_evaluation_names_stay_out_of_the_per_epoch_metrics_and_objectives(tiny_root):
    _, hist, _ = _fit(tiny_root, epochs=1)
    final = {
        "test_nll",
        "test_ece",
        "test_brier",
        "mc_test_acc",
        "mc_test_nll",
        "mc_test_ece",
        "mc_test_brier",
        "max_row_norm",
    }
    assert not final & set(hist[0]) and not final & set(METRICS)


def test_final_evaluation_weight_scaling_and_mc(tiny_root):
    model, _, splits = _fit(tiny_root, epochs=2)
    x, y = splits.test_x, splits.test_y
    metrics, curve, bins = cal.final_evaluation(model, x, y, 0)
    ws = cal.scores(cal.predict_proba(model, x), y)
    assert metrics == {"test_nll": ws["nll"], "test_ece": ws["ece"], "test_brier": ws["brier"]}
    assert curve == [] and list(bins) == ["weight_scaling"] and sum(bins["weight_scaling"]["count"]) == len(y)

    metrics, curve, bins = cal.final_evaluation(model, x, y, 4, generator=torch.Generator().manual_seed(7))
    again, _, _ = cal.final_evaluation(model, x, y, 4, generator=torch.Generator().manual_seed(7))
    assert metrics == again  # a seeded generator: the same figures every time
    assert [row["t"] for row in curve] == [1, 2, 3, 4]
    explicit, _ = cal.mc_curve(model, x, y, 4, generator=torch.Generator().manual_seed(7))
    assert {k: metrics[f"mc_test_{k}"] for k in ("acc", "nll", "ece", "brier")} == {
        k: v for k, v in explicit[-1].items() if k != "t"
    }
    assert metrics["test_nll"] == ws["nll"] and metrics["mc_test_nll"] != ws["nll"]  # dropout on: not weight scaling
    assert list(bins) == ["weight_scaling", "mc"] and sum(bins["mc"]["count"]) == len(y)


def test_log_steps_writes_a_curve_longer_than_one_mlflow_batch(tmp_path):
    tracking = TrackingConf(
        uri=f"sqlite:///{tmp_path}/mlflow.db",
        artifact_location=str(tmp_path / "a"),
        experiment="curve",
        optuna_storage=None,
    )
    rows = {t: {"mc_curve.test_acc": t / 1000, "mc_curve.test_nll": 1 / t} for t in range(1, 601)}  # 1200 metrics
    with record.job_run(tracking, "curve", {}) as run:
        run.log_steps(rows)
    client = MlflowClient(tracking_uri=tracking.uri)
    hist = client.get_metric_history(run.id, "mc_curve.test_acc")
    assert sorted((m.step, m.value) for m in hist) == [(t, t / 1000) for t in range(1, 601)]
    assert len(client.get_metric_history(run.id, "mc_curve.test_nll")) == 600
    assert client.get_run(run.id).data.metrics["mc_curve.test_nll"] == pytest.approx(1 / 600)
