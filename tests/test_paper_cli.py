"""End to end (issue 12): the real CLI on tiny data records the final evaluation (weight scaling's calibration,
MC dropout and its curve), applies max-norm, logs the scheduled learning rate, and runs the paper's preset."""

import json

import pytest

from helpers.cli import mlflow_runs

pytestmark = pytest.mark.slow
SEVEN = ("test_nll", "test_ece", "test_brier", "mc_test_acc", "mc_test_nll", "mc_test_ece", "mc_test_brier")
EPOCHS = 3


def _one_run(cli):
    client, runs = mlflow_runs(cli.out)
    (run,) = runs
    assert run.info.status == "FINISHED", run.data.tags.get("error")
    return client, run


def _steps(client, run, name):
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)]


def test_mc_samples_records_the_seven_metrics_the_curve_and_the_reliability_bins(cli):
    res = cli("eval.mc_samples=5", epochs=EPOCHS)
    assert res.returncode == 0, res.stderr[-3000:]
    client, run = _one_run(cli)
    m = run.data.metrics
    for name in SEVEN:  # once, at the last epoch: never a per-epoch figure
        assert [s for s, _ in _steps(client, run, name)] == [EPOCHS], name
    assert 0 <= m["mc_test_acc"] <= 1 and m["test_nll"] > 0 and m["mc_test_nll"] > 0
    assert 0 <= m["test_ece"] <= 1 and 0 <= m["mc_test_ece"] <= 1
    assert 0 <= m["test_brier"] <= 2 and 0 <= m["mc_test_brier"] <= 2
    assert m["mc_test_nll"] != m["test_nll"]  # dropout on (drop_prob 0.3): the MC average is not weight scaling
    for k in ("acc", "nll", "ece", "brier"):  # the curve over t = 1..5 ends at the final figure
        curve = _steps(client, run, f"mc_curve.test_{k}")
        assert [t for t, _ in curve] == [1, 2, 3, 4, 5]
        assert curve[-1][1] == pytest.approx(m[f"mc_test_{k}"])
    assert [s for s, _ in _steps(client, run, "test_acc")] == [1, 2, 3]  # the per-epoch figures are unchanged
    assert m["max_row_norm"] > 1.0  # unconstrained (Xavier rows start near 1 and grow): the contrast to max-norm
    local = client.download_artifacts(run.info.run_id, "calibration/reliability.json", str(cli.out))
    with open(local) as f:
        bins = json.load(f)
    assert bins["bins"] == 15 and set(bins) == {"bins", "weight_scaling", "mc"}
    for part in ("weight_scaling", "mc"):
        assert len(bins[part]["count"]) == 15 and sum(bins[part]["count"]) == 200  # the tiny test set
    assert "MC dropout, 5 passes: mc_test_acc" in res.stdout + res.stderr


def test_without_mc_samples_only_weight_scaling_is_recorded(cli):
    res = cli(epochs=1)
    assert res.returncode == 0, res.stderr[-3000:]
    client, run = _one_run(cli)
    assert {"test_nll", "test_ece", "test_brier", "max_row_norm"} <= set(run.data.metrics)
    assert not [k for k in run.data.metrics if k.startswith("mc_")]
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["config.yaml"]


def test_max_norm_and_a_cosine_schedule_with_warm_up(cli):
    res = cli("model.max_norm=1.0", "optimizer.schedule=cosine", "optimizer.warmup_epochs=1", epochs=EPOCHS)
    assert res.returncode == 0, res.stderr[-3000:]
    client, run = _one_run(cli)
    assert run.data.metrics["max_row_norm"] <= 1.0
    # 500 training images (600 - 100 validation), batch 100: 5 steps per epoch, S = 15, W = 5; lr of the
    # last step of epoch e (s = 5e - 1), base 1e-3:
    #   e=1 s=4   warm-up (4+1)/5 = 1                                      -> 1e-3
    #   e=2 s=9   (1 + cos(pi * 4/10)) / 2 = (1 + 0.30901699) / 2 = 0.65450850 -> 6.5450850e-4
    #   e=3 s=14  (1 + cos(pi * 9/10)) / 2 = (1 - 0.95105652) / 2 = 0.02447174 -> 2.447174e-5
    lr = _steps(client, run, "lr")
    assert [s for s, _ in lr] == [1, 2, 3]
    assert [v for _, v in lr] == pytest.approx([1e-3, 6.5450850e-4, 2.447174e-5], rel=1e-6)


def test_the_paper_preset_runs(cli):
    res = cli("+experiment=paper", epochs=EPOCHS)  # the tiny set and 3 epochs override the preset's data and budget
    assert res.returncode == 0, res.stderr[-3000:]
    client, run = _one_run(cli)
    p = run.data.params
    assert (p["input_drop_prob"], p["drop_prob"], p["optimizer.name"]) == ("0.2", "0.5", "sgd")
    c = float(p["model.max_norm"])
    assert 3 <= c <= 4 and run.data.metrics["max_row_norm"] <= c
    assert p["optimizer.schedule"] != "none" and p["trainer.epochs"] == str(EPOCHS)
    assert [s for s, _ in _steps(client, run, "lr")] == [EPOCHS]  # eval_every 5: only the last of 3 epochs
    assert int(p["eval.mc_samples"]) > 0 and "mc_test_acc" in run.data.metrics
    assert run.data.metrics["val_acc"] > 0.5
