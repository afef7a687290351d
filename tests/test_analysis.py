"""The parent's summary (sweep/analysis.py) for any depth: one column per hidden layer, however many."""
from __future__ import annotations

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from helpers.cli import mlflow_runs
from sweep import track
from sweep.analysis import LAYER_PARAM, children_frame, summarize_children
from sweep.config import TrackingConf


def _sweep(tmp_path, rates_per_child: list[list[float]]) -> tuple[MlflowClient, str]:
    """A parent run and one FINISHED child per entry, logged the way sweep/job.py logs them."""
    tracking = TrackingConf(uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_location=str(tmp_path / "art"),
                            experiment="depth", optuna_storage=None)
    client, exp_id = track.connect(tracking)
    parent = track.start_run(client, exp_id, "sweep", {"sweep_role": "parent"}).info.run_id
    track.write_parent(tmp_path / "sweep", parent, "s")
    for i, rates in enumerate(rates_per_child):
        with track.job_run(tracking, f"child {i}", {"job_num": i}, sweep_dir=tmp_path / "sweep") as run:
            run.log_params({"drop_prob": str(rates[0]), "input_drop_prob": "0.0", "seed": str(i),
                            **{f"layer{j}_drop_prob": str(p) for j, p in enumerate(rates, start=1)}})
            run.log_metrics({"train_acc": 0.9 + i / 100, "test_acc": 0.8, "gap": 0.1 + i / 100}, step=1)
    return client, parent


@pytest.mark.parametrize("depth", [2, 6, 12])
def test_summary_has_one_column_per_hidden_layer(tmp_path, depth):
    rates = [[0.1 * (k + 1) if j == depth - 1 else 0.0 for j in range(depth)] for k in range(3)]
    client, parent = _sweep(tmp_path, rates)
    df = summarize_children(client, parent, tmp_path / "sweep")
    layers = [f"layer{j}_drop_prob" for j in range(1, depth + 1)]  # in layer order: layer10 after layer9
    assert [c for c in df.columns if c.startswith("layer")] == layers
    assert len(df) == 3 and set(df.status) == {"FINISHED"}
    assert df[f"layer{depth}_drop_prob"].tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert (df[layers[:-1]] == 0).all().all()
    csv = pd.read_csv(tmp_path / "sweep" / "sweep_results.csv")
    assert list(csv.columns) == list(df.columns) and csv[f"layer{depth}_drop_prob"].tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert client.get_run(parent).data.tags["children"] == "3 finished / 3"
    assert (tmp_path / "sweep" / "gap_vs_dropout.png").stat().st_size > 0


def test_children_of_different_depths_share_one_table(tmp_path):
    client, parent = _sweep(tmp_path, [[0.5, 0.5], [0.3, 0.3, 0.3, 0.3, 0.3, 0.3]])
    df = children_frame(client, parent).set_index("seed")
    assert [c for c in df.columns if c.startswith("layer")] == [f"layer{j}_drop_prob" for j in range(1, 7)]
    assert df.loc["0", "layer2_drop_prob"] == 0.5 and pd.isna(df.loc["0", "layer3_drop_prob"])
    assert df.loc["1", "layer6_drop_prob"] == 0.3


@pytest.mark.slow
@pytest.mark.parametrize("hidden", [[32, 32], [16, 16, 16, 16, 16, 16]])
def test_cli_sweep_of_another_depth_summarises(cli, hidden):
    sizes = "[" + ",".join(map(str, hidden)) + "]"
    res = cli("-m", f"model.hidden_sizes={sizes}", "layer_drop_probs=[]", "drop_prob=0,0.5", "seed=0", epochs=1)
    assert res.returncode == 0, res.stderr[-3000:]
    _, runs = mlflow_runs(cli.out)
    children = [r for r in runs if r.data.tags.get("sweep_role") != "parent"]
    assert {r.info.status for r in runs} == {"FINISHED"} and len(children) == 2
    for r in children:
        assert {k for k in r.data.params if LAYER_PARAM.fullmatch(k)} == {f"layer{j}_drop_prob" for j in range(1, len(hidden) + 1)}
        assert r.data.params["model.hidden_sizes"] == sizes.replace(",", ", ")
    csv = pd.read_csv(cli.out / "sweep" / "sweep_results.csv")
    layers = [f"layer{j}_drop_prob" for j in range(1, len(hidden) + 1)]
    assert [c for c in csv.columns if c.startswith("layer")] == layers
    assert csv[layers].to_numpy().tolist() == [[0.0] * len(hidden), [0.5] * len(hidden)]
    assert csv.test_acc.notna().all()
