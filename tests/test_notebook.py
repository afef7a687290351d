"""analysis.ipynb, executed for real by `python -m sweep.report` (a fresh kernel, parameters injected).

The figure cells are tagged `figure:<name>`; each draws exactly one image and saves <name>.png into the
report's figures folder, so a missing figure fails here. Data come from a real tiny sweep made by the CLI
(two seeds per setting) and, for the Optuna figures, from hand-made MLflow runs plus an Optuna study laid
out the way the Optuna sweeper records them.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from helpers.cli import ROOT, mlflow_runs

NOTEBOOK = ROOT / "analysis.ipynb"
ENSEMBLE = {"mc_dropout", "reliability"}  # drawn only for runs evaluated with eval.mc_samples > 0
ALL_FIGURES = {
    "accuracy_vs_dropout",
    "gap_vs_dropout",
    "learning_curves",
    "rates_map",
    "layer_effects",
    "param_importances",
    *ENSEMBLE,
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- helpers


def report(out: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m sweep.report ... --out <out>/report.html` as a user runs it (from the project root)."""
    return subprocess.run(
        [sys.executable, "-m", "sweep.report", *args, "--out", str(out / "report.html")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def figure_cells(nb) -> dict[str, list]:
    """{figure name: that cell's outputs} for the cells tagged figure:<name>."""
    cells = {}
    for cell in nb.cells:
        for tag in cell.get("metadata", {}).get("tags", []):
            if tag.startswith("figure:"):
                cells[tag.removeprefix("figure:")] = cell.get("outputs", [])
    return cells


def images(outputs) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs)


def errors(nb) -> list[str]:
    return [
        f"{o['ename']}: {o['evalue']}"
        for c in nb.cells
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]


def text_of(nb_or_outputs) -> str:
    """All text a notebook (or one cell's outputs) shows."""
    outputs = (
        nb_or_outputs
        if isinstance(nb_or_outputs, list)
        else [o for c in nb_or_outputs.cells for o in c.get("outputs", [])]
    )
    parts = []
    for o in outputs:
        parts.append(o.get("text", ""))
        parts += [str(o.get("data", {}).get(mime, "")) for mime in ("text/markdown", "text/plain", "text/html")]
    return "\n".join(parts)


def check_report(out: Path, res: subprocess.CompletedProcess, drawn: set[str]):
    """Every expected figure is in the notebook once and on disk as a real PNG; the others say why not."""
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    nb = nbformat.read(out / "report.ipynb", as_version=4)
    assert errors(nb) == []
    cells = figure_cells(nb)
    assert set(cells) == ALL_FIGURES
    for name in ALL_FIGURES:
        png = out / "report_figures" / f"{name}.png"
        if name in drawn:
            assert images(cells[name]) == 1, f"figure {name} missing from the notebook"
            assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000, f"{png} is not a figure"
        else:
            assert images(cells[name]) == 0 and not png.exists(), name
            assert "not drawn" in text_of(cells[name]), f"figure {name}: no reason given"
    summary = json.loads((out / "report_figures" / "summary.json").read_text())
    assert summary["ok"] and set(summary["figures"]) == drawn
    assert set(summary["skipped"]) == ALL_FIGURES - drawn
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64") >= len(drawn)
    assert "Traceback" not in html and summary["sentence"].split(":")[0] in html
    return nb, summary


# ---------------------------------------------------------------- the notebook in git


def test_notebook_is_kept_without_outputs_and_tags_every_figure():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip the outputs before committing"
    assert set(figure_cells(nb)) == ALL_FIGURES
    for cell in code:
        for tag in cell.metadata.get("tags", []):
            if tag.startswith("figure:"):
                assert f'NAME = "{tag.removeprefix("figure:")}"' in cell.source and "show(fig, NAME)" in cell.source
    # thin: the analysis is sweep.analysis / sweep.analysis.stats (never training code), not re-implemented here
    source = "".join(c.source for c in code)
    assert "from sweep import analysis as A" in source and "from sweep.analysis import stats as S" in source
    for own in (
        "def ci95",
        "T975",
        "def stats(",
        "def band_label",
        "mean of {",
        "ppf(",
        "ttest",
        "multipletests",
        "import torch",
        "sweep.job",
        "sweep.training.train",
    ):
        assert own not in source, own
    assert "mlflow.search_runs" in "".join(c.source for c in code) and "get_metric_history" in "".join(
        c.source for c in code
    )


def test_parameters_are_injected_after_the_parameters_cell():
    from sweep.report import inject_parameters, parameter_names

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert {
        "tracking_uri",
        "experiment",
        "parent_run_id",
        "sweep_id",
        "optuna_storage",
        "study_name",
        "figures_dir",
    } <= set(parameter_names(nb))
    nb = inject_parameters(nb, {"experiment": "x", "parent_run_id": "abc"})
    nb = inject_parameters(nb, {"experiment": "y"})  # replaces, never stacks
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    i = next(i for i, t in enumerate(tags) if "parameters" in t)
    assert "injected-parameters" in tags[i + 1] and sum("injected-parameters" in t for t in tags) == 1
    assert nb.cells[i + 1].source.splitlines()[1:] == ["experiment = 'y'"]
    with pytest.raises(ValueError, match="unknown notebook parameter"):
        inject_parameters(nb, {"experimnt": "typo"})


def test_report_cli_refuses_unknown_parameters_and_non_uris_before_starting_a_kernel(tmp_path, capsys):
    from sweep.report import main

    out = str(tmp_path / "r.html")
    assert main(["-p", "max_panels=3", "--out", out]) == 2
    assert "unknown notebook parameter(s) max_panels" in capsys.readouterr().err
    assert main(["--tracking-uri", "runs/mlflow.db", "--out", out]) == 2
    assert "expected a URI" in capsys.readouterr().err
    assert main(["-p", "oops", "--out", out]) == 2
    assert not (tmp_path / "r.html").exists()


# ---------------------------------------------------------------- a real sweep, two seeds


@pytest.mark.slow
def test_report_on_a_real_seeded_grid_draws_every_grid_figure(cli, tmp_path):
    res = cli("-m", "drop_prob=0,0.3,0.5", "seed=1,2", epochs=3)
    assert res.returncode == 0, res.stderr[-3000:]
    client, runs = mlflow_runs(cli.out)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 6

    out = tmp_path / "report"
    t0 = time.time()
    res = report(out, "--tracking-uri", f"sqlite:///{cli.out}/mlflow.db")
    print(f"report took {time.time() - t0:.1f}s")
    nb, summary = check_report(out, res, {"accuracy_vs_dropout", "gap_vs_dropout", "learning_curves"})

    # the ranking is built from all six runs: three settings, two replicates each, means as MLflow has them;
    # two replicates are too few for an interval, a paired comparison or a rank
    ranking = pd.read_csv(out / "report_figures" / "ranking.csv")
    assert sorted(ranking.setting) == ["p=0", "p=0.3", "p=0.5"] and (ranking.seeds == 2).all()
    assert ranking["test acc 95% CI (unpaired)"].isna().all() and ranking["gap 95% CI (unpaired)"].isna().all()
    assert set(ranking["test acc vs p=0"].dropna()) <= {"-", "inconclusive (2 replicates)"}
    assert set(ranking["rank"].dropna()) <= {"-"}
    by_p = {}
    for r in children:
        by_p.setdefault(r.data.params["drop_prob"], []).append(r.data.metrics)
    for setting, p in (("p=0", "0.0"), ("p=0.3", "0.3"), ("p=0.5", "0.5")):
        row = ranking[ranking.setting == setting].iloc[0]
        assert row["test acc (%)"] == pytest.approx(100 * sum(m["test_acc"] for m in by_p[p]) / 2, abs=0.006)
        assert row["gap (points)"] == pytest.approx(100 * sum(m["gap"] for m in by_p[p]) / 2, abs=0.006)
    assert summary["sentence"] == (
        "Best: not chosen; no setting has 3 replicates yet (the most is 2), and fewer "
        "cannot be ranked: run each setting with at least 3 seeds (seed=1,2,3)."
    )
    assert summary["sentence"] in res.stdout
    # the learning curves read every epoch of every run
    text = text_of(nb)
    assert "6 child runs: 6 finished" in text and "replicates per setting: [2]" in text
    assert "Replicates:** seeds 1, 2; each draws the training randomness only" in text


# ---------------------------------------------------------------- empty or missing data


@pytest.mark.slow
def test_report_on_a_missing_store_or_an_empty_experiment_says_so_without_a_traceback(tmp_path):
    missing = tmp_path / "nowhere" / "mlflow.db"
    res = report(tmp_path / "a", "--tracking-uri", f"sqlite:///{missing}")
    assert res.returncode == 1, res.stderr
    assert "error: there is no MLflow store at" in res.stderr and "Traceback" not in res.stderr
    assert not missing.exists() and not missing.parent.exists(), "the report must not create a store"
    nb = nbformat.read(tmp_path / "a" / "report.ipynb", as_version=4)
    assert errors(nb) == [] and "No analysis:" in text_of(nb)
    assert all(images(o) == 0 for o in figure_cells(nb).values())
    html = (tmp_path / "a" / "report.html").read_text()
    assert "there is no MLflow store at" in html and "Traceback" not in html

    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{tmp_path}/empty.db").create_experiment("dropout")
    res = report(tmp_path / "b", "--tracking-uri", f"sqlite:///{tmp_path}/empty.db")
    assert res.returncode == 1 and "has no runs yet" in res.stderr, res.stderr
    assert errors(nbformat.read(tmp_path / "b" / "report.ipynb", as_version=4)) == []


# ---------------------------------------------------------------- Optuna sweeps and 2-D grids (hand-made runs)


def _store(out: Path, children: list[dict], sweep_id: str, sweeper: str) -> str:
    """An MLflow store laid out like the CLI's: a parent per sweep, children with params, tags and
    per-epoch metrics (step = epoch)."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    found = client.get_experiment_by_name("dropout")
    exp = (
        found.experiment_id
        if found
        else client.create_experiment("dropout", artifact_location=(out / "mlartifacts").as_uri())
    )
    parent = client.create_run(
        exp, run_name=f"sweep {sweep_id}", tags={"sweep_role": "parent", "sweep_id": sweep_id, "sweeper": sweeper}
    ).info.run_id
    now = int(time.time() * 1000)
    for job, c in enumerate(children):
        rates = c["layers"]
        name = f"p={rates[0]:.2f}" if len(set(rates)) == 1 else "p=[" + ",".join(f"{r:.2f}" for r in rates) + "]"
        tags = {"mlflow.parentRunId": parent, "sweep_id": sweep_id, "job_num": str(job), **c.get("tags", {})}
        rid = client.create_run(exp, run_name=f"{name} in={c['input']:.2f} seed={c['seed']}", tags=tags).info.run_id
        params = {
            "drop_prob": c.get("drop_prob", 0.3),
            "input_drop_prob": c["input"],
            "seed": c["seed"],
            "trainer.epochs": 3,
            "data.name": "mnist",
            "optimizer.lr": 0.001,
            **{f"layer{i}_drop_prob": r for i, r in enumerate(rates, start=1)},
        }
        client.log_batch(rid, params=[Param(k, str(v)) for k, v in params.items()])
        metrics = []
        for epoch in range(1, c.get("epochs", 3) + 1):
            test = c["test"] - 0.02 * (3 - epoch)
            train = test + c["gap"] * epoch / 3
            metrics += [
                Metric("train_acc", train, now, epoch),
                Metric("test_acc", test, now, epoch),
                Metric("val_acc", c["val"] - 0.02 * (3 - epoch), now, epoch),
                Metric("gap", train - test, now, epoch),
            ]
        client.log_batch(rid, metrics=metrics)
        client.set_terminated(rid, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    return parent


def _outcome(inp: float, layers: list[float], seed: int) -> dict:
    """A smooth made-up response: the gap shrinks with hidden dropout, test accuracy peaks mid-range."""
    h = sum(layers) / len(layers)
    noise = random.Random(seed * 1000 + int(100 * h + 10 * inp)).gauss(0, 0.001)
    return {
        "test": 0.97 - 0.08 * (h - 0.3) ** 2 - 0.05 * (inp - 0.1) ** 2 - 0.02 * layers[0] + noise,
        "val": 0.971 - 0.08 * (h - 0.3) ** 2 - 0.05 * (inp - 0.1) ** 2 - 0.02 * layers[0] + noise,
        "gap": max(0.002, 0.03 - 0.04 * h - 0.01 * inp),
    }


@pytest.mark.slow
def test_report_on_an_optuna_per_layer_study_draws_the_optuna_figures(tmp_path):
    optuna = pytest.importorskip("optuna")
    rng = random.Random(0)
    study_name = "dropout-per-layer"
    study = optuna.create_study(study_name=study_name, storage=f"sqlite:///{tmp_path}/optuna.db", direction="maximize")
    dist = optuna.distributions.FloatDistribution(0.0, 0.6)
    children = []
    for trial in range(14):
        inp, layers = round(rng.uniform(0, 0.5), 3), [round(rng.uniform(0, 0.6), 3) for _ in range(4)]
        o = _outcome(inp, layers, 777)
        pruned = trial == 13  # the pruner stopped it after one epoch: left out of the final-accuracy figures
        state = optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.COMPLETE
        params = {"input_drop_prob": inp, **{f"layer_drop_probs.{i}": r for i, r in enumerate(layers)}}
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions={k: dist for k in params},
                state=state,
                value=None if pruned else o["val"],
                intermediate_values={1: o["val"]} if pruned else None,
            )
        )
        children.append(
            {
                "input": inp,
                "layers": layers,
                "seed": 777,
                "epochs": 1 if pruned else 3,
                **o,
                "tags": {
                    "optuna_study": study_name,
                    "optuna_trial": str(trial),
                    "optuna_state": state.name,
                    "pruned": "true" if pruned else "false",
                },
            }
        )
    _store(tmp_path, children, "optuna-test", "OptunaSweeper")
    time.sleep(0.01)
    later = [
        {"input": 0.0, "layers": [p] * 4, "drop_prob": p, "seed": 1, **_outcome(0.0, [p] * 4, 1)} for p in (0, 0.5)
    ]
    _store(tmp_path, later, "grid-later", "BasicSweeper")  # the newest sweep is a plain grid
    store = f"sqlite:///{tmp_path}/mlflow.db"

    # the sweep by its id, no Optuna flags: the study is the one its runs name, in optuna.db beside mlflow.db
    res = report(tmp_path / "auto", "--tracking-uri", store, "--sweep-id", "optuna-test")
    nb, summary = check_report(tmp_path / "auto", res, ALL_FIGURES - ENSEMBLE)
    assert "1 pruned by Optuna" in text_of(nb) and "grid-later" in text_of(nb)  # listed among the other sweeps
    ranking = pd.read_csv(tmp_path / "auto" / "report_figures" / "ranking.csv")
    assert len(ranking) == 13 and (ranking.seeds == 1).all()

    # only the study: the newest sweep that ran it, not the newer grid
    res = report(
        tmp_path / "study",
        "--tracking-uri",
        store,
        "--optuna-storage",
        f"sqlite:///{tmp_path}/optuna.db",
        "--study",
        study_name,
    )
    nb, summary = check_report(tmp_path / "study", res, ALL_FIGURES - ENSEMBLE)
    assert len(pd.read_csv(tmp_path / "study" / "report_figures" / "ranking.csv")) == 13

    # a study that does not exist: a one-line reason, the other figures still drawn
    res = report(
        tmp_path / "bad",
        "--tracking-uri",
        store,
        "--sweep-id",
        "optuna-test",
        "--optuna-storage",
        f"sqlite:///{tmp_path}/optuna.db",
        "--study",
        "no-such-study",
    )
    nb, summary = check_report(tmp_path / "bad", res, ALL_FIGURES - ENSEMBLE - {"param_importances"})
    assert "cannot load Optuna study `no-such-study`" in summary["skipped"]["param_importances"]


@pytest.mark.slow
def test_report_on_a_grid_over_input_and_hidden_rates_draws_the_rate_map(tmp_path):
    children = [
        {"input": inp, "layers": [p] * 4, "drop_prob": p, "seed": seed, **_outcome(inp, [p] * 4, seed)}
        for inp in (0.0, 0.2)
        for p in (0.0, 0.3, 0.5)
        for seed in (1, 2)
    ]
    _store(tmp_path, children, "grid2d", "BasicSweeper")
    res = report(tmp_path / "r", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--sweep-id", "grid2d")
    nb, summary = check_report(
        tmp_path / "r", res, {"accuracy_vs_dropout", "gap_vs_dropout", "learning_curves", "rates_map"}
    )
    ranking = pd.read_csv(tmp_path / "r" / "report_figures" / "ranking.csv")
    assert len(ranking) == 6 and (ranking.seeds == 2).all() and "p=0, p_in=0" in set(ranking.setting)


def _optuna_sweeper_available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("hydra_plugins.dropout_optuna_sweeper.optuna_sweeper") is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _optuna_sweeper_available(), reason="the Optuna sweeper plugin is not in this checkout")
def test_report_on_a_real_optuna_per_layer_sweep(cli, tmp_path):
    """`hydra/sweeper=optuna +search=per_layer`, four tiny trials (three enqueued + one TPE), then the report
    with the study found through the runs' tags and the storage given on the command line."""
    storage = f"sqlite:///{cli.out}/optuna.db"
    res = cli(
        "-m",
        "hydra/sweeper=optuna",
        "+search=per_layer",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=nb",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.pruner=none",
        epochs=2,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / "report"
    res = report(out, "--tracking-uri", f"sqlite:///{cli.out}/mlflow.db", "--optuna-storage", storage)
    nb, summary = check_report(out, res, ALL_FIGURES - ENSEMBLE)
    assert len(pd.read_csv(out / "report_figures" / "ranking.csv")) == 4


# ---------------------------------------------------------------- the ensemble effect (issue 12)


@pytest.mark.slow
def test_report_draws_the_mc_dropout_curve_and_the_reliability_diagrams(cli, tmp_path):
    res = cli("-m", "drop_prob=0,0.5", "seed=1,2", "eval.mc_samples=4", epochs=2)
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / "report"
    res = report(out, "--tracking-uri", f"sqlite:///{cli.out}/mlflow.db")
    nb, summary = check_report(
        out, res, {"accuracy_vs_dropout", "gap_vs_dropout", "learning_curves", "mc_dropout", "reliability"}
    )
    text = text_of(nb)
    assert "p = 0 (2 runs; weight-scaling ECE" in text  # the baseline's panel, pooled over its two seeds
    assert "best with dropout by validation: p=0.5" in text  # the dropout setting, even when p = 0 ranks first
    assert "test acc @best (%)" in text and "best epoch" in text  # the best-validation-epoch table


def test_mc_curves_and_pooled_reliability_bins_from_a_fake_store(tmp_path):
    """The analysis side against values computed by hand: curves read per run, bins pooled count-weighted."""
    from mlflow.tracking import MlflowClient

    from sweep import analysis as A

    uri = f"sqlite:///{tmp_path}/m.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("dropout", artifact_location=str(tmp_path / "art"))
    bins = [
        {"lower": [0, 0.5], "upper": [0.5, 1], "count": [2, 8], "confidence": [0.4, 0.9], "accuracy": [0.5, 1.0]},
        {"lower": [0, 0.5], "upper": [0.5, 1], "count": [6, 4], "confidence": [0.3, 0.7], "accuracy": [0.0, 0.5]},
    ]
    for seed, b in zip((1, 2), bins):
        run = client.create_run(exp)
        rid = run.info.run_id
        for k, v in {"drop_prob": 0.5, "input_drop_prob": 0.0, "seed": seed}.items():
            client.log_param(rid, k, v)
        for k, v in {
            "train_acc": 1.0,
            "val_acc": 0.9,
            "test_acc": 0.9,
            "gap": 0.1,
            "test_nll": 0.3,
            "mc_test_acc": 0.91,
        }.items():
            client.log_metric(rid, k, v)
        for t in (1, 2, 3):
            client.log_metric(rid, "mc_curve.test_acc", 0.8 + 0.01 * t + 0.001 * seed, step=t)
            client.log_metric(rid, "mc_curve.test_nll", 0.5 - 0.1 * t, step=t)
        client.log_text(rid, json.dumps({"bins": 2, "weight_scaling": b}), A.RELIABILITY_ARTIFACT)
        client.set_terminated(rid)
    df = A.frame_from_runs(client.search_runs([exp]))
    curves = A.mc_curves(client, df)
    assert len(curves) == 6 and sorted(curves.t.unique()) == [1, 2, 3]
    mean = curves.groupby("t")["acc"].mean()
    assert mean[2] == pytest.approx(0.8 + 0.02 + 0.0015) and (curves.ws_acc == 0.9).all()
    pooled = A.reliability_bins(client, list(df.run_id))["weight_scaling"]
    assert pooled["count"] == [8, 12]
    assert pooled["confidence"] == pytest.approx([(2 * 0.4 + 6 * 0.3) / 8, (8 * 0.9 + 4 * 0.7) / 12])
    assert pooled["accuracy"] == pytest.approx([(2 * 0.5 + 0) / 8, (8 * 1.0 + 4 * 0.5) / 12])
    fig = A.mc_figure(curves)
    assert len(fig.axes[0].lines) == 2  # the MC curve and the weight-scaling line of the one dropout setting
