"""Typed configuration: dataclasses registered in Hydra's ConfigStore.

OmegaConf checks types while Hydra composes (a non-number for a float fails there); the
`__post_init__` checks below run when `to_object` builds the dataclasses, before any data is
loaded or any MLflow run exists. Every message is one line: key, bad value, what is allowed.
The allowed values are read from the code that implements them (data/ for datasets, models/ for
activations, inits and trainer.cpu_matmul, sweep/training/train.py for precisions, devices, optimizers and
objective metrics), imported when a check runs so that importing the schema stays cheap. PROJECT_ROOT
(sweep/util/paths.py) is re-exported here; `${root:}` in YAML resolves to it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from sweep import protocol
from sweep.keys import METRIC_DIRECTIONS
from sweep.util.paths import PROJECT_ROOT

# ${root:} in YAML: outputs never depend on the directory Hydra (or the user) runs from.
OmegaConf.register_new_resolver("root", lambda: str(PROJECT_ROOT), replace=True)
from sweep.util import sweepdir  # noqa: E402,F401 - registers ${sweep_dir:} (every sweep its own folder)


class ConfigError(ValueError):
    """A config value a user can fix; the message is the whole story."""


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def check_rate(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        _fail(key, value, "a dropout rate must be a number in [0, 1)")


def check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _fail(key, value, "allowed: " + ", ".join(allowed))


def check_positive_int(key: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(key, value, f"must be an integer >= {minimum}")


@dataclass
class ModelConf:
    name: str = "mlp"
    in_features: int = 784
    hidden_sizes: List[int] = field(default_factory=lambda: [512, 512, 512, 512])
    num_classes: int = 10
    activation: str = "relu"
    init: str = "xavier_uniform"
    constant_capacity: bool = False  # widen hidden layer i to hidden_sizes[i] / (1 - its rate) (Srivastava Fig. 9b)
    max_norm: Optional[float] = None  # cap each hidden unit's incoming weight norm (models/maxnorm.py)

    def __post_init__(self):
        # the allowed values live beside the code that uses them (torch): the schema imports light
        from models.mlp import ACTIVATIONS, INITS

        if self.max_norm is not None and not (math.isfinite(self.max_norm) and self.max_norm > 0):
            _fail("model.max_norm", self.max_norm, "must be null (no constraint) or a finite number > 0")
        if not isinstance(self.constant_capacity, bool):
            _fail("model.constant_capacity", self.constant_capacity, "must be true or false")
        check_choice("model.activation", self.activation, tuple(ACTIVATIONS))
        check_choice("model.init", self.init, tuple(INITS))
        if not self.hidden_sizes:
            _fail("model.hidden_sizes", self.hidden_sizes, "needs at least one hidden layer")
        for i, size in enumerate(self.hidden_sizes):
            check_positive_int(f"model.hidden_sizes.{i}", size)


@dataclass
class DataConf:
    name: str = "mnist"
    root: str = "${root:}/data/files"
    val_size: int = 5000  # held out of the 60k training images, seeded; the test set is never used to select
    split_seed: int = 0  # draws the validation split and the train_eval subset; `seed` does not touch them
    train_subset: Optional[int] = None  # keep only this many training images (quick runs)
    # what a replicate (`seed`) draws besides training randomness: none | subset | split (data/load.py RESAMPLE)
    resample: str = "none"
    train_eval_size: int = 10_000  # fixed seeded subset for per-epoch train_* metrics
    download: bool = True
    verify: bool = True  # SHA-256 of the raw files

    def __post_init__(self):
        # the allowed values live beside the code that uses them (torch): the schema imports light
        from data.acquire import DATASETS
        from data.load import RESAMPLE

        check_choice("data.name", self.name, DATASETS)
        check_choice("data.resample", self.resample, RESAMPLE)
        check_positive_int("data.val_size", self.val_size, minimum=0)
        # the allowed values live beside the code that uses them (torch): the schema imports light
        from sweep.training.train import SEED_MAX

        if (
            isinstance(self.split_seed, bool)
            or not isinstance(self.split_seed, int)
            or not 0 <= self.split_seed <= SEED_MAX
        ):
            _fail(
                "data.split_seed",
                self.split_seed,
                f"must be an integer in [0, {SEED_MAX}] (the split's generator is "
                "seeded with it and the train_eval subset's with it + 1)",
            )
        check_positive_int("data.train_eval_size", self.train_eval_size)
        if self.train_subset is not None:
            check_positive_int("data.train_subset", self.train_subset)
        if Path(self.root).is_file():
            _fail("data.root", self.root, "is a file; it must be a folder (created when missing)")


@dataclass
class OptimizerConf:
    name: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    # the learning-rate schedule, stepped per batch (sweep/training/schedules.py says how each one goes)
    schedule: str = "none"
    warmup_epochs: int = 0  # linear warm-up over the first epochs (any schedule)
    step_size: int = 10  # schedule=step: lr * gamma every step_size epochs
    gamma: float = 0.1

    def __post_init__(self):
        # the allowed values live beside the code that uses them (torch): the schema imports light
        from sweep.training.schedules import SCHEDULES
        from sweep.training.train import OPTIMIZERS

        check_choice("optimizer.name", self.name, tuple(OPTIMIZERS))
        check_choice("optimizer.schedule", self.schedule, SCHEDULES)
        check_positive_int("optimizer.warmup_epochs", self.warmup_epochs, minimum=0)
        check_positive_int("optimizer.step_size", self.step_size)
        if not 0 < self.gamma <= 1:  # also rejects NaN
            _fail("optimizer.gamma", self.gamma, "must be in (0, 1]")
        if not (math.isfinite(self.lr) and self.lr > 0):
            _fail("optimizer.lr", self.lr, "must be a finite number > 0")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            _fail("optimizer.weight_decay", self.weight_decay, "must be a finite number >= 0")
        if not 0 <= self.momentum < 1:
            _fail("optimizer.momentum", self.momentum, "must be in [0, 1)")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            _fail("optimizer.betas", list(self.betas), "Adam needs exactly two numbers, each in [0, 1)")


@dataclass
class TrainerConf:
    epochs: int = 15
    eval_every: int = 1  # evaluate (and log, and report to a pruner) every k epochs; the last epoch always
    batch_size: int = 100
    drop_last: bool = True
    precision: str = "fp32"  # bf16 = autocast (AVX-512 BF16 CPUs and recent GPUs)
    device: str = "auto"  # auto: CUDA when present, else CPU
    cpu_matmul: str = "auto"  # fp32 products on the CPU: auto/onednn = oneDNN (~2x MKL here), blas = torch's own
    threads: Optional[int] = None  # torch intra-op threads; None = torch's default
    progress: bool = True

    def __post_init__(self):
        # the allowed values live beside the code that uses them (torch): the schema imports light
        from models.linear import CPU_MATMULS, onednn_available
        from sweep.training.train import DEVICES, PRECISIONS

        check_positive_int("trainer.epochs", self.epochs)
        check_positive_int("trainer.eval_every", self.eval_every)
        check_positive_int("trainer.batch_size", self.batch_size)
        check_choice("trainer.precision", self.precision, tuple(PRECISIONS))
        check_choice("trainer.device", self.device, DEVICES)
        check_choice("trainer.cpu_matmul", self.cpu_matmul, CPU_MATMULS)
        if self.cpu_matmul == "onednn" and not onednn_available():
            _fail("trainer.cpu_matmul", self.cpu_matmul, "this torch build has no oneDNN (mkldnn); use auto or blas")
        if self.threads is not None:
            check_positive_int("trainer.threads", self.threads)


@dataclass
class EvalConf:
    """Issue 12: evaluation beyond the per-epoch figures, once, after the last epoch (sweep/training/calibration.py)."""

    mc_samples: int = 0  # MC-dropout passes over the test set (dropout on, softmax averaged); 0 = off

    def __post_init__(self):
        check_positive_int("eval.mc_samples", self.mc_samples, minimum=0)


@dataclass
class StudyConf:
    """How results are read (sweep/protocol.py): the smallest effect of interest per metric, the family-wise
    alpha, the power a design aims for; and, for `hydra/sweeper=study`, its two phases (sweep/study.py)."""

    # metric -> smallest effect of interest, in the unit tables print (points for accuracies and gaps)
    smallest_effect: Dict[str, float] = field(default_factory=lambda: dict(protocol.SMALLEST_EFFECT))
    alpha: float = protocol.ALPHA
    power: float = protocol.POWER
    metrics: List[str] = field(default_factory=lambda: ["test_acc", "gap"])  # the headline verdicts' metrics
    phase: Optional[str] = None  # set by the study sweeper on every job: exploratory | confirmatory
    exploratory: int = 5  # replicates of the exploratory phase: seeds 1 .. exploratory
    confirmatory: Optional[int] = None  # replicates of the confirmatory phase; null = designed for `power`
    max_replicates: int = 40  # cap on the designed number (printed when it binds)
    first_confirmatory_seed: int = 1001  # fresh replicates: seeds first_confirmatory_seed, +1, ...
    confirm: str = "all"  # all: every setting against its baseline; best: the best by validation only

    def __post_init__(self):
        # the allowed values live beside the code that uses them (torch): the schema imports light
        from sweep.training.train import METRICS, SEED_MAX

        for name, value in self.smallest_effect.items():
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (math.isfinite(value) and value > 0)
            ):
                _fail(f"study.smallest_effect.{name}", value, "must be a finite number > 0 (in the unit tables print)")
        if not 0 < self.alpha < 0.5:
            _fail("study.alpha", self.alpha, "must be in (0, 0.5)")
        if not 0 < self.power < 1:
            _fail("study.power", self.power, "must be in (0, 1)")
        if not self.metrics:
            _fail("study.metrics", list(self.metrics), "name at least one metric")
        for i, name in enumerate(self.metrics):
            check_choice(f"study.metrics.{i}", name, METRICS)
        if self.phase is not None:
            check_choice("study.phase", self.phase, protocol.PHASES)
        check_choice("study.confirm", self.confirm, protocol.CONFIRM)
        low = protocol.MIN_REPLICATES
        check_positive_int("study.exploratory", self.exploratory, minimum=low)
        check_positive_int("study.max_replicates", self.max_replicates, minimum=low)
        if self.confirmatory is not None:
            check_positive_int("study.confirmatory", self.confirmatory, minimum=low)
        if (
            isinstance(self.first_confirmatory_seed, bool)
            or not isinstance(self.first_confirmatory_seed, int)
            or self.first_confirmatory_seed <= self.exploratory
        ):
            _fail(
                "study.first_confirmatory_seed",
                self.first_confirmatory_seed,
                f"must be an integer > study.exploratory ({self.exploratory}): confirmatory replicates are fresh",
            )
        last = self.first_confirmatory_seed + max(self.max_replicates, self.confirmatory or 0) - 1
        if last > SEED_MAX:
            _fail(
                "study.first_confirmatory_seed",
                self.first_confirmatory_seed,
                f"its replicates would run past the largest seed {SEED_MAX}",
            )


EXPERIMENT_NAME_MAX = 256  # MLflow's SQL schema: experiments.name is String(256)
_SWEEP_ID = re.compile(r"^[A-Za-z0-9_.:\-]+$")


@dataclass
class TrackingConf:
    uri: str = "sqlite:///${root:}/runs/mlflow.db"
    # "" = where the store's server puts artifacts (an `mlflow server`'s --artifacts-destination)
    artifact_location: str = "${root:}/runs/mlartifacts"
    experiment: str = "dropout"
    enabled: bool = True
    sweep_id: Optional[str] = None  # runs sharing it (e.g. workers on one study) share one parent run
    # the Optuna sweeper's default storage (hydra.sweeper.storage), so `tracking=server` moves both stores
    optuna_storage: Optional[str] = "sqlite:///${root:}/runs/optuna.db"

    def __post_init__(self):
        if not self.experiment:
            _fail("tracking.experiment", self.experiment, "must be a non-empty name")
        if len(self.experiment) > EXPERIMENT_NAME_MAX:
            _fail(
                "tracking.experiment",
                f"{self.experiment[:20]}... ({len(self.experiment)} characters)",
                f"MLflow's database stores at most {EXPERIMENT_NAME_MAX} characters",
            )
        if self.enabled and not self.uri:
            _fail(
                "tracking.uri",
                self.uri,
                "is empty; with tracking=server export MLFLOW_TRACKING_URI=http://<host>:<port> "
                "(or pass tracking.uri=...)",
            )
        if self.sweep_id is not None and not _SWEEP_ID.match(str(self.sweep_id)):
            _fail("tracking.sweep_id", self.sweep_id, "use letters, digits, '_', '-', '.' and ':'")


@dataclass
class OptunaSweeperDefaults:
    """This project's defaults for hydra.sweeper.* (the generic plugin's: minimize, in memory, unnamed)."""

    direction: Any = "${objective_direction:${oc.select:objective,null}}"  # what the objective means
    storage: Optional[str] = "${tracking.optuna_storage}"  # so tracking=server moves both stores
    study_name: Optional[str] = "dropout"


@dataclass
class OptunaTrialConf:
    """How this app meets the Optuna sweeper (sweep/search/hook.py): its hook, its defaults for the
    sweeper's options, and the three keys the sweeper sets for each job so the job can report epochs
    to its trial (pruning)."""

    hook: str = "sweep.optuna_hook.DropoutHook"
    sweeper: OptunaSweeperDefaults = field(default_factory=OptunaSweeperDefaults)
    storage: Optional[str] = None
    study_name: Optional[str] = None
    trial_number: Optional[int] = None


def objective_direction(objective: Any) -> Any:
    """The direction(s) that improve `objective` (a name or a list of names; sweep.keys.METRIC_DIRECTIONS):
    "maximize"/"minimize", a list of them for a list, None for a name of unknown meaning (the sweeper then
    asks for a direction). The Optuna sweeper's default `direction` comes from here (${objective_direction:...})."""
    if objective is None:
        return None
    if isinstance(objective, str):
        return METRIC_DIRECTIONS.get(objective)
    return [METRIC_DIRECTIONS.get(str(name)) for name in objective]


OmegaConf.register_new_resolver("objective_direction", objective_direction, replace=True)


@dataclass
class Config:
    model: ModelConf = field(default_factory=ModelConf)
    data: DataConf = field(default_factory=DataConf)
    optimizer: OptimizerConf = field(default_factory=OptimizerConf)
    trainer: TrainerConf = field(default_factory=TrainerConf)
    tracking: TrackingConf = field(default_factory=TrackingConf)
    optuna: OptunaTrialConf = field(default_factory=OptunaTrialConf)
    eval: EvalConf = field(default_factory=EvalConf)
    study: StudyConf = field(default_factory=StudyConf)
    drop_prob: float = 0.3  # after every hidden ReLU (the lab's value)
    input_drop_prob: float = 0.0  # on the input pixels
    # per hidden layer: null = use drop_prob; set one with layer_drop_probs.0=0.2 (0-based)
    layer_drop_probs: List[Optional[float]] = field(default_factory=lambda: [None, None, None, None])
    seed: int = 777  # initialisation, batch order and dropout masks (the split: data.split_seed)
    objective: Any = "val_acc"  # a metric name, or a list of them for multi-objective sweeps

    def __post_init__(self):
        # the allowed values live beside the code that uses them (torch): the schema imports light
        from sweep.training.train import METRICS

        check_rate("drop_prob", self.drop_prob)
        check_rate("input_drop_prob", self.input_drop_prob)
        # -0.0 is 0.0: one value, one setting, one config hash (a grid 0,-0.0 is refused in pre-flight)
        self.drop_prob, self.input_drop_prob = self.drop_prob + 0.0, self.input_drop_prob + 0.0
        n = len(self.model.hidden_sizes)
        if len(self.layer_drop_probs) not in (0, n):
            _fail(
                "layer_drop_probs",
                list(self.layer_drop_probs),
                f"needs one entry per hidden layer ({n}; null = use drop_prob) or [] for none",
            )
        for i, p in enumerate(self.layer_drop_probs):
            if p is not None:
                check_rate(f"layer_drop_probs.{i}", p)
                self.layer_drop_probs[i] = p + 0.0
        # the allowed values live beside the code that uses them (torch): the schema imports light
        from sweep.training.train import SEED_MAX

        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= SEED_MAX:
            _fail("seed", self.seed, f"must be an integer in [0, {SEED_MAX}] (what torch's generators accept)")
        if not objective_names(self.objective):
            _fail("objective", list(self.objective), "name at least one metric, e.g. val_acc")
        for name in objective_names(self.objective):
            check_choice("objective", name, METRICS)
        if self.data.val_size == 0 and any(n.startswith("val_") for n in objective_names(self.objective)):
            _fail(
                "objective",
                self.objective,
                "data.val_size=0 leaves no validation set; use test_acc or set data.val_size",
            )
        if self.optimizer.warmup_epochs >= self.trainer.epochs:
            _fail(
                "optimizer.warmup_epochs",
                self.optimizer.warmup_epochs,
                f"must be less than trainer.epochs ({self.trainer.epochs})",
            )

    @property
    def layer_rates(self) -> list[float]:
        """The effective rate of every hidden layer."""
        per = self.layer_drop_probs or [None] * len(self.model.hidden_sizes)
        return [self.drop_prob if p is None else p for p in per]


def one_line(e: BaseException) -> str:
    """The first line of an error and of its cause: what Hydra/OmegaConf say, without the traceback."""
    parts = [str(e).splitlines()[0] if str(e) else type(e).__name__]
    cause = e.__cause__
    if cause is not None and str(cause):
        parts.append(str(cause).splitlines()[0])
    return ": ".join(parts).replace("Error merging override ", "")


def run_name(c: Config) -> str:
    """A run's name in MLflow and the logs: its rates and replicate (the parent's summary names failed jobs so)."""
    rates = c.layer_rates
    p = f"{rates[0]:.2f}" if len(set(rates)) == 1 else "[" + ",".join(f"{r:.2f}" for r in rates) + "]"
    return f"p={p} in={c.input_drop_prob:.2f} seed={c.seed}"


def validate(cfg: DictConfig) -> Config:
    """Build the typed config (runs every `__post_init__` check) from a composed config."""
    user = copy.deepcopy(cfg)
    with open_dict(user):
        user.pop("hydra", None)
    try:
        return OmegaConf.to_object(user)
    except ConfigError:
        raise
    except OmegaConfBaseException as e:
        if isinstance(e.__cause__, ConfigError):
            raise e.__cause__ from None
        raise ConfigError(one_line(e)) from None


def objective_names(objective: Any) -> list[str]:
    return [objective] if isinstance(objective, str) else list(objective)


def register_configs() -> None:
    """The schema under conf/config.yaml: every group file merged into it is type-checked."""
    ConfigStore.instance().store(name="config_schema", node=Config)


register_configs()  # importing the schema is enough for Hydra to find it


# ------------------------------------------------------------------------- what a run trains: config_hash
# Every run is tagged `config_hash` (sweep/keys.py HASH_TAG), a hash of its effective config: the typed config
# with the keys that do not change what is trained left out (`tracking.*`, the Optuna plumbing `optuna.*`, the
# progress bar, how data files are fetched: `data.download`, `data.verify`, which library sums the fp32
# products on the CPU: `trainer.cpu_matmul`, so that runs from before that key existed are found again, and the
# verdict protocol `study.*`, the study phase included; the output folders live under `hydra.*`, which a job's
# config does not hold). A key added later (`data.resample`) is left out at the value that trains what runs from
# before it trained. The seed is part of it. A grid rerun with the same `tracking.sweep_id` reuses every point
# that already FINISHED with the same hash (sweep/record/resume.py).
IGNORED = (
    "tracking",
    "optuna",
    "trainer.progress",
    "data.download",
    "data.verify",
    "trainer.cpu_matmul",
    "study",
)  # how results are read (and which phase a replicate belongs to) does not change what is trained
LEGACY = {"data.resample": "none"}  # keys added later, left out at the value that trains what runs before them did


def config_hash(c: Config) -> str:
    """A stable hash of what a run trains (same config, same hash; any key above left out)."""
    d = dataclasses.asdict(c)
    for key in (*IGNORED, *LEGACY):
        *path, last = key.split(".")
        node = d
        for p in path:
            node = node.get(p, {})
        if key not in LEGACY or node.get(last) == LEGACY[key]:
            node.pop(last, None)
    text = json.dumps(d, sort_keys=True, default=str, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def resumes(c: Config, multirun: bool) -> bool:
    """Whether a job of this config resumes its grid: a multirun given a `tracking.sweep_id`, not an Optuna search
    (its trials must report to Optuna, and its study resumes it)."""
    return bool(multirun and c.tracking.enabled and c.tracking.sweep_id) and not c.optuna.storage
