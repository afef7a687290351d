"""What a sweep's parent run receives at the end (sweep/parent.py calls `summarize_children`): its
children's final metrics and dropout rates (one column per hidden layer, any depth) as a CSV, and the
overfitting picture (train/test accuracy and their gap against drop_prob) as a PNG."""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

METRICS = ("train_acc", "val_acc", "test_acc", "gap", "train_loss", "val_loss", "test_loss")
PARAMS = ("drop_prob", "input_drop_prob", "seed", "optimizer.name", "optimizer.lr", "trainer.epochs", "data.name")
LAYER_PARAM = re.compile(r"layer(\d+)_drop_prob")  # sweep/job.py logs one per hidden layer, however many


def layer_params(runs) -> list[str]:
    """layer1_drop_prob, layer2_drop_prob, ... for the deepest model among `runs`, in layer order."""
    names = {k for r in runs for k in r.data.params if LAYER_PARAM.fullmatch(k)}
    return sorted(names, key=lambda k: int(LAYER_PARAM.fullmatch(k).group(1)))


def children_frame(client: MlflowClient, parent_id: str) -> pd.DataFrame:
    """One row per child run: status, the dropout rates (input, shared, every hidden layer), final metrics."""
    parent = client.get_run(parent_id)
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'",
                              max_results=10_000)
    layers = layer_params(runs)
    params = [*PARAMS[:2], *layers, *PARAMS[2:]]
    rows = []
    for r in runs:
        row = {"run_id": r.info.run_id, "run_name": r.info.run_name, "status": r.info.status,
               "job_num": r.data.tags.get("job_num"), "pruned": r.data.tags.get("pruned") == "true"}
        row.update({p: r.data.params.get(p) for p in params})
        row.update({m: r.data.metrics.get(m) for m in METRICS})
        rows.append(row)
    df = pd.DataFrame(rows, columns=["run_id", "run_name", "status", "job_num", "pruned", *params, *METRICS])
    for col in ("drop_prob", "input_drop_prob", *layers, "optimizer.lr"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df.sort_values(["drop_prob", "input_drop_prob", "seed"], na_position="last").reset_index(drop=True)


def plot_gap(df: pd.DataFrame, path: Path) -> None:
    """Final train and test accuracy against drop_prob (mean over seeds, points per run), gap below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = df[(df.status == "FINISHED") & ~df.pruned & df.test_acc.notna()]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True, constrained_layout=True)
    if done.empty:
        top.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=top.transAxes)
    else:
        mean = done.groupby("drop_prob")[["train_acc", "test_acc", "gap"]].mean().reset_index()
        for col, color in (("train_acc", "tab:blue"), ("test_acc", "tab:orange")):
            top.scatter(done.drop_prob, done[col] * 100, s=12, color=color, alpha=0.5)
            top.plot(mean.drop_prob, mean[col] * 100, "-o", color=color, label=col.replace("_acc", " accuracy"))
        top.fill_between(mean.drop_prob, mean.test_acc * 100, mean.train_acc * 100, color="grey", alpha=0.2,
                         label="gap")
        bottom.scatter(done.drop_prob, done.gap * 100, s=12, color="tab:red", alpha=0.5)
        bottom.plot(mean.drop_prob, mean.gap * 100, "-o", color="tab:red")
        bottom.axhline(0, color="black", lw=0.5)
        top.legend(loc="lower left")
    top.set_ylabel("final accuracy (%)")
    top.set_title("Train vs test accuracy against dropout")
    bottom.set_xlabel("hidden-layer dropout rate drop_prob")
    bottom.set_ylabel("gap = train - test (points)")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summarize_children(client: MlflowClient, parent_id: str, sweep_dir: Path | None) -> pd.DataFrame:
    df = children_frame(client, parent_id)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(sweep_dir) if sweep_dir else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        df.to_csv(out / "sweep_results.csv", index=False)
        plot_gap(df, out / "gap_vs_dropout.png")
        client.log_artifact(parent_id, str(out / "sweep_results.csv"))
        client.log_artifact(parent_id, str(out / "gap_vs_dropout.png"))
    finished = df[df.status == "FINISHED"]
    client.set_tag(parent_id, "children", f"{len(finished)} finished / {len(df)}")
    if not finished.empty and finished.test_acc.notna().any():
        best = finished.loc[finished.test_acc.idxmax()]
        client.log_metric(parent_id, "best_test_acc", float(best.test_acc))
    return df
