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
    # no validation split: no val_gap, no best-epoch metrics, and the run says why
    assert "val_gap" not in run.data.metrics and not any(
        k.startswith(("best_", "at_best_val.")) for k in run.data.metrics
    )
    assert run.data.tags["at_best_val"].startswith("none: data.val_size=0")


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


@pytest.mark.parametrize(
    "arg",
    ["drop_prob=1.0", "drop_prob=abc", "trainer.epochs=0", "data=cifar", "layer_drop_probs=[0.1]", "trainer.nope=1"],
)
def test_bad_input_stops_before_any_run_with_one_line(cli, arg):
    res = cli(arg) if arg.startswith("drop_prob") else cli("-m", "drop_prob=0,0.3", arg)
    assert res.returncode == 2, res.stderr
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr
    assert not (cli.out / "mlflow.db").exists()


# ----------------------------------------------------------------------------- issue 10: what selects, what is recorded


def test_a_test_set_objective_is_refused_for_a_search_before_any_run(cli):
    res = cli("-m", "hydra/sweeper=optuna", "+search=dropout", "objective=test_acc")
    assert res.returncode == 2, res.stderr
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert lines == [
        "error: objective=test_acc is refused for a search: test_acc reads the test set, and the test set "
        "must not select; use val_acc (or val_loss, val_gap); test metrics are still recorded for every run"
    ]
    assert not (cli.out / "mlflow.db").exists() and not (cli.out / "sweep").exists()


def _inputs(client, run) -> dict:
    """context -> (name, digest, profile) of a run's MLflow dataset inputs."""
    import json

    out = {}
    for d in client.get_run(run.info.run_id).inputs.dataset_inputs:
        (context,) = [t.value for t in d.tags if t.key == "mlflow.data.context"]
        out[context] = (d.dataset.name, d.dataset.digest, json.loads(d.dataset.profile), json.loads(d.dataset.source))
    return out


def test_a_run_records_val_gap_best_epoch_metrics_and_its_datasets(cli):
    res = cli("seed=1", "trainer.eval_every=2", epochs=5)
    assert res.returncode == 0, res.stderr[-3000:]
    client, (run,) = mlflow_runs(cli.out)
    rid, m = run.info.run_id, run.data.metrics
    history = {k: {x.step: x.value for x in client.get_metric_history(rid, k)} for k in SEVEN | {"val_gap", "fit_loss"}}
    for k, by_step in history.items():
        assert sorted(by_step) == [2, 4, 5], k  # evaluated epochs only: every 2nd and the last
    for step in (2, 4, 5):
        assert history["val_gap"][step] == pytest.approx(history["train_acc"][step] - history["val_acc"][step])
    # the best epoch: the first with the highest val_acc, and every metric as it was then
    best = max(history["val_acc"].values())
    epoch = min(s for s, v in history["val_acc"].items() if v == best)
    assert m["best_epoch"] == epoch and m["at_best_val.val_acc"] == best
    for k in ("train_acc", "test_acc", "gap", "val_gap", "test_loss"):
        assert m[f"at_best_val.{k}"] == pytest.approx(history[k][epoch]), k
    assert m["test_acc"] == history["test_acc"][5]  # the last-epoch metrics stay what they were
    # what it saw: one dataset per split, named, digested, sized, with the split seed
    inputs = _inputs(client, run)
    assert {c: v[0] for c, v in inputs.items()} == {
        "training": "mnist-train",
        "validation": "mnist-val",
        "test": "mnist-test",
    }
    assert inputs["training"][2] == {"num_rows": 500, "split_seed": 0, "val_size": 100, "train_subset": None}
    assert inputs["validation"][2]["num_rows"] == 100 and inputs["test"][2] == {"num_rows": 200}
    assert set(inputs["test"][3]["files"]) == {"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}
    assert len({v[1] for v in inputs.values()}) == 3


def test_the_seed_does_not_move_the_split_and_the_split_seed_does(cli):
    res = cli("-m", "seed=1,2", "data.split_seed=0,1", epochs=1)
    assert res.returncode == 0, res.stderr[-3000:]
    client, runs = mlflow_runs(cli.out)
    _, children = _parent_and_children(runs)
    by = {(r.data.params["seed"], r.data.params["data.split_seed"]): r for r in children}
    digests = {k: {c: v[1] for c, v in _inputs(client, r).items()} for k, r in by.items()}
    assert len(digests) == 4
    assert digests[("1", "0")] == digests[("2", "0")] and digests[("1", "1")] == digests[("2", "1")]
    for context in ("training", "validation"):
        assert digests[("1", "0")][context] != digests[("1", "1")][context]
    assert digests[("1", "0")]["test"] == digests[("1", "1")]["test"]
    # same split, other seed: other weights, so (almost surely) other losses
    assert by[("1", "0")].data.metrics["val_loss"] != by[("2", "0")].data.metrics["val_loss"]
