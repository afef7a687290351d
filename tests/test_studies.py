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

STUDIES = ("overfit", "datasize", "capacity")


def make_target_args(name: str) -> list[str]:
    """The sweep/run.py arguments of `make study-<name>` (without the user's $(STUDY_ARGS))."""
    text = (PROJECT_ROOT / "Makefile").read_text()
    m = re.search(rf"^study-{name}:.*\n\t(.+)$", text, re.MULTILINE)
    assert m, f"no study-{name} target in the Makefile"
    args = shlex.split(m.group(1).replace("$(STUDY_ARGS)", ""))
    return args[args.index("sweep/run.py") + 1:]


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
    return [f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"tracking.artifact_location={tmp_path}/mlartifacts",
            f"hydra.sweep.dir={tmp_path}/sweep"]


@pytest.mark.parametrize("name", STUDIES)
def test_every_study_target_passes_preflight_with_five_seeds(name, mnist_sized_root, tmp_path):
    args = make_target_args(name)
    assert args[0] == "-m" and f"+experiment={name}" in args
    checked = check_cli([*args, f"data.root={mnist_sized_root}", "data.download=false", "data.verify=false",
                         *_store(tmp_path)])
    assert {c.seed for c in checked} >= {1, 2, 3, 4, 5}
    assert {c.drop_prob for c in checked} >= {0.0, 0.2, 0.5}  # and the default 0.3 of the base config
    assert {c.tracking.sweep_id for c in checked} == {name}
    if name == "overfit":
        assert {c.input_drop_prob for c in checked} == {0.0, 0.2}
        assert {c.data.train_subset for c in checked} == {2000} and checked[0].trainer.epochs == 60
    if name == "datasize":
        assert {c.data.train_subset for c in checked} == {1000, 3000, 10000, None}
    if name == "capacity":
        assert {c.model.constant_capacity for c in checked} == {False, True}


@pytest.mark.slow
@pytest.mark.parametrize("name, point, widths", [
    ("overfit", ["drop_prob=0.5", "input_drop_prob=0.2", "data.train_subset=300"], "512"),
    ("datasize", ["drop_prob=0.2", "input_drop_prob=0", "data.train_subset=300"], "512"),
    ("capacity", ["drop_prob=0.5", "model.constant_capacity=true", "data.train_subset=300"], "1024"),
])
def test_one_point_of_each_study_runs_end_to_end(cli, name, point, widths):
    # the command-line value of a swept key replaces that axis of the preset's grid: one point, one seed
    r = cli(*make_target_args(name), *point, "seed=1", "model.hidden_sizes=[512,512]", "layer_drop_probs=[]",
            epochs=1)
    assert r.returncode == 0, r.stderr[-3000:]
    client, runs = mlflow_runs(cli.out)
    children = [x for x in runs if x.data.tags.get("sweep_role") != "parent"]
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    p = children[0].data.params
    assert p["tracking.sweep_id"] == name and p["seed"] == "1" and p["data.train_subset"] == "300"
    assert p["layer1_width"] == p["layer2_width"] == widths
    assert "test_acc" in children[0].data.metrics
