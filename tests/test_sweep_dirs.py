"""Concurrency: every sweep gets its own folder and parent run unless it shares one on purpose
(`tracking.sweep_id`); a sweep never silently takes over a folder whose parent run is still RUNNING."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from helpers.cli import ROOT, mlflow_runs
from helpers.proc import LONG_EPOCHS, init_store, start, wait_for_epoch
from sweep.config import PROJECT_ROOT


def test_default_sweep_dir_claims_a_folder_of_its_own():
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", return_hydra_config=True)
    raw = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["dir"]
    assert raw == "${sweep_dir:${root:}/runs/multirun}"


def test_claim_suffixes_a_taken_folder_and_answers_the_same_within_a_process(tmp_path, monkeypatch):
    from sweep.util import sweepdir

    monkeypatch.setattr(sweepdir, "_claimed", {})
    first = sweepdir.claim(str(tmp_path), "stamp")
    assert first == str(tmp_path / "stamp") and sweepdir.claim(str(tmp_path), "stamp") == first  # cached
    monkeypatch.setattr(sweepdir, "_claimed", {})  # another process, same second
    assert sweepdir.claim(str(tmp_path), "stamp") == str(tmp_path / "stamp-2")
    monkeypatch.setattr(sweepdir, "_claimed", {})
    assert sweepdir.claim(str(tmp_path), "stamp") == str(tmp_path / "stamp-3")


def test_processes_claiming_at_once_get_distinct_folders(tmp_path):
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); from sweep.util.sweepdir import claim; "
        f"print(claim({str(tmp_path)!r}, 'same'))"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(6)]
    got = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert sorted(got) == sorted([str(tmp_path / "same")] + [str(tmp_path / f"same-{i}") for i in range(2, 7)])


@pytest.mark.slow
def test_two_grids_started_together_keep_their_own_folder_parent_configs_and_results(tiny_root, tmp_path):
    init_store(tmp_path)  # a store the two sweeps find ready (creating one fresh from two processes is not this test)
    procs = []
    for seed in (11, 12):
        # the default hydra.sweep.dir's resolver, with the runs/multirun parent moved into the test's folder
        args = ["drop_prob=0,0.2,0.3", f"seed={seed}", f"hydra.sweep.dir=${{sweep_dir:{tmp_path}/multirun}}"]
        procs.append(start(args, tmp_path, tiny_root, epochs=1, log_name=f"cli{seed}.log"))
    for p in procs:
        assert p.wait(timeout=600) == 0
    folders = sorted((tmp_path / "multirun").iterdir())
    assert len(folders) == 2, folders
    parents = {json.loads((f / "mlflow_parent.json").read_text())["run_id"]: f for f in folders}
    assert len(parents) == 2
    _, runs = mlflow_runs(tmp_path)
    assert sum(r.data.tags.get("sweep_role") == "parent" for r in runs) == 2
    for parent_id, folder in parents.items():
        kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
        seeds = {r.data.params["seed"] for r in kids}
        assert len(kids) == 3 and len(seeds) == 1, (folder, seeds)
        results = pd.read_csv(folder / "sweep_results.csv")
        assert len(results) == 3 and set(results.seed.astype(str)) == seeds
        for job in range(3):  # every job's .hydra/ configs are there, and are this grid's
            overrides = (folder / str(job) / ".hydra" / "overrides.yaml").read_text()
            assert f"seed={next(iter(seeds))}" in overrides


@pytest.mark.slow
def test_a_sweep_refuses_a_folder_whose_parent_is_running_then_reruns_there_once_it_ended(tiny_root, tmp_path, cli):
    first = start(["drop_prob=0.1,0.2"], tmp_path, tiny_root, epochs=LONG_EPOCHS)
    try:
        wait_for_epoch(tmp_path, ready=tmp_path / "sweep" / "mlflow_parent.json")
        before = (tmp_path / "sweep" / "mlflow_parent.json").read_text()
        second = cli("-m", "drop_prob=0.3", epochs=1)  # the same explicit hydra.sweep.dir, no tracking.sweep_id
        assert second.returncode == 2, second.stderr[-2000:]
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: hydra.sweep.dir=") and "in use" in lines[0], lines
        assert (tmp_path / "sweep" / "mlflow_parent.json").read_text() == before  # not taken over
        _, runs = mlflow_runs(tmp_path)
        assert sum(r.data.tags.get("sweep_role") == "parent" for r in runs) == 1  # no second parent
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=90) == 143
    finally:
        first.kill()
    again = cli("-m", "drop_prob=0.3", epochs=1)  # the first sweep ended: rerunning in its folder is fine
    assert again.returncode == 0, again.stderr[-2000:]
