"""sweep.analysis: the frame (any depth: one column per hidden layer), counts, the per-setting table with
paired differences, "best", the console table and the figures (unit, on hand-made frames and a real SQLite
store); then the parent-run summary of real CLI sweeps."""

from __future__ import annotations

import csv
import io
import math
import statistics

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from helpers.cli import mlflow_runs
from sweep import analysis as A
from sweep import record
from sweep.analysis import LAYER_PARAM, children_frame
from sweep.analysis import stats as S
from sweep.config import TrackingConf
from sweep.keys import SUMMARY_METRICS
from sweep.parent import summarize_sweep

# ---------------------------------------------------------------- any depth (a real SQLite store)


def _sweep(tmp_path, rates_per_child: list[list[float]]) -> tuple[MlflowClient, str]:
    """A parent run and one FINISHED child per entry, logged the way sweep/job.py logs them."""
    tracking = TrackingConf(
        uri=f"sqlite:///{tmp_path}/mlflow.db",
        artifact_location=str(tmp_path / "art"),
        experiment="depth",
        optuna_storage=None,
    )
    client, exp_id = record.connect(tracking)
    parent = record.start_run(client, exp_id, "sweep", {"sweep_role": "parent"}).info.run_id
    record.write_parent(tmp_path / "sweep", parent, "s")
    for i, rates in enumerate(rates_per_child):
        with record.job_run(tracking, f"child {i}", {"job_num": i}, sweep_dir=tmp_path / "sweep") as run:
            run.log_params(
                {
                    "drop_prob": str(rates[0]),
                    "input_drop_prob": "0.0",
                    "seed": str(i),
                    **{f"layer{j}_drop_prob": str(p) for j, p in enumerate(rates, start=1)},
                }
            )
            run.log_metrics({"train_acc": 0.9 + i / 100, "test_acc": 0.8, "gap": 0.1 + i / 100}, step=1)
    return client, parent


@pytest.mark.parametrize("depth", [2, 6, 12])
def test_summary_has_one_column_per_hidden_layer(tmp_path, depth):
    rates = [[0.1 * (k + 1) if j == depth - 1 else 0.0 for j in range(depth)] for k in range(3)]
    client, parent = _sweep(tmp_path, rates)
    df = summarize_sweep(client, parent, tmp_path / "sweep")
    layers = [f"layer{j}_drop_prob" for j in range(1, depth + 1)]  # in layer order: layer10 after layer9
    assert [c for c in df.columns if LAYER_PARAM.fullmatch(c)] == layers
    assert len(df) == 3 and set(df.status) == {"FINISHED"}
    assert df[f"layer{depth}_drop_prob"].tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert (df[layers[:-1]] == 0).all().all()
    csv = pd.read_csv(tmp_path / "sweep" / "sweep_results.csv")
    assert list(csv.columns) == list(df.columns) and csv[f"layer{depth}_drop_prob"].tolist() == pytest.approx(
        [0.1, 0.2, 0.3]
    )
    assert client.get_run(parent).data.tags["children"] == "3 finished / 3"
    assert (tmp_path / "sweep" / "gap_vs_dropout.png").stat().st_size > 0


def test_children_of_different_depths_share_one_table(tmp_path):
    client, parent = _sweep(tmp_path, [[0.5, 0.5], [0.3, 0.3, 0.3, 0.3, 0.3, 0.3]])
    df = children_frame(client, parent).set_index("seed")
    assert [c for c in df.columns if LAYER_PARAM.fullmatch(c)] == [f"layer{j}_drop_prob" for j in range(1, 7)]
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
        assert {k for k in r.data.params if LAYER_PARAM.fullmatch(k)} == {
            f"layer{j}_drop_prob" for j in range(1, len(hidden) + 1)
        }
        assert r.data.params["model.hidden_sizes"] == sizes.replace(",", ", ")
    csv = pd.read_csv(cli.out / "sweep" / "sweep_results.csv")
    layers = [f"layer{j}_drop_prob" for j in range(1, len(hidden) + 1)]
    assert [c for c in csv.columns if LAYER_PARAM.fullmatch(c)] == layers
    assert csv[layers].to_numpy().tolist() == [[0.0] * len(hidden), [0.5] * len(hidden)]
    assert csv.test_acc.notna().all()


# ---------------------------------------------------------------- settings, pairs, best, console, figures

T2 = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))  # t(0.975, 2 df), closed form (see test_stats.py)


def search_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows as mlflow.search_runs hands them over (params.*, metrics.*, tags.* columns; strings for params)."""
    out = []
    for i, r in enumerate(rows):
        row = {
            "run_id": r.get("run_id", f"r{i}"),
            "status": r.get("status", "FINISHED"),
            "tags.mlflow.runName": f"run {i}",
            "tags.pruned": r.get("pruned"),
        }
        row.update({f"params.{k}": str(v) for k, v in r.items() if k in PARAMS})
        row.update({f"metrics.{k}": v for k, v in r.items() if k in SUMMARY_METRICS})
        out.append(row)
    return pd.DataFrame(out)


PARAMS = (
    "drop_prob",
    "input_drop_prob",
    "layer1_drop_prob",
    "layer2_drop_prob",
    "layer3_drop_prob",
    "seed",
    "optimizer.lr",
    "data.root",
    "tracking.uri",
)


def run(p=0.0, seed=1, test=0.95, val=None, train=0.99, lr=0.001, layers=None, inp=0.0, **extra):
    layers = layers or [p, p, p]
    return {
        "drop_prob": p,
        "input_drop_prob": inp,
        "seed": seed,
        "optimizer.lr": lr,
        **{f"layer{i}_drop_prob": x for i, x in enumerate(layers, start=1)},
        "data.root": f"/data/{seed}",
        "tracking.uri": "sqlite:///x.db",  # not part of a setting
        "train_acc": train,
        "test_acc": test,
        "val_acc": test if val is None else val,
        "gap": train - test,
        **extra,
    }


# p=0.5 minus p=0 per seed, test accuracy: [+0.01, +0.02, +0.03] -> mean 0.02, sd 0.01, half 0.01*T2/sqrt(3)
GRID = [run(0.0, s, test=0.90 + 0.01 * s) for s in (1, 2, 3)] + [
    run(0.5, s, test=0.90 + 0.02 * s, train=0.98) for s in (1, 2, 3)
]


def test_frame_has_every_param_settings_rates_and_order():
    df = A.frame_from_search(search_frame(GRID[::-1]))
    assert list(df[S.LABEL]) == ["p=0"] * 3 + ["p=0.5"] * 3  # parameter order, then seed
    assert list(df["seed"]) == ["1", "2", "3"] * 2
    assert df[S.SETTING].nunique() == 2  # data.root and tracking.uri differ per run but are not the setting
    assert {"optimizer.lr", "layer3_drop_prob", "data.root"} <= set(df.columns)
    assert list(df[A.HIDDEN]) == [0.0] * 3 + [0.5] * 3 and (df[A.INPUT] == 0).all() and df["uniform_hidden"].all()


def test_any_depth_mean_effective_hidden_rate():
    rows = [run(0.3, 1, layers=[0.1, 0.2, 0.6]), run(0.3, 1, layers=[0.3, 0.3, 0.3])]
    df = A.frame_from_search(search_frame(rows))
    assert sorted(df[A.HIDDEN].round(12)) == [0.3, 0.3] and sorted(df["uniform_hidden"]) == [False, True]
    assert df[S.SETTING].nunique() == 2
    assert "rates differ per layer" in A.axis_label(df)


def test_lr_alone_makes_two_settings():
    df = A.frame_from_search(search_frame([run(0.0, 1, lr=0.001), run(0.0, 1, lr=0.01)]))
    assert sorted(df[S.LABEL]) == ["optimizer.lr=0.001", "optimizer.lr=0.01"]
    assert A.settings_text(df) == "2 settings x 1 replicate"


def test_counts_keep_pruned_and_failed_apart():
    rows = GRID + [run(0.5, 4, pruned="true"), run(0.5, 5, status="FAILED"), run(0.5, 6, status="KILLED")]
    df = A.frame_from_search(search_frame(rows))
    c = A.run_counts(df)
    assert c == {"finished": 6, "pruned": 1, "failed": 1, "killed": 1, "running": 0, "total": 9}
    assert A.counts_text(c) == "6 finished, 1 pruned, 1 failed, 1 killed"
    assert A.settings_text(df) == "2 settings x 3 replicates"


def test_setting_table_paired_differences_by_hand():
    table = A.setting_table(A.frame_from_search(search_frame(GRID))).set_index("label")
    half = 0.01 * T2 / math.sqrt(3)
    r = table.loc["p=0.5"]
    assert r["seeds"] == 3 and r["baseline"] == "p=0"
    assert r["d_test_mean"] == pytest.approx(0.02) and r["d_test_n"] == 3
    assert (r["d_test_lo"], r["d_test_hi"]) == (pytest.approx(0.02 - half), pytest.approx(0.02 + half))
    # gap = train - test: p=0.5 has train 0.98 vs 0.99, so the gap differences are -0.01 - [0.01, 0.02, 0.03]
    assert r["d_gap_mean"] == pytest.approx(-0.03) and r["d_gap_verdict"] == S.LOWER
    assert r["test_acc_mean"] == pytest.approx(0.94) and r["gap_mean"] == pytest.approx(0.04)
    assert pd.isna(table.loc["p=0", "d_test_mean"])  # the baseline itself
    # p=0.5 wins every seed by 1-3 points of validation accuracy, yet with 3 seeds the paired p is
    # 1 - sqrt(12/14) = 0.074 > 0.05: the two are tied
    assert r["rank"] == 1 and table.loc["p=0", "rank"] == 2 and table.loc["p=0", "tied"]


def test_two_replicates_are_inconclusive_have_no_interval_and_are_not_ranked():
    df = A.frame_from_search(search_frame([r for r in GRID if r["seed"] != 3]))
    table = A.setting_table(df).set_index("label")
    assert table.loc["p=0.5", "d_test_verdict"] == S.INCONCLUSIVE and pd.isna(table.loc["p=0.5", "d_test_lo"])
    assert pd.isna(table.loc["p=0.5", "test_acc_ci_low"]) and table["rank"].isna().all()
    console = A.console_table(A.setting_table(df))
    assert "inconclusive (2 replicates)" in console
    row = next(line for line in console.splitlines() if line.startswith("p=0.5 "))
    assert row.split()[:3] == ["p=0.5", "2", "-"]  # not ranked
    assert A.headline(df) == (
        "Best: not chosen; no setting has 3 replicates yet (the most is 2), and fewer cannot "
        "be ranked: run each setting with at least 3 seeds (seed=1,2,3)."
    )
    assert A.best(df) is None


def test_best_is_by_validation_among_completed_runs_never_test_or_pruned():
    rows = [run(0.0, s, test=0.90, val=0.95) for s in (1, 2, 3)]
    rows += [run(0.3, s, test=0.99, val=0.90) for s in (1, 2, 3)]  # best test, worse validation
    rows += [run(0.5, s, test=0.99, val=0.99, pruned="true") for s in (1, 2, 3)]  # pruned: not a result
    df = A.frame_from_search(search_frame(rows))
    top = A.best(df)
    assert top["label"] == "p=0" and top["val_acc"] == pytest.approx(0.95) and top["test_acc"] == pytest.approx(0.90)
    assert top["seeds"] == 3 and top["tied_with"] == []
    table = A.setting_table(df)
    assert set(table["label"]) == {"p=0", "p=0.3"}  # the pruned setting has no completed run: no row
    assert A.headline(df).endswith("The top setting trains without dropout.")


def test_the_headline_reports_the_holm_p_of_the_whole_family_not_of_one_comparison():
    # p=0.5 beats p=0 by 2, 3, 4 points (t = 3 sqrt(3) on 2 df, raw p = 0.0351); p=0.2 by 1, 0, 2 (raw p = 0.225).
    # Holm over the two: the smaller p doubles to 0.0702, so the top setting is not "higher": its interval, at
    # the Bonferroni level 0.05/2 once Holm stops, holds 0 (97.5 %).
    base = {1: 0.90, 2: 0.91, 3: 0.92}
    rows = [run(0.0, s, test=v, val=v) for s, v in base.items()]
    rows += [run(0.5, s, test=base[s] + d / 100, val=base[s] + 0.05) for s, d in {1: 2, 2: 3, 3: 4}.items()]
    rows += [run(0.2, s, test=base[s] + d / 100, val=base[s]) for s, d in {1: 1, 2: 0, 3: 2}.items()]
    df = A.frame_from_search(search_frame(rows))
    family = A.paired_comparisons(df).set_index(["label", "metric"])
    p_raw, p_holm = family.loc[("p=0.5", "test_acc"), ["p", "p_holm"]]
    assert p_raw == pytest.approx(1 - 3 * math.sqrt(3) / math.sqrt(2 + 27))  # 2 df: p = 1 - t / sqrt(2 + t^2)
    assert p_holm == pytest.approx(2 * p_raw)
    assert family.loc[("p=0.5", "test_acc"), "confidence"] == pytest.approx(0.975)
    sentence = A.headline(df)
    assert "test accuracy +3.00 points (97.5 % CI [" in sentence, sentence
    assert (
        "n=3 replicates, d_z=+3.00, detects 4.62 points with 80% power): inconclusive, the interval holds 0 and "
        "reaches beyond ±0.30 points."
    ) in sentence


def test_no_validation_split_chooses_no_best():
    rows = [{**r, "val_acc": float("nan")} for r in GRID]
    df = A.frame_from_search(search_frame(rows))
    assert A.best(df) is None and A.headline(df).startswith("Best: not chosen; the runs have no validation split")
    assert A.setting_table(df)["rank"].isna().all()


def test_console_table_and_end_of_sweep_text():
    df = A.frame_from_search(search_frame(GRID))
    text = A.end_of_sweep_text(df, "abc123", "/tmp/sweep", "postgresql://me:secret@db/mlflow")
    lines = text.splitlines()
    assert lines[0] == "Sweep summary: 6 runs: 6 finished, 0 pruned, 0 failed; 2 settings x 3 replicates."
    half = 100 * 0.01 * T2 / math.sqrt(3)
    row = next(line for line in lines if line.startswith("p=0.5 "))
    assert row.split()[:6] == ["p=0.5", "3", "1", "94.00", "94.00", "4.00"]
    assert f"+2.00 [{2 - half:+.2f},{2 + half:+.2f}] inconclusive" in row  # the interval holds 0
    assert "Replicates: seeds 1-3; each draws the training randomness only" in text
    assert f"-3.00 [{-3 - half:+.2f},{-3 + half:+.2f}] lower" in row
    assert "CSV:    /tmp/sweep/sweep_results.csv" in text and "Plot:   /tmp/sweep/gap_vs_dropout.png" in text
    assert "        /tmp/sweep/sweep_settings.csv (one row per setting)" in text
    assert "secret" not in text and "--parent-run-id abc123" in text and "Browse: mlflow ui" in text
    assert max(len(line) for line in lines) <= 120


def test_long_labels_are_shortened_for_display_only_when_unambiguous():
    assert A.display_labels(["p1=0.324876732149455, p_in=0.1"]) == {
        "p1=0.324876732149455, p_in=0.1": "p1=0.3249, p_in=0.1"
    }
    clash = ["p1=0.1234567", "p1=0.1234568"]
    assert A.display_labels(clash) == {c: c for c in clash}


def test_figures_draw_for_grids_searches_and_nothing(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    grid = A.frame_from_search(search_frame(GRID + [run(0.5, s, inp=0.2) for s in (1, 2)]))
    search = A.frame_from_search(
        search_frame(
            [run(0.3, 777, layers=[i / 40, 0.5 - i / 40, 0.2], inp=i / 50, test=0.9 + i / 1000) for i in range(10)]
        )
    )
    empty = A.frame_from_search(search_frame([run(0.5, 1, status="FAILED")]))
    import matplotlib.pyplot as plt

    for name, df in (("grid", grid), ("search", search), ("empty", empty)):
        fig = A.overview_figure(df)
        fig.savefig(tmp_path / f"{name}.png", dpi=50)
        plt.close(fig)
        assert (tmp_path / f"{name}.png").stat().st_size > 5_000
    assert A.overview_figure(search).axes[-1].get_label() == "<colorbar>"  # a search: colour = input rate
    assert len(A.gap_figure(grid).axes) == 2  # the input rate varies: a second panel against it
    legend = [t.get_text() for t in A.accuracy_figure(grid).axes[0].get_legend().get_texts()]
    assert len(legend) == 5 and "gap (hatched)" in legend  # train/test x two input rates, and the hatched gap
    plt.close("all")


# ---------------------------------------------------------------- the parent run's summary, real CLI sweeps


def _parent(runs):
    (parent,) = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    return parent, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


def _artifact_csv(client, run_id, path):
    local = client.download_artifacts(run_id, path)
    return list(csv.DictReader(io.StringIO(open(local).read())))


@pytest.mark.slow
def test_parent_summary_groups_seeds_by_setting_and_prints_the_paired_table(cli):
    res = cli("-m", "drop_prob=0,0.5", "seed=1,2,3", epochs=2)
    assert res.returncode == 0, res.stderr[-3000:]
    client, runs = mlflow_runs(cli.out)
    parent, children = _parent(runs)
    assert parent.data.tags["children"] == "6 finished / 6"
    assert parent.data.tags["settings"] == "2 settings x 3 replicates"
    settings = _artifact_csv(client, parent.info.run_id, A.SETTINGS_CSV)
    assert sorted(r["label"] for r in settings) == ["p=0", "p=0.5"] and {r["seeds"] for r in settings} == {"3"}

    # the paired difference, recomputed by hand from what MLflow holds
    by = {(r.data.params["drop_prob"], r.data.params["seed"]): r.data.metrics for r in children}
    d = [by[("0.5", s)]["test_acc"] - by[("0.0", s)]["test_acc"] for s in ("1", "2", "3")]
    row = next(r for r in settings if r["label"] == "p=0.5")
    mean, half = statistics.mean(d), T2 * statistics.stdev(d) / math.sqrt(3) if len(set(d)) > 1 else 0.0
    assert float(row["d_test_mean"]) == pytest.approx(mean, abs=1e-9)
    assert float(row["d_test_lo"]) == pytest.approx(mean - half, abs=1e-9)
    assert row["baseline"] == "p=0" and int(float(row["d_test_n"])) == 3

    # best by validation, means over the 3 seeds; no test-selected "best"
    val = {p: statistics.mean(by[(p, s)]["val_acc"] for s in ("1", "2", "3")) for p in ("0.0", "0.5")}
    top = max(val, key=val.get)
    assert parent.data.metrics["best_setting_val_acc"] == pytest.approx(val[top])
    assert parent.data.tags["best_setting"] == ("p=0" if top == "0.0" else "p=0.5")
    assert "best_test_acc" not in parent.data.metrics

    out = res.stdout
    assert "Sweep summary: 6 runs: 6 finished, 0 pruned, 0 failed; 2 settings x 3 replicates." in out
    assert "setting  repl.  rank  val %  test %" in out
    line = next(line for line in out.splitlines() if line.startswith("p=0.5 "))
    assert f"{100 * mean:+.2f} [{100 * (mean - half):+.2f},{100 * (mean + half):+.2f}]" in line
    assert f"CSV:    {cli.out / 'sweep' / A.RUNS_CSV}" in out and "Browse: mlflow ui" in out
    assert f"--parent-run-id {parent.info.run_id}" in out


@pytest.mark.slow
def test_parent_summary_two_learning_rates_are_two_settings(cli):
    res = cli("-m", "optimizer.lr=0.001,0.01", "seed=1", epochs=1)
    assert res.returncode == 0, res.stderr[-3000:]
    client, runs = mlflow_runs(cli.out)
    parent, _ = _parent(runs)
    assert parent.data.tags["settings"] == "2 settings x 1 replicate"
    labels = sorted(r["label"] for r in _artifact_csv(client, parent.info.run_id, A.SETTINGS_CSV))
    assert labels == ["optimizer.lr=0.001", "optimizer.lr=0.01"]
    said = " ".join(res.stdout.split())  # the sentence is wrapped to the console's width
    # one replicate ranks nothing (issue 18: fewer than 3 are not ranked), and the sentence says what would
    assert "Best: not chosen; no setting has 3 replicates yet (the most is 1)" in said
    assert "run each setting with at least 3 seeds (seed=1,2,3)" in said
    assert "no setting without dropout" in said  # both runs use the default drop_prob: no baseline


@pytest.mark.slow
def test_parent_summary_excludes_and_counts_a_pruned_run(cli):
    res = cli(
        "-m",
        "hydra/sweeper=optuna",
        f"hydra.sweeper.storage=sqlite:///{cli.out}/optuna.db",
        "hydra.sweeper.study_name=t",
        "hydra.sweeper.sampler=grid",
        "optimizer.lr=choice(0.001,0.0000001)",
        "hydra.sweeper.pruner=median",
        "hydra.sweeper.pruner_args.n_startup_trials=1",
        "hydra.sweeper.pruner_args.n_warmup_steps=0",
        epochs=4,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    client, runs = mlflow_runs(cli.out)
    parent, children = _parent(runs)
    assert sorted(str(r.data.tags.get("pruned")) for r in children) == ["None", "true"]  # only the pruned one is tagged
    assert parent.data.tags["children"] == "1 finished, 1 pruned, 0 failed / 2"
    settings = _artifact_csv(client, parent.info.run_id, A.SETTINGS_CSV)
    assert [r["label"] for r in settings] == ["optimizer.lr=0.001"]  # the pruned setting is no result
    assert "best_setting" not in parent.data.tags  # one replicate: not ranked, so no best is named
    assert "2 runs: 1 finished, 1 pruned, 0 failed; 1 setting x 1 replicate." in res.stdout
    runs_csv = _artifact_csv(client, parent.info.run_id, A.RUNS_CSV)
    assert sorted(r["pruned"] for r in runs_csv) == ["False", "True"]


def test_reading_results_imports_no_training_code():
    import subprocess
    import sys

    from helpers.cli import ROOT

    code = "import sys, sweep.analysis, sweep.analysis.stats; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
