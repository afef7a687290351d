"""Config composition and validation, in-process through the same pre-flight the CLI runs."""

import pytest

from helpers.cli import tiny_overrides
from sweep.config import ConfigError
from sweep.preflight import check_cli


@pytest.fixture
def check(tiny_root, tmp_path):
    return lambda *args: check_cli([*tiny_overrides(tiny_root, tmp_path), *args])


def test_defaults_reproduce_the_lab(check):
    (c,) = check()
    assert c.model.hidden_sizes == [512, 512, 512, 512] and c.model.init == "xavier_uniform"
    assert (c.optimizer.name, c.optimizer.lr, c.trainer.batch_size, c.seed, c.drop_prob) == (
        "adam",
        1e-3,
        100,
        777,
        0.3,
    )
    assert c.input_drop_prob == 0.0 and c.layer_rates == [0.3] * 4 and c.trainer.drop_last


def test_lab_experiment_has_no_validation_holdout(tiny_root, tmp_path):
    args = [a for a in tiny_overrides(tiny_root, tmp_path) if not a.startswith("data.val_size")]
    (c,) = check_cli([*args, "+experiment=lab"])
    assert c.data.val_size == 0 and c.objective == "test_acc"


def test_per_layer_rate_set_one_by_one(check):
    (c,) = check("drop_prob=0.4", "layer_drop_probs.2=0.1")
    assert c.layer_rates == [0.4, 0.4, 0.1, 0.4]


def test_every_grid_point_is_checked(check):
    assert sorted(c.drop_prob for c in check("drop_prob=0,0.2,0.3,0.5")) == [0, 0.2, 0.3, 0.5]


def test_constant_capacity_is_off_by_default_and_a_bool(check):
    (c,) = check()
    assert c.model.constant_capacity is False
    (c,) = check("model.constant_capacity=true")
    assert c.model.constant_capacity is True


def test_groups(check):
    (c,) = check("optimizer=sgd")
    assert c.optimizer.name == "sgd" and c.optimizer.momentum == 0.9


@pytest.mark.parametrize(
    "args, words",
    [
        (["drop_prob=1.0"], ["drop_prob=1.0", "[0, 1)"]),
        (["drop_prob=-0.1"], ["drop_prob=-0.1", "[0, 1)"]),
        (["drop_prob=nan"], ["drop_prob=nan", "[0, 1)"]),
        (["drop_prob=abc"], ["drop_prob", "abc"]),
        (["input_drop_prob=1"], ["input_drop_prob=1", "[0, 1)"]),
        (["layer_drop_probs=[0.1,0.2]"], ["layer_drop_probs", "one entry per hidden layer"]),
        (["layer_drop_probs.1=1.5"], ["layer_drop_probs.1=1.5"]),
        (["drop_prob=0,0.2,1.0"], ["drop_prob=1.0"]),
        (["trainer.epochs=0"], ["trainer.epochs=0", ">= 1"]),
        (["trainer.epochs=-3"], ["trainer.epochs=-3"]),
        (["trainer.batch_size=0"], ["trainer.batch_size=0"]),
        (["trainer.precision=fp16"], ["trainer.precision='fp16'", "fp32, bf16"]),
        (["trainer.cpu_matmul=mkl"], ["trainer.cpu_matmul='mkl'", "auto, onednn, blas"]),
        (["optimizer=adamw"], ["optimizer=adamw", "adam", "sgd"]),
        (["data=cifar"], ["data=cifar", "mnist", "fashion_mnist"]),
        (["trainer.epoch=3"], ["trainer.epoch"]),
        (["optimizer.lr=0"], ["optimizer.lr=0"]),
        (["objective=accuracy"], ["objective='accuracy'", "val_acc"]),
        (["drop_prob=interval(0.5,0.1)"], ["drop_prob=interval(0.5,0.1)", "lower < upper"]),
        (["model.constant_capacity=maybe"], ["model.constant_capacity", "maybe"]),
        (["trainer.eval_every=0"], ["trainer.eval_every=0", "integer >= 1"]),
        (["trainer.eval_every=1.5"], ["trainer.eval_every", "1.5"]),
        (["data.split_seed=-1"], ["data.split_seed=-1", "integer in [0, 18446744073709551614]"]),
        (
            ["-m", "hydra/sweeper=optuna", "+search=dropout", "objective=test_acc"],
            ["objective=test_acc is refused for a search", "the test set must not select", "use val_acc"],
        ),
        (
            ["-m", "+search=dropout", "objective=[val_acc,gap]", "hydra.sweeper.direction=[maximize,minimize]"],
            ["objective=[val_acc,gap] is refused for a search", "gap reads the test set", "val_gap"],
        ),
        (["-m", "+search=dropout", "objective=test_loss", "hydra.sweeper.direction=minimize"], ["objective=test_loss"]),
    ],
)
def test_bad_values_give_one_line_naming_key_value_and_allowed(check, args, words):
    with pytest.raises(ConfigError) as err:
        check(*args)
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_data_root_that_is_a_file(check, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(ConfigError, match="data.root"):
        check(f"data.root={f}")


# ------------------------------------------------------------------ pre-flight: meanings and store probes
def test_objective_directions_follow_meaning():
    from sweep.config import objective_direction
    from sweep.training.train import METRICS as OBJECTIVES

    assert [objective_direction(o) for o in ("val_acc", "test_acc", "train_acc")] == ["maximize"] * 3
    assert [objective_direction(o) for o in ("val_loss", "test_loss", "train_loss", "gap")] == ["minimize"] * 4
    assert objective_direction(["val_acc", "gap"]) == ["maximize", "minimize"]
    assert objective_direction("perplexity") is None and objective_direction(None) is None
    assert all(objective_direction(o) in ("maximize", "minimize") for o in OBJECTIVES)


@pytest.mark.parametrize(
    "args, direction",
    [
        ([], "maximize"),
        (["objective=val_loss"], "minimize"),
        (["objective=[val_gap,val_acc]"], ["minimize", "maximize"]),
        (["objective=val_loss", "hydra.sweeper.direction=maximize"], "maximize"),  # typed: an explicit override
    ],
)
def test_sweeper_direction_defaults_to_the_objectives_meaning(check, args, direction):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from sweep.config import PROJECT_ROOT

    check("-m", "+search=dropout", *args)
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["+search=dropout", *args], return_hydra_config=True)
    assert OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)["direction"] == direction


def test_probe_refuses_a_corrupt_sqlite_file_without_touching_it(tmp_path):
    import os

    from sweep.preflight import probe_database

    db = tmp_path / "x.db"
    db.write_bytes(os.urandom(8192))
    before = db.read_bytes()
    with pytest.raises(ConfigError, match="not a SQLite database"):
        probe_database("tracking.uri", f"sqlite:///{db}", "experiments", "MLflow")
    assert db.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["x.db"]


def test_probe_accepts_a_missing_file_in_a_writable_folder_and_creates_nothing(tmp_path):
    from sweep.preflight import probe_database

    probe_database("hydra.sweeper.storage", f"sqlite:///{tmp_path}/new.db", "studies", "Optuna")
    assert list(tmp_path.iterdir()) == []


def test_probe_refuses_a_read_only_or_foreign_file(tmp_path):
    import sqlite3

    from sweep.preflight import probe_database

    db = tmp_path / "mlflow.db"
    sqlite3.connect(db).execute("CREATE TABLE studies (x)").connection.close()
    with pytest.raises(ConfigError, match="not an MLflow store"):
        probe_database("tracking.uri", f"sqlite:///{db}", "experiments", "MLflow")
    probe_database("hydra.sweeper.storage", f"sqlite:///{db}", "studies", "Optuna")  # Optuna's: fine
    db.chmod(0o444)
    with pytest.raises(ConfigError, match="read-only"):
        probe_database("hydra.sweeper.storage", f"sqlite:///{db}", "studies", "Optuna")


def test_a_search_space_typed_on_the_command_line_reaches_the_sweepers_checks(check):
    configs = check(
        "-m", "hydra/sweeper=optuna", "drop_prob=interval(0,0.5)", "hydra.sweeper.enqueue=[{drop_prob:0.4}]"
    )
    assert sorted(c.drop_prob for c in configs)[0] == 0.0
    with pytest.raises(
        ConfigError, match=r"hydra.sweeper.enqueue\[0\]: drop_prob=0.6 is outside drop_prob=interval\(0,0.5\)"
    ):
        check("-m", "hydra/sweeper=optuna", "drop_prob=interval(0,0.5)", "hydra.sweeper.enqueue=[{drop_prob:0.6}]")


def test_split_seed_and_eval_every_defaults(check):
    (c,) = check()
    assert (c.data.split_seed, c.trainer.eval_every, c.seed) == (0, 1, 777)


def test_validation_objectives_may_drive_a_search(check):
    (c, *_) = check(
        "-m", "+search=dropout", "objective=[val_acc,val_gap]", "hydra.sweeper.direction=[maximize,minimize]"
    )
    assert list(c.objective) == ["val_acc", "val_gap"]


def test_test_metrics_may_still_be_returned_by_a_grid_and_a_single_run(check, tiny_root, tmp_path):
    args = [a for a in tiny_overrides(tiny_root, tmp_path) if not a.startswith("data.val_size")]
    assert [c.objective for c in check_cli(["-m", *args, "+experiment=lab", "drop_prob=0,0.5"])] == ["test_acc"] * 2
    assert check("objective=gap")[0].objective == "gap"
