"""End to end: the real CLI as a subprocess on tiny IDX files, then the MLflow store read back."""
import pytest

from helpers.cli import mlflow_runs

pytestmark = pytest.mark.slow
SEVEN = {"train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "gap"}


def _parent_and_children(runs):
    parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    pid = parents[0].info.run_id
    return parents[0], [r for r in runs if r.data.tags.get("mlflow.parentRunId") == pid]


def test_grid_multirun_records_nested_runs_with_per_epoch_metrics(cli):
    res = cli("-m", "drop_prob=0,0.5", "seed=0", epochs=2)
    assert res.returncode == 0, res.stderr[-3000:]
    client, runs = mlflow_runs(cli.out)
    parent, children = _parent_and_children(runs)
    assert parent.info.status == "FINISHED" and len(runs) == 3
    assert sorted(r.info.run_name for r in children) == ["p=0.00 in=0.00 seed=0", "p=0.50 in=0.00 seed=0"]
    for r in children:
        assert r.info.status == "FINISHED"
        assert SEVEN <= set(r.data.metrics)
        for m in SEVEN:
            assert [x.step for x in client.get_metric_history(r.info.run_id, m)] == [1, 2]
        assert r.data.metrics["gap"] == pytest.approx(r.data.metrics["train_acc"] - r.data.metrics["test_acc"])
        p = r.data.params
        assert p["drop_prob"] in ("0.0", "0.5") and p["seed"] == "0" and p["optimizer.lr"] == "0.001"
        assert p["layer4_drop_prob"] == p["drop_prob"] and p["trainer.batch_size"] == "100"
        assert r.data.tags["sweep_id"] == parent.data.tags["sweep_id"]
        assert r.data.tags["job_num"] in ("0", "1") and "drop_prob=" in r.data.tags["overrides"]
        assert [a.path for a in client.list_artifacts(r.info.run_id)] == ["config.yaml"]
    art = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"sweep_results.csv", "gap_vs_dropout.png"} <= art
    assert (cli.out / "sweep" / "sweep_results.csv").read_text().count("\n") == 3


def test_lab_experiment_single_run_uses_no_validation_split(cli):
    res = cli("+experiment=lab", "data.val_size=0", epochs=1)
    assert res.returncode == 0, res.stderr[-3000:]
    _, runs = mlflow_runs(cli.out)
    (run,) = runs
    assert run.info.status == "FINISHED"
    assert "test_acc" in run.data.metrics and "val_acc" not in run.data.metrics


def test_diverging_point_fails_alone_and_the_grid_goes_on(cli):
    res = cli("-m", "optimizer.lr=0.001,1e12", epochs=3)
    assert res.returncode == 0, res.stderr[-3000:]
    _, runs = mlflow_runs(cli.out)
    parent, children = _parent_and_children(runs)
    by_lr = {r.data.params["optimizer.lr"]: r for r in children}
    assert by_lr["0.001"].info.status == "FINISHED"
    bad = by_lr["1000000000000.0"]
    assert bad.info.status == "FAILED" and bad.data.tags["diverged"] == "true" and "Diverged" in bad.data.tags["error"]
    assert "test_acc" not in bad.data.metrics


@pytest.mark.parametrize("lr", ["1e10", "1e12"])
def test_a_single_run_that_diverges_exits_1_with_one_line(cli, lr):
    res = cli(f"optimizer.lr={lr}", epochs=3)
    assert res.returncode == 1, res.stderr[-3000:]
    lines = [l for l in res.stderr.splitlines() if l.strip()]  # (a fresh store also logs its creation)
    assert [l for l in lines if l.startswith("error:")] == lines[-1:], res.stderr
    assert lines[-1].startswith("error: the run diverged") and "Traceback" not in res.stderr
    _, runs = mlflow_runs(cli.out)
    (run,) = runs
    assert run.info.status == "FAILED" and run.data.tags["diverged"] == "true"


@pytest.mark.parametrize("arg", ["drop_prob=1.0", "drop_prob=abc", "trainer.epochs=0", "data=cifar",
                                 "layer_drop_probs=[0.1]", "trainer.nope=1"])
def test_bad_input_stops_before_any_run_with_one_line(cli, arg):
    res = cli(arg) if arg.startswith("drop_prob") else cli("-m", "drop_prob=0,0.3", arg)
    assert res.returncode == 2, res.stderr
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr
    assert not (cli.out / "mlflow.db").exists()
