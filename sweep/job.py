"""One job, top to bottom: validate -> load data -> build -> fit -> record -> return the objective.

Hydra calls `run` once per job (sweep/run.py). Recording rules, kept by `record.job_run`: a run that
raises ends FAILED with the error in a tag; Ctrl-C ends it KILLED; a diverging run ends FAILED (tags
`diverged`, `error`) and returns NaN so the sweep goes on with the other points; a run the Optuna
pruner stops ends FINISHED (tags `pruned`, `pruned_epoch`) and raises optuna.TrialPruned afterwards.
A run that trained to the end is then evaluated once more on the test set (`_final_evaluation`: calibration,
MC dropout, max row norm); a pruned or diverged one is not.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

import data
from models import build_mlp, max_row_norm
from models.linear import use_onednn
from sweep import keys as K
from sweep import record
from sweep.config import Config, config_hash, objective_names, resumes, run_name, validate
from sweep.training import calibration, machine, schedules
from sweep.training.train import BestEpoch, Diverged, fit, make_optimizer, pick_device, seed_everything
from sweep.util import logs, signals
from sweep.util.redact import redact_obj

log = logging.getLogger("sweep")


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig

    return (
        HydraConfig.initialized() and HydraConfig.get().mode is not None and HydraConfig.get().mode.name == "MULTIRUN"
    )


def _job_info() -> tuple[str | None, int | None, list[str]]:
    """Sweep folder, job number and overrides when running under Hydra (None outside it)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None, None, []
    hc, multirun = HydraConfig.get(), in_multirun()
    return (hc.sweep.dir if multirun else None), (hc.job.num if multirun else None), list(hc.overrides.task)


def _objective(metrics: dict[str, float], names: list[str]):
    values = [metrics.get(n, math.nan) for n in names]
    return values[0] if len(values) == 1 else values


def run(cfg: DictConfig):
    signals.install()  # a joblib/loky worker ends its run KILLED on SIGTERM too
    signals.die_with_the_sweep()  # ... and when the sweep's process dies under it
    signals.check()  # a SIGTERM whose interrupt was lost (signals.check) starts no further job
    logs.quiet_tracebacks()  # tracebacks to the job's log file; the console gets one line each
    c = validate(cfg)
    names = objective_names(c.objective)
    with contextlib.ExitStack() as run_scope:
        # grids resume; and a point is claimed until its run exists, so a second copy of the same resumed
        # grid waits for it and reuses it instead of training it twice
        claim = record.claim(c.tracking, config_hash(c), names) if resumes(c, in_multirun()) else None
        with claim or contextlib.nullcontext(None) as reused:
            if reused is not None:
                return reused
            mlflow_run, model, optimizer, splits, device, reporter = _start(cfg, c, names, run_scope)
        objective, after = _body(c, names, mlflow_run, model, optimizer, splits, device, reporter)
    if after is not None:  # raised once the run has ended (FINISHED when pruned, FAILED when diverged)
        raise after
    return objective


def _start(cfg: DictConfig, c: Config, names: list[str], run_scope: contextlib.ExitStack):
    """Everything before training: data, model, optimizer, the trial reporter; the MLflow run entered into
    `run_scope` (FINISHED / FAILED / KILLED when that scope ends) with the params."""
    if c.trainer.threads:
        torch.set_num_threads(c.trainer.threads)
    seed_everything(c.seed)
    device = pick_device(c.trainer.device)
    splits = data.load_splits(
        c.data.name,
        c.data.root,
        val_size=c.data.val_size,
        split_seed=c.data.split_seed,
        device=device,
        train_subset=c.data.train_subset,
        download=c.data.download,
        verify=c.data.verify,
        resample=c.data.resample,
        replicate=c.seed,
    )
    model = build_mlp(
        c.model.in_features,
        c.model.hidden_sizes,
        c.model.num_classes,
        c.drop_prob,
        c.input_drop_prob,
        c.layer_drop_probs,
        c.model.activation,
        c.model.init,
        constant_capacity=c.model.constant_capacity,
        cpu_matmul=c.trainer.cpu_matmul,
    ).to(device)
    optimizer = make_optimizer(
        c.optimizer.name,
        model.parameters(),
        c.optimizer.lr,
        c.optimizer.momentum,
        c.optimizer.weight_decay,
        c.optimizer.betas,
    )

    # the Optuna trial this job is (set by the Optuna sweeper): per-epoch reports, pruning
    reporter = None
    if c.optuna.storage:
        # optuna: only the jobs an Optuna search launched import it
        from sweep.search.trial import TrialReporter

        reporter = TrialReporter(
            c.optuna.storage, c.optuna.study_name, c.optuna.trial_number, max_epochs=c.trainer.epochs
        )

    sweep_dir, job_num, overrides = _job_info()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    tags = {
        "job_num": job_num,
        "overrides": " ".join(overrides),
        "dataset": c.data.name,
        "objective": ",".join(names),
        "device": device.type,
        K.HASH_TAG: config_hash(c),  # grids resume: the same point is found again
        **machine.tags(),  # the CPU, oneDNN's ISA and the versions: which kernels summed the products
        "cpu_matmul_path": "onednn" if use_onednn(c.trainer.cpu_matmul) else "blas",  # fp32 products on a CPU
        **(reporter.tags() if reporter else {}),
    }
    mlflow_run = run_scope.enter_context(record.job_run(c.tracking, run_name(c), tags, sweep_dir))
    if reporter and mlflow_run.id:
        reporter.record_run(mlflow_run.id)  # the sweeper's hook finds the run through the trial
    params = record.params_from_config(resolved)
    params.update({f"layer{i}_drop_prob": str(p) for i, p in enumerate(c.layer_rates, start=1)})
    params.update({f"layer{i}_width": str(w) for i, w in enumerate(model.hidden_sizes, start=1)})  # as built
    mlflow_run.log_params(params)
    mlflow_run.log_text(OmegaConf.to_yaml(redact_obj(resolved)), "config.yaml")
    mlflow_run.log_inputs(splits.records)  # the UI's Dataset column: name, digest, sizes, split seed
    return mlflow_run, model, optimizer, splits, device, reporter


def _body(c: Config, names: list[str], mlflow_run: record.Run, model, optimizer, splits, device, reporter):
    """Train and record inside the run `_start` began: (objective, None), or (None, the Diverged / TrialPruned
    to raise once the run has ended)."""
    pruned_at = diverged = None
    log.info("run %s on %s: %s", run_name(c), device, splits)
    with mlflow_run.timed("train_seconds"), logging_redirect_tqdm():
        try:
            metrics = _train_and_record(c, model, optimizer, splits, mlflow_run, reporter, names)
        except _Pruned as p:  # it did all the pruner let it do: FINISHED, and the tags say the rest
            log.info("pruned by Optuna after epoch %d", p.epoch)
            mlflow_run.set_tags({"pruned": "true", "pruned_epoch": p.epoch})
            pruned_at = p.epoch
        except Diverged as e:  # FAILED, but the sweep goes on with the other points
            log.error("diverged: %s", e)
            mlflow_run.fail(f"Diverged: {e}", diverged="true")
            metrics, diverged = {}, e
    if pruned_at is None and diverged is None:
        with mlflow_run.timed("final_eval_seconds"):
            _final_evaluation(c, model, splits, mlflow_run, device)
    if diverged is not None and not in_multirun():
        return None, diverged  # a single run that diverges exits 1 with one line (sweep/run.py); a sweep goes on
    if pruned_at is not None:
        return None, reporter.pruned(pruned_at)
    return _objective(metrics, names), None


class _Pruned(Exception):
    def __init__(self, epoch: int):
        super().__init__(f"pruned after epoch {epoch}")
        self.epoch = epoch


def _train_and_record(c: Config, model, optimizer, splits, mlflow_run: record.Run, reporter, names) -> dict[str, float]:
    """The epoch loop: log each evaluated epoch's metrics (step = epoch) and, when it is the best by validation
    accuracy so far, `best_epoch` and `at_best_val.<metric>`; one summary line; ask the pruner whether to go on."""
    metrics: dict[str, float] = {}
    best = BestEpoch()
    if len(splits.val_x) == 0:
        log.info("no validation split (data.val_size=0): no best-epoch metrics")
        mlflow_run.set_tags({"at_best_val": "none: data.val_size=0 leaves no validation split"})
    bar = tqdm(total=c.trainer.epochs, desc=run_name(c), unit="epoch", disable=not c.trainer.progress, leave=False)
    for metrics in fit(
        model,
        optimizer,
        splits,
        epochs=c.trainer.epochs,
        batch_size=c.trainer.batch_size,
        seed=c.seed,
        split_seed=c.data.split_seed,
        precision=c.trainer.precision,
        train_eval_size=c.data.train_eval_size,
        drop_last=c.trainer.drop_last,
        eval_every=c.trainer.eval_every,
        max_norm=c.model.max_norm,
        make_sched=_scheduler(c),
    ):
        signals.check()  # a SIGTERM whose interrupt was lost is raised here, within one epoch
        epoch = int(metrics.pop("epoch"))
        mlflow_run.log_metrics(metrics, step=epoch)
        if best.update(epoch, metrics):
            mlflow_run.log_metrics(
                {"best_epoch": epoch, **{f"{K.AT_BEST}{k}": v for k, v in best.metrics.items()}}, step=epoch
            )
        bar.update(epoch - bar.n)
        log.info(
            "epoch %d/%d  train_acc %.4f  val_acc %s  test_acc %.4f  gap %+.4f  fit_loss %.4f",
            epoch,
            c.trainer.epochs,
            metrics["train_acc"],
            f"{metrics['val_acc']:.4f}" if "val_acc" in metrics else "-",
            metrics["test_acc"],
            metrics["gap"],
            metrics["fit_loss"],
        )
        if reporter is not None and reporter.should_stop(epoch, _objective(metrics, names)):
            bar.close()
            raise _Pruned(epoch)
    bar.close()
    if best.epoch is not None:
        log.info(
            "best validation accuracy %.4f at epoch %d (test_acc %.4f, gap %+.4f there)",
            best.metrics["val_acc"],
            best.epoch,
            best.metrics["test_acc"],
            best.metrics["gap"],
        )
    return metrics


def _scheduler(c: Config):
    """optimizer.schedule and its warm-up as fit's `make_sched(optimizer, steps_per_epoch)`; None: a constant rate."""
    o = c.optimizer
    if o.schedule == "none" and o.warmup_epochs == 0:
        return None
    return lambda optimizer, steps: schedules.make_scheduler(
        o.schedule,
        optimizer,
        epochs=c.trainer.epochs,
        steps_per_epoch=steps,
        warmup_epochs=o.warmup_epochs,
        step_size=o.step_size,
        gamma=o.gamma,
    )


def _final_evaluation(c: Config, model, splits, mlflow_run: record.Run, device: torch.device) -> None:
    """After the last epoch, once: calibration of weight scaling (test_nll, test_ece, test_brier), with
    eval.mc_samples = T > 0 the MC-dropout average (mc_test_*, and its curve over t = 1..T), and
    `max_row_norm`, all at step = the last epoch; with T > 0 the reliability bins of both as an artifact.
    Never per epoch, never an objective: they read the test set. The MC masks come from their own generator
    seeded with seed + 1, so the evaluation repeats exactly and leaves the global RNG as training left it."""
    T = c.eval.mc_samples
    generator = torch.Generator(device=device).manual_seed(c.seed + 1) if T else None
    metrics, curve, bins = calibration.final_evaluation(model, splits.test_x, splits.test_y, T, generator=generator)
    metrics["max_row_norm"] = max_row_norm(model)
    mlflow_run.log_metrics(metrics, step=c.trainer.epochs)
    if curve:
        mlflow_run.log_steps(
            {row["t"]: {f"{K.MC_CURVE}test_{k}": v for k, v in row.items() if k != "t"} for row in curve}
        )
    if T:  # the diagrams' data goes with the MC evaluation: a plain run's artifacts stay its config alone
        mlflow_run.log_text(json.dumps({"bins": calibration.ECE_BINS, **bins}, indent=1), K.RELIABILITY_ARTIFACT)
    log.info(
        "weight scaling: test_nll %.4f  test_ece %.4f  test_brier %.4f  (max row norm %.3f)",
        metrics["test_nll"],
        metrics["test_ece"],
        metrics["test_brier"],
        metrics["max_row_norm"],
    )
    if T:
        log.info(
            "MC dropout, %d passes: mc_test_acc %.4f  mc_test_nll %.4f  mc_test_ece %.4f  mc_test_brier %.4f",
            T,
            metrics["mc_test_acc"],
            metrics["mc_test_nll"],
            metrics["mc_test_ece"],
            metrics["mc_test_brier"],
        )
