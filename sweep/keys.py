"""The names the writer (sweep/job.py through sweep/record/) and the reader (sweep/analysis/) of the MLflow
store share: metric names and the direction that improves each, tag names, artifact paths and the results
files of a sweep folder. Imports nothing, so reading results needs no training code and the two sides cannot
drift apart: each reads these names from here."""

# What a training run logs each evaluated epoch (besides `epoch` and `fit_loss`, the mean minibatch loss with
# dropout on), measured with dropout off; any of them can be a run's objective. gap = train_acc - test_acc is
# what a run *reports*; val_gap = train_acc - val_acc is the gap a search may select on. Each with what it
# means to a search: accuracies are maximised; losses and gaps (overfitting) minimised.
METRIC_DIRECTIONS = {
    "val_acc": "maximize",
    "val_loss": "minimize",
    "test_acc": "maximize",
    "test_loss": "minimize",
    "train_acc": "maximize",
    "train_loss": "minimize",
    "gap": "minimize",
    "val_gap": "minimize",
}
METRICS = tuple(METRIC_DIRECTIONS)
# The metrics that read the test set. They are reported, never used to select: an Optuna search may not
# optimise or prune on them; a single run or a grid may still return them.
TEST_METRICS = ("test_acc", "test_loss", "gap")
# The columns every sweep summary has, in this order, even before any run logged them.
SUMMARY_METRICS = ("train_acc", "val_acc", "test_acc", "gap", "train_loss", "val_loss", "test_loss")
BEST_BY = "val_acc"  # the best epoch of a run: its highest validation accuracy (the earliest such epoch)
AT_BEST = "at_best_val."  # prefix of the metrics at that epoch (at_best_val.test_acc, ...), beside `best_epoch`
MC_CURVE = "mc_curve."  # prefix of the MC average's scores against t (step = t = 1..T): mc_curve.test_acc, ...
RELIABILITY_ARTIFACT = "calibration/reliability.json"  # a run's reliability-diagram bins (eval.mc_samples > 0)

# Run tags.
HASH_TAG = "config_hash"  # what a run trains, hashed: how a grid that resumes finds its finished points
SWEEP_ID_TAG = "sweep_id"
SWEEP_ROLE_TAG = "sweep_role"  # "parent" on a sweep's parent run
PARENT_ROLE = "parent"
PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's own: the UI nests a child under its parent
ERROR_TAG = "error"  # why a run did not finish
# Run tags the reader keeps as columns of its frame.
FRAME_TAGS = (
    "job_num",
    "pruned",
    "pruned_epoch",
    "optuna_study",
    "optuna_trial",
    ERROR_TAG,
    "device",
    "overrides",
    "cpu_model",
    "onednn_isa",
    "onednn_max_cpu_isa",
    "cpu_matmul_path",
)

# A sweep folder's files (and the parent run's artifacts).
PARENT_FILE = "mlflow_parent.json"  # how jobs (any launcher) find their parent run
SETTINGS_CSV = "sweep_settings.csv"
RUNS_CSV = "sweep_results.csv"
PLOT = "gap_vs_dropout.png"
