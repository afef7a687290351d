"""The median pruner's default warm-up: a share of a trial's epochs (README, Pruning: high dropout rates are
behind in the first epochs), derived from the app hook's resource, and honoured by the job's reporter."""

from __future__ import annotations

import optuna
import pytest
from omegaconf import OmegaConf

from hydra_plugins.dropout_optuna_sweeper.config import PrunerArgs, SamplerArgs
from sweep.search.choices import default_warmup
from sweep.search.loop import OptunaSweeperImpl
from sweep.search.trial import MAX_EPOCHS_ATTR, PRUNER_ATTR, TrialReporter

APP = {"optuna": {"hook": "sweep.optuna_hook.DropoutHook"}}  # this project's hook: a trial's resource is trainer.epochs


def sweeper(**kw) -> OptunaSweeperImpl:
    base = dict(
        sampler="tpe",
        seed=777,
        sampler_args=SamplerArgs(),
        direction="maximize",
        n_trials=5,
        n_jobs=1,
        storage="sqlite:////tmp/x.db",
        study_name="s",
        pruner="median",
        pruner_args=PrunerArgs(),
        max_failure_rate=0.2,
        heartbeat_interval=5,
        grace_period=30,
        params={"x": "interval(0,1)"},
        enqueue=[],
    )
    return OptunaSweeperImpl(**{**base, **kw})


@pytest.mark.parametrize("epochs, warmup", [(None, 0), (0, 0), (1, 0), (2, 1), (3, 2), (12, 8), (15, 10), (60, 40)])
def test_default_warmup_is_two_thirds_of_the_epochs_rounded_down(epochs, warmup):
    assert default_warmup(epochs) == warmup


def test_the_plugin_leaves_the_warmup_to_the_epochs():
    assert PrunerArgs().n_warmup_steps is None and PrunerArgs().n_startup_trials == 5


def test_pruner_description_derives_the_warmup_from_trainer_epochs():
    s = sweeper()
    s.config = OmegaConf.create({"trainer": {"epochs": 12}, **APP})
    assert s.pruner_description() == {
        "name": "median",
        "args": {"n_startup_trials": 5, "n_warmup_steps": 8, "interval_steps": 1},
    }


def test_a_given_warmup_is_kept():
    s = sweeper(pruner_args=PrunerArgs(n_warmup_steps=1))
    s.config = OmegaConf.create({"trainer": {"epochs": 12}, **APP})
    assert s.pruner_description()["args"]["n_warmup_steps"] == 1


def test_an_app_that_does_not_say_its_epochs_gets_no_warmup():
    s = sweeper()
    s.config = OmegaConf.create({"x": 1})  # a plain app: the no-op hook, no max_resource
    assert s.pruner_description()["args"]["n_warmup_steps"] == 0


def test_the_default_median_never_prunes_before_the_warmup(tmp_path):
    """Five finished trials at 0.95 every epoch; a trial at 0.10 every epoch is let through epochs 1..7 and
    pruned at the first check allowed, after epoch 8 = two thirds of 12 (it has trained 8 epochs)."""
    s = sweeper()
    s.config = OmegaConf.create({"trainer": {"epochs": 12}, **APP})
    url = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(storage=url, study_name="s", direction="maximize")
    study.set_user_attr(PRUNER_ATTR, s.pruner_description())
    for _ in range(5):  # n_startup_trials
        study.add_trial(
            optuna.trial.create_trial(
                value=0.95, intermediate_values={e: 0.95 for e in range(1, 13)}, distributions={}, params={}
            )
        )
    t = study.ask()
    t.set_user_attr(MAX_EPOCHS_ATTR, 12)
    r = TrialReporter(url, "s", t.number)
    stops = [r.should_stop(epoch, 0.10) for epoch in range(1, 9)]
    assert stops == [False] * 7 + [True]


def test_the_default_median_waits_for_five_finished_trials(tmp_path):
    s = sweeper()
    s.config = OmegaConf.create({"trainer": {"epochs": 3}, **APP})  # warm-up 2
    url = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(storage=url, study_name="s", direction="maximize")
    study.set_user_attr(PRUNER_ATTR, s.pruner_description())
    for _ in range(4):
        study.add_trial(
            optuna.trial.create_trial(
                value=0.95, intermediate_values={1: 0.95, 2: 0.95, 3: 0.95}, distributions={}, params={}
            )
        )
    t = study.ask()
    t.set_user_attr(MAX_EPOCHS_ATTR, 3)
    r = TrialReporter(url, "s", t.number)
    assert [r.should_stop(e, 0.1) for e in (1, 2)] == [False, False]  # 4 finished trials: never


@pytest.mark.slow
def test_the_real_cli_prunes_no_earlier_than_two_thirds_of_the_epochs(cli):
    """End to end: the sweeper stores the derived warm-up in the study and the job's reporter honours it. A
    learning rate of 1e-7 learns nothing; with 6 epochs it is stopped after epoch 4 (2/3 of 6), not before."""
    res = cli(
        "-m",
        "hydra/sweeper=optuna",
        f"hydra.sweeper.storage=sqlite:///{cli.out}/optuna.db",
        "hydra.sweeper.study_name=t",
        "hydra.sweeper.sampler=grid",
        "optimizer.lr=choice(0.001,0.0000001)",
        "hydra.sweeper.pruner=median",
        "hydra.sweeper.pruner_args.n_startup_trials=1",
        epochs=6,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{cli.out}/optuna.db")
    assert study.user_attrs[PRUNER_ATTR]["args"]["n_warmup_steps"] == 4
    good, bad = study.trials
    assert good.state.name == "COMPLETE" and sorted(good.intermediate_values) == [1, 2, 3, 4, 5, 6]
    assert bad.state.name == "PRUNED" and sorted(bad.intermediate_values) == [1, 2, 3, 4]
