"""The study presets (README "Studies") as their make targets run them: every value of every axis of the
grid passes pre-flight against MNIST-sized files, and one point of each study runs end to end on tiny data."""

from __future__ import annotations

import re
import shlex

import numpy as np
import pytest

from helpers.cli import mlflow_runs
from helpers.idx import write_images, write_labels
from sweep.config import PROJECT_ROOT
from sweep.preflight import check_cli

STUDIES = ("overfit", "datasize", "capacity", "paper")
PRESET = {"paper": "paper_study"}  # make study-<name> -> +experiment=<preset>


def make_target_args(name: str) -> list[str]:
    """The sweep/run.py arguments of `make study-<name>` (without the user's $(STUDY_ARGS))."""
    text = (PROJECT_ROOT / "Makefile").read_text()
    m = re.search(rf"^study-{name}:.*\n\t(.+)$", text, re.MULTILINE)
    assert m, f"no study-{name} target in the Makefile"
    args = shlex.split(m.group(1).replace("$(STUDY_ARGS)", ""))
    return args[args.index("sweep/run.py") + 1 :]


@pytest.fixture(scope="module")
def mnist_sized_root(tmp_path_factory):
    """Header-valid IDX files of MNIST's sizes (60,000 / 10,000 blank images): pre-flight checks the
    studies' training-subset sizes against the real split without the real data."""
    root = tmp_path_factory.mktemp("mnist_sized")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", 60_000), ("t10k", 10_000)):
        write_images(raw / f"{split}-images-idx3-ubyte", np.zeros((n, 28, 28), np.uint8))
        write_labels(raw / f"{split}-labels-idx1-ubyte", np.zeros(n, np.uint8))
    return root


def _store(tmp_path) -> list[str]:
    return [
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        f"tracking.artifact_location={tmp_path}/mlartifacts",
        f"hydra.sweep.dir={tmp_path}/sweep",
    ]


@pytest.mark.parametrize("name", STUDIES)
def test_every_study_target_passes_preflight_setting_by_setting(name, mnist_sized_root, tmp_path):
    args = make_target_args(name)
    assert args[0] == "-m" and f"+experiment={PRESET.get(name, name)}" in args
    checked = check_cli(
        [*args, f"data.root={mnist_sized_root}", "data.download=false", "data.verify=false", *_store(tmp_path)]
    )[1:]  # the first is the composed base; then one per setting
    assert {c.tracking.sweep_id for c in checked} == {name}
    # every study: fp32 on oneDNN (the same digits on any AVX-512 CPU), replicates that resample the data
    assert {c.trainer.precision for c in checked} == {"fp32"} and {c.trainer.cpu_matmul for c in checked} == {"onednn"}
    assert {c.data.resample for c in checked} == ({"split"} if name == "paper" else {"subset"})
    assert all(c.study.exploratory >= 3 and c.study.first_confirmatory_seed > c.study.exploratory for c in checked)
    settings = {(c.drop_prob, c.input_drop_prob, c.data.train_subset, c.model.constant_capacity) for c in checked}
    if name == "overfit":
        assert settings == {(p, i, 2000, False) for p in (0.0, 0.2, 0.5) for i in (0.0, 0.2)}
        assert checked[0].trainer.epochs == 60 and checked[0].study.smallest_effect["test_acc"] == 0.5
    if name == "datasize":  # no dropout against hidden 0.5 + input 0.2, at four sizes: 8 settings
        assert settings == {(p, i, n, False) for n in (1000, 3000, 10000, None) for p, i in ((0.0, 0.0), (0.5, 0.2))}
    if name == "capacity":
        assert settings == {(p, 0.0, 2000, cc) for p in (0.0, 0.2, 0.5) for cc in (False, True)}
    if name == "paper":  # the paper recipe at three hidden rates and without any dropout; the best is confirmed
        assert settings == {
            (0.0, 0.0, None, False),
            (0.2, 0.2, None, False),
            (0.3, 0.2, None, False),
            (0.5, 0.2, None, False),
        }
        assert {c.study.confirm for c in checked} == {"best"} and checked[0].trainer.epochs == 100


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, point, widths",
    [
        ("overfit", ["drop_prob=0.5", "input_drop_prob=0.2", "data.train_subset=300"], "512"),
        ("datasize", ["data.train_subset=300"], "512"),
        ("capacity", ["drop_prob=0.5", "model.constant_capacity=true", "data.train_subset=300"], "1024"),
    ],
)
def test_one_point_of_each_study_runs_both_phases_end_to_end(cli, name, point, widths):
    # the command-line value of a swept key replaces that axis of the preset's grid: one point (two for the
    # data-size study, whose settings list pairs the rates), 3 exploratory and 3 confirmatory replicates
    r = cli(
        *make_target_args(name),
        *point,
        "study.exploratory=3",
        "study.confirmatory=3",
        "model.hidden_sizes=[512,512]",
        "layer_drop_probs=[]",
        "hydra.launcher.n_jobs=1",
        epochs=1,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    client, runs = mlflow_runs(cli.out)
    children = [x for x in runs if x.data.tags.get("sweep_role") != "parent"]
    per_point = 2 if name == "datasize" else 1
    assert len(children) == 6 * per_point and {c.info.status for c in children} == {"FINISHED"}
    seeds = sorted({(c.data.params["study.phase"], c.data.params["seed"]) for c in children})
    assert seeds == [
        ("confirmatory", "1001"),
        ("confirmatory", "1002"),
        ("confirmatory", "1003"),
        ("exploratory", "1"),
        ("exploratory", "2"),
        ("exploratory", "3"),
    ]
    p = children[0].data.params
    assert p["tracking.sweep_id"] == name and p["data.train_subset"] == "300" and p["data.resample"] == "subset"
    assert p["layer1_width"] == p["layer2_width"] == widths
    assert "== Confirmatory phase (fresh replicates): the headline verdicts ==" in r.stdout
    assert "test_acc" in children[0].data.metrics
