"""hydra/sweeper=study (sweep/study.py): the grid it expands, the design it fixes from the exploratory phase, a tiny
two-phase study through the real CLI (fresh seeds and data subsets, the four verdict words, resume with the plan
kept), and a store with failed, killed and param-less children that the summary, the report and the notebook
survive and name."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pandas as pd
import pytest

from helpers.cli import ROOT, mlflow_runs
from sweep import analysis as A
from sweep import protocol as P
from sweep import record, study
from sweep.analysis import stats as S
from sweep.config import StudyConf, TrackingConf
from sweep.parent import summarize_sweep

# ---------------------------------------------------------------- the grid


def test_grid_expands_params_and_command_line_like_the_basic_sweeper():
    got = study.grid({"drop_prob": "0,0.5", "input_drop_prob": "0,0.2"}, ["+experiment=overfit", "drop_prob=0.2,0.3"])
    # the command line's drop_prob replaces the config's axis; plain overrides go to every setting
    assert sorted(map(sorted, got)) == sorted(
        sorted(["input_drop_prob=" + i, "+experiment=overfit", "drop_prob=" + p])
        for i in ("0", "0.2")
        for p in ("0.2", "0.3")
    )


def test_settings_list_is_combined_with_the_grid_and_the_command_line_wins():
    got = study.grid(
        {"data.train_subset": "1000,null"},
        ["input_drop_prob=0.1"],
        [{"drop_prob": 0, "input_drop_prob": 0}, {"drop_prob": 0.5, "input_drop_prob": 0.2}],
    )
    assert got == [
        ["data.train_subset=1000", "input_drop_prob=0.1", "drop_prob=0"],
        ["data.train_subset=null", "input_drop_prob=0.1", "drop_prob=0"],
        ["data.train_subset=1000", "input_drop_prob=0.1", "drop_prob=0.5"],
        ["data.train_subset=null", "input_drop_prob=0.1", "drop_prob=0.5"],
    ]
    assert study.override_value(None) == "null" and study.override_value(True) == "true"


@pytest.mark.parametrize(
    "params, args, settings", [({"seed": "1,2"}, [], None), ({}, ["seed=3"], None), ({}, [], [{"seed": 1}])]
)
def test_a_seed_axis_is_refused(params, args, settings):
    with pytest.raises(study.StudyError, match="draws its replicates itself|replicate index the study draws"):
        study.grid(params, args, settings)


def test_jobs_are_replicate_major_and_carry_their_phase():
    assert study.jobs([["drop_prob=0"], ["drop_prob=0.5"]], [1001, 1002], P.CONFIRMATORY) == [
        ["drop_prob=0", "seed=1001", "study.phase=confirmatory"],
        ["drop_prob=0.5", "seed=1001", "study.phase=confirmatory"],
        ["drop_prob=0", "seed=1002", "study.phase=confirmatory"],
        ["drop_prob=0.5", "seed=1002", "study.phase=confirmatory"],
    ]


# ---------------------------------------------------------------- the design


def _exploratory(diffs_test: dict[str, list[float]], val: dict[str, float] | None = None) -> pd.DataFrame:
    """An exploratory frame: p=0 and the given settings (by drop_prob), one row per replicate; test accuracy of the
    setting = baseline + diff (points), gap the negative of that."""
    rows = []
    n = len(next(iter(diffs_test.values())))
    for seed in range(1, n + 1):
        base = 0.90 + seed / 1000
        rows.append(_row("0.0", seed, base, 0.9))
        for p, d in diffs_test.items():
            rows.append(_row(p, seed, base + d[seed - 1] / 100, (val or {}).get(p, 0.9)))
    return A.frame_from_search(pd.DataFrame(rows))


def _row(p, seed, test, val):
    return {
        "run_id": f"{p}-{seed}",
        "status": "FINISHED",
        "params.drop_prob": p,
        "params.input_drop_prob": "0.0",
        "params.seed": str(seed),
        "params.study.phase": "exploratory",
        "metrics.test_acc": test,
        "metrics.val_acc": val,
        "metrics.train_acc": 1.0,
        "metrics.gap": 1.0 - test,
        "tags.overrides": f"drop_prob={p} seed={seed} study.phase=exploratory",
    }


def _study(**kw):
    from omegaconf import OmegaConf

    return OmegaConf.structured(StudyConf(**{"smallest_effect": {"test_acc": 0.5, "gap": 0.5}, **kw}))


def test_design_powers_the_widest_spread_at_holms_hardest_step():
    diffs = {"0.2": [0.3, -0.5, 0.9, 0.1, -0.2], "0.5": [0.1, 0.2, 0.0, 0.1, 0.2]}
    exp = _exploratory(diffs)
    plan = study.design(exp, [["drop_prob=0.0"], ["drop_prob=0.2"], ["drop_prob=0.5"]], _study())
    sd = pd.Series(diffs["0.2"]).std() / 100  # the wider of the two spreads, as a fraction
    # two comparisons per metric: Holm's hardest step tests at 0.05 / 2
    expected = S.replicates_for(0.005, sd, 0.025, 0.8)
    assert plan["replicates"] == expected and plan["why"] == "designed"
    assert plan["seeds"] == [1001, 1000 + expected] and len(plan["settings"]) == 3
    assert plan["worst"]["test_acc"]["sd"] == pytest.approx(sd) and plan["worst"]["test_acc"]["comparisons"] == 2
    assert any(line.startswith("Confirmatory phase: 3 settings x") for line in plan["lines"])


def test_design_cap_binds_and_says_what_the_design_can_detect():
    exp = _exploratory({"0.5": [2.0, -2.5, 1.5, -1.0, 3.0]})
    plan = study.design(exp, [["drop_prob=0.0"], ["drop_prob=0.5"]], _study(max_replicates=8))
    assert plan["replicates"] == 8 and plan["why"] == "capped at study.max_replicates=8"
    mde = plan["worst"]["test_acc"]["mde"]
    assert mde > 0.005 and S.power(mde, plan["worst"]["test_acc"]["sd"], 8, 0.05) == pytest.approx(0.8, abs=1e-6)
    fixed = study.design(exp, [["drop_prob=0.0"], ["drop_prob=0.5"]], _study(confirmatory=4))
    assert fixed["replicates"] == 4 and fixed["why"] == "fixed by study.confirmatory"


def test_design_best_keeps_the_best_with_dropout_by_validation_and_its_baseline():
    exp = _exploratory({"0.2": [0.1, 0.2, 0.3], "0.5": [0.5, 0.4, 0.6]}, val={"0.2": 0.95, "0.5": 0.93})
    settings = [["drop_prob=0.0"], ["drop_prob=0.2"], ["drop_prob=0.5"]]
    plan = study.design(exp, settings, _study(confirm="best"))
    assert plan["settings"] == [["drop_prob=0.0"], ["drop_prob=0.2"]]  # 0.2: best validation, not best test
    assert plan["lines"][0].startswith("Chosen on validation accuracy (study.confirm=best): p=0.2 (95.00 %")


def test_a_frozen_plan_is_reused_only_for_its_grid():
    settings = [["drop_prob=0"], ["drop_prob=0.5"]]
    plan = {"settings": settings[1:], "replicates": 7, "seeds": [1001, 1007], "why": "designed", "lines": ["x"]}
    again = study.frozen(study.plan_tag(plan, settings), list(reversed(settings)))
    assert again["settings"] == [["drop_prob=0.5"]] and again["replicates"] == 7
    assert again["lines"][0].startswith("(fixed by an earlier run of this study")
    with pytest.raises(study.StudyError, match="another grid"):
        study.frozen(study.plan_tag(plan, settings), [["drop_prob=0"], ["drop_prob=0.3"]])


# ---------------------------------------------------------------- a tiny two-phase study through the CLI

STUDY = [
    "-m",
    "hydra/sweeper=study",
    "hydra/launcher=basic",
    "drop_prob=0,0.5",
    "data.train_subset=300",
    "data.resample=subset",
    "study.exploratory=3",
    "study.max_replicates=4",
    "tracking.sweep_id=tiny",
]


@pytest.mark.slow
def test_a_tiny_two_phase_study_end_to_end_and_its_resume(cli):
    res = cli(*STUDY, epochs=2)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    client, runs = mlflow_runs(cli.out)
    children = [r for r in runs if r.data.tags.get("sweep_role") != "parent"]
    (parent,) = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    exp = [r for r in children if r.data.params["study.phase"] == "exploratory"]
    conf = [r for r in children if r.data.params["study.phase"] == "confirmatory"]
    plan = json.loads(parent.data.tags[study.PLAN_TAG])
    n = plan["replicates"]
    assert len(exp) == 6 and len(conf) == 2 * n and 3 <= n <= 4
    assert {r.data.params["seed"] for r in exp} == {"1", "2", "3"}
    assert {int(r.data.params["seed"]) for r in conf} == set(range(1001, 1001 + n))
    assert {r.info.status for r in children} == {"FINISHED"}

    # a replicate draws the training subset: same images for both settings of one replicate, other images in
    # another replicate, and fresh ones in the confirmatory phase
    def train_digest(r):
        (train,) = [
            i.dataset.digest
            for i in client.get_run(r.info.run_id).inputs.dataset_inputs
            if i.dataset.name.endswith("-train")
        ]
        return train

    by_seed: dict[str, set[str]] = {}
    for r in children:
        by_seed.setdefault(r.data.params["seed"], set()).add(train_digest(r))
    assert all(len(d) == 1 for d in by_seed.values())  # paired: one subset per replicate
    assert len({d for ds in by_seed.values() for d in ds}) == len(by_seed)  # every replicate its own subset
    for r in children:  # the machine each run's products ran on
        assert r.data.tags["cpu_model"] and r.data.tags["onednn_isa"] and r.data.tags["torch_version"]

    out = res.stdout
    assert "The plan, fixed before the confirmatory phase:" in out and "== Confirmatory phase" in out
    said = out[out.index("Confirmatory verdicts:") :]
    words = re.findall(r"\): (\w+), the interval", said)
    assert len(words) == 2 and set(words) <= set(P.VERDICTS), said  # test_acc and gap: the four words only
    assert "n.d." not in out and "not distinguishable" not in out and "too few seeds" not in out
    assert (cli.out / "sweep" / P.PLAN_ARTIFACT).is_file()
    assert P.PLAN_ARTIFACT in {a.path for a in client.list_artifacts(parent.info.run_id)}

    # the same command again: every job is reused, the plan is the one already fixed
    again = cli(*STUDY, "hydra.sweep.dir=" + str(cli.out / "sweep2"), epochs=2)
    assert again.returncode == 0, again.stderr[-3000:]
    _, runs2 = mlflow_runs(cli.out)
    assert len(runs2) == len(runs)
    assert "(fixed by an earlier run of this study; reused)" in again.stdout
    assert (again.stdout + again.stderr).count("not training it again") == 6 + 2 * n


@pytest.mark.slow
def test_preflight_refuses_a_study_without_tracking_or_with_a_seed_axis(cli):
    for extra, said in (
        (["tracking.enabled=false"], "tracking.enabled=false is invalid with hydra/sweeper=study"),
        (["seed=1,2"], "seed=1,2 is invalid under hydra/sweeper=study"),
    ):
        r = cli(*STUDY, *extra, epochs=1)
        assert r.returncode == 2 and said in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    _, runs = mlflow_runs(cli.out)
    assert runs == []


# ---------------------------------------------------------------- failed, killed and param-less children


def _store_with_failures(tmp_path):
    """A parent with 2 settings x 3 replicates FINISHED, a FAILED child that never logged params (its job died
    at start-up), a KILLED child with params, and a point FAILED once then trained again (grid resume)."""
    tracking = TrackingConf(
        uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_location=str(tmp_path / "art"), optuna_storage=None
    )
    client, exp_id = record.connect(tracking)
    parent = record.start_run(client, exp_id, "sweep", {"sweep_role": "parent", "sweep_id": "f"}).info.run_id
    sweep_dir = tmp_path / "sweep"
    record.write_parent(sweep_dir, parent, "f")

    def child(p, seed, status="FINISHED", params=True):
        with pytest.raises(RuntimeError) if status == "FAILED" else _nothing():
            with record.job_run(tracking, f"p={p} seed={seed}", {}, sweep_dir=sweep_dir) as run:
                if params:
                    run.log_params(
                        {
                            "drop_prob": str(p),
                            "input_drop_prob": "0.0",
                            "seed": str(seed),
                            "layer_drop_probs": "[None, None]",
                            "study.alpha": "0.05",
                        }
                    )
                if status == "FAILED":
                    raise RuntimeError("KeyError: '_MLFLOW_TELEMETRY_SESSION_ID'")
                run.log_metrics(
                    {
                        "train_acc": 1.0,
                        "val_acc": 0.9 + p / 10 + seed / 1000,
                        "test_acc": 0.9 + p / 10 + seed / 1000,
                        "gap": 0.1 - p / 10,
                    },
                    step=1,
                )
        return client.search_runs([exp_id], order_by=["attributes.start_time DESC"], max_results=1)[0].info.run_id

    for seed in (1, 2, 3):
        child(0.0, seed)
    child(0.5, 1, status="FAILED")  # then trained again by grid resume
    for seed in (1, 2, 3):
        child(0.5, seed)
    child(0.5, 4, status="FAILED", params=False)  # died before logging anything
    killed = child(0.5, 5)
    client.set_terminated(killed, "KILLED")
    return client, parent, sweep_dir, tracking


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_summary_counts_and_names_failed_killed_and_paramless_children(tmp_path):
    client, parent, sweep_dir, _ = _store_with_failures(tmp_path)
    df = summarize_sweep(client, parent, sweep_dir)
    text = A.end_of_sweep_text(df, parent, sweep_dir)
    flat = " ".join(text.split())
    assert text.startswith(
        "Sweep summary: 9 runs: 6 finished, 0 pruned, 2 failed, 1 killed; 2 settings x 3 replicates."
    )
    assert "Not counted (3 runs that did not finish):" in flat
    assert "p=0.5 seed=4 [FAILED: RuntimeError: KeyError: '_MLFLOW_TELEMETRY_SESSION_ID']" in flat
    assert "p=0.5 seed=5 [KILLED]" in flat
    assert S.NO_PARAMS_LABEL in set(df[S.LABEL])
    table = A.setting_table(df).set_index("label")
    assert table.loc["p=0.5", "seeds"] == 3 and table.loc["p=0.5", "d_test_verdict"] in P.VERDICTS
    assert client.get_run(parent).data.tags["children"] == "6 finished, 0 pruned, 2 failed, 1 killed / 9"


@pytest.mark.slow
def test_report_and_notebook_run_on_a_store_with_failed_killed_and_paramless_children(tmp_path):
    client, parent, _, tracking = _store_with_failures(tmp_path)
    out = tmp_path / "report"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "sweep.report",
            "--tracking-uri",
            tracking.uri,
            "--parent-run-id",
            parent,
            "--out",
            str(out / "report.html"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    html = (out / "report.html").read_text()
    assert "Traceback" not in html and "Not counted" in html and "_MLFLOW_TELEMETRY_SESSION_ID" in html
    summary = json.loads((out / "report_figures" / "summary.json").read_text())
    assert summary["ok"] and "accuracy_vs_dropout" in summary["figures"]


def test_agreement_between_phases_separates_decided_from_contradicted():
    def table(verdicts):
        return pd.DataFrame([{"setting": k, "label": k, "metric": m, "verdict": v} for (k, m), v in verdicts.items()])

    exp = table(
        {
            ("a", "test_acc"): "inconclusive",
            ("b", "test_acc"): "higher",
            ("c", "test_acc"): "higher",
            ("d", "test_acc"): "equivalent",
        }
    )
    conf = table(
        {
            ("a", "test_acc"): "lower",
            ("b", "test_acc"): "higher",
            ("c", "test_acc"): "lower",
            ("d", "test_acc"): "inconclusive",
        }
    )
    agree = A.agreement(exp, conf).set_index("label")
    assert agree["relation"].to_dict() == {"a": A.DECIDED, "b": A.SAME, "c": A.CONTRADICTED, "d": A.CONTRADICTED}
    assert A.agreement_text(agree.reset_index()) == (
        "Exploratory vs confirmatory, 4 verdicts: 1 the same, 1 inconclusive in the exploratory phase and decided by "
        "the confirmatory one, 2 contradicted: c test_acc (higher -> lower); d test_acc (equivalent -> inconclusive)."
    )


def test_crosscheck_compares_two_runs_of_a_study_verdict_by_verdict(tmp_path):
    """Two confirmatory phases of the same grid: one where p=0.5 clearly wins, one where it is noisier; the
    relation of each pair of verdicts is read off, and a direction against equivalence is a contradiction."""

    def phase(shift, spread):
        rows = []
        for seed in range(1001, 1011):
            base = 0.90 + seed % 7 / 1000
            noise = ((seed * 37) % 11 - 5) / 1000 * spread
            rows += [
                _row("0.0", seed, base, 0.9),
                _row("0.5", seed, base + shift + noise, 0.9),
                _row("0.2", seed, base + noise / 10, 0.9),
            ]
        for r in rows:
            r["params.study.phase"] = "confirmatory"
        return A.frame_from_search(pd.DataFrame(rows))

    table = A.crosscheck(phase(0.01, 1), phase(0.01, 8)).set_index(["label", "metric"])
    assert table.loc[("p=0.5", "test_acc"), "a"] == "higher"
    assert table.loc[("p=0.2", "test_acc"), "relation"] == A.SAME == "same"  # equivalent in both
    assert table.loc[("p=0.5", "test_acc"), "relation"] in (A.SAME, A.ONE_INCONCLUSIVE)
    clash = A.crosscheck(phase(0.01, 1), phase(0.0, 0.2)).set_index(["label", "metric"])
    assert clash.loc[("p=0.5", "test_acc"), ["a", "b", "relation"]].tolist() == ["higher", "equivalent", A.CONTRADICTED]
