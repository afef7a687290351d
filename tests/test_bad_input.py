"""Bad input through the real CLI: exit code 2, one line naming the key or file and what is allowed,
no traceback, and no MLflow run recorded."""

import shutil

import pytest

from helpers.cli import mlflow_runs
from helpers.idx import write_idx_dataset
from helpers.net import free_port

pytestmark = pytest.mark.slow
SECRET = "hunter2-s3cret"


def _assert_one_line_error(res, *words):
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-2000:]
    assert "Traceback" not in res.stderr + res.stdout
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def _assert_nothing_recorded(out):
    if (out / "mlflow.db").exists():
        _, runs = mlflow_runs(out)
        assert runs == []


@pytest.fixture
def own_data(tmp_path):
    """A private copy of the tiny dataset the test may corrupt."""
    root = tmp_path / "idx"
    write_idx_dataset(root, "mnist", n_train=600, n_test=200)
    return root


@pytest.mark.parametrize(
    "arg, words",
    [
        ("drop_prob=nan", ["drop_prob=nan", "[0, 1)"]),
        ("input_drop_prob=abc", ["input_drop_prob", "abc"]),
        ("layer_drop_probs=[0.1,0.2,0.3]", ["layer_drop_probs", "one entry per hidden layer"]),
        ("trainer.batch_size=0", ["trainer.batch_size=0", ">= 1"]),
        ("optimizer=rmsprop", ["optimizer=rmsprop", "adam, sgd"]),
        ("unknown_key=1", ["unknown_key"]),
        ("drop_prob=interval(0.5,0.1)", ["interval(0.5,0.1)", "lower < upper"]),
    ],
)
def test_bad_values(cli, arg, words):
    args = ("-m", arg) if "interval" in arg else (arg,)
    _assert_one_line_error(cli(*args), *words)
    _assert_nothing_recorded(cli.out)


@pytest.mark.parametrize(
    "damage, words",
    [
        (
            lambda raw: (raw / "train-images-idx3-ubyte").write_bytes(
                (raw / "train-images-idx3-ubyte").read_bytes()[:5000]
            ),
            ["train-images-idx3-ubyte", "truncated"],
        ),
        (
            lambda raw: (raw / "t10k-labels-idx1-ubyte").write_bytes(
                b"\x00\x00\x08\x03" + (raw / "t10k-labels-idx1-ubyte").read_bytes()[4:]
            ),
            ["t10k-labels-idx1-ubyte", "magic"],
        ),
        (
            lambda raw: shutil.copy(raw / "t10k-images-idx3-ubyte", raw / "train-labels-idx1-ubyte"),
            ["train-labels-idx1-ubyte"],
        ),
    ],
)
def test_damaged_idx_files(cli, own_data, damage, words):
    damage(own_data / "MNIST" / "raw")
    _assert_one_line_error(cli(f"data.root={own_data}"), *words)
    _assert_nothing_recorded(cli.out)


def test_checksum_mismatch_is_refused_when_verifying(cli, own_data):
    # the tiny files are well-formed IDX but are not MNIST: SHA-256 verification must refuse them
    _assert_one_line_error(cli(f"data.root={own_data}", "data.verify=true"), "SHA-256")
    _assert_nothing_recorded(cli.out)


def test_data_root_that_is_a_file(cli, tmp_path):
    f = tmp_path / "not-a-folder"
    f.write_text("x")
    _assert_one_line_error(cli(f"data.root={f}"), "data.root", "folder")


def test_output_folder_that_cannot_be_written(cli, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    _assert_one_line_error(
        cli("-m", "drop_prob=0,0.3", f"hydra.sweep.dir={blocker}/sweep"), "hydra.sweep.dir", "cannot write"
    )
    _assert_one_line_error(cli(f"tracking.uri=sqlite:///{blocker}/mlflow.db"), "tracking.uri", "cannot write")


@pytest.mark.parametrize("scheme", ["http", "postgresql"])
def test_tracking_server_that_does_not_answer_shows_uri_without_password(cli, scheme):
    uri = f"{scheme}://alice:{SECRET}@127.0.0.1:{free_port()}" + ("/mlflow" if scheme == "postgresql" else "")
    line = _assert_one_line_error(cli(f"tracking.uri={uri}"), "tracking.uri", "alice:***@127.0.0.1")
    assert SECRET not in line


@pytest.mark.parametrize(
    "arg, words",
    [
        ("hydra.sweeper.n_trials=0", ["hydra.sweeper.n_trials=0", ">= 1"]),
        ("hydra.sweeper.direction=up", ["hydra.sweeper.direction", "maximize, minimize"]),
        ("hydra.sweeper.pruner=sometimes", ["hydra.sweeper.pruner", "median"]),
    ],
)
def test_bad_sweeper_options_stop_before_any_run(cli, arg, words):
    _assert_one_line_error(cli("-m", "+search=dropout", arg), *words)
    _assert_nothing_recorded(cli.out)
