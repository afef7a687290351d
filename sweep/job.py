"""One job, top to bottom: validate -> load data -> build -> fit -> record -> return the objective.

Hydra calls `run` once per job (sweep/run.py). Recording rules, kept by `track.job_run`: a run that
raises ends FAILED with the error in a tag; Ctrl-C ends it KILLED; a diverging run ends FAILED (tags
`diverged`, `error`) and returns NaN so the sweep goes on with the other points; a run the Optuna
pruner stops ends FINISHED (tags `pruned`, `pruned_epoch`) and raises optuna.TrialPruned afterwards.
"""
from __future__ import annotations

import logging
import math

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

import data
from models import build_mlp
from sweep import resume, signals, track  # issue 9: resume, signals
from sweep.config import Config, objective_names, validate  # validate: typed, checked; ConfigError is one line
from sweep.train import AT_BEST, BestEpoch, Diverged, fit, make_optimizer, pick_device, seed_everything

log = logging.getLogger("sweep")


def run_name(c: Config) -> str:
    rates = c.layer_rates
    p = f"{rates[0]:.2f}" if len(set(rates)) == 1 else "[" + ",".join(f"{r:.2f}" for r in rates) + "]"
    return f"p={p} in={c.input_drop_prob:.2f} seed={c.seed}"


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized() and HydraConfig.get().mode is not None and HydraConfig.get().mode.name == "MULTIRUN"


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
    signals.install()  # issue 9: a joblib/loky worker ends its run KILLED on SIGTERM too
    c = validate(cfg)
    names = objective_names(c.objective)
    if (reused := resume.finished_objective(c, names, in_multirun())) is not None:  # issue 9: grids resume
        return reused
    if c.trainer.threads:
        torch.set_num_threads(c.trainer.threads)
    seed_everything(c.seed)
    device = pick_device(c.trainer.device)
    splits = data.load_splits(c.data.name, c.data.root, val_size=c.data.val_size, split_seed=c.data.split_seed,
                              device=device, train_subset=c.data.train_subset, download=c.data.download,
                              verify=c.data.verify)
    model = build_mlp(c.model.in_features, c.model.hidden_sizes, c.model.num_classes, c.drop_prob,
                      c.input_drop_prob, c.layer_drop_probs, c.model.activation, c.model.init,
                      constant_capacity=c.model.constant_capacity).to(device)
    optimizer = make_optimizer(c.optimizer.name, model.parameters(), c.optimizer.lr, c.optimizer.momentum,
                               c.optimizer.weight_decay, c.optimizer.betas)

    # the Optuna trial this job is (set by the Optuna sweeper): per-epoch reports, pruning
    reporter = None
    if c.optuna.storage:
        from sweep.search.trial import TrialReporter

        reporter = TrialReporter(c.optuna.storage, c.optuna.study_name, c.optuna.trial_number, max_epochs=c.trainer.epochs)

    sweep_dir, job_num, overrides = _job_info()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    tags = {"job_num": job_num, "overrides": " ".join(overrides), "dataset": c.data.name,
            "objective": ",".join(names), "device": device.type,
            resume.HASH_TAG: resume.config_hash(c),  # grids resume: the same point is found again
            **(reporter.tags() if reporter else {})}
    pruned_at = diverged = None
    with track.job_run(c.tracking, run_name(c), tags, sweep_dir) as mlflow_run:  # FINISHED / FAILED / KILLED
        if reporter and mlflow_run.id:
            reporter.record_run(mlflow_run.id)  # the sweeper's hook finds the run through the trial
        params = track.params_from_config(resolved)
        params.update({f"layer{i}_drop_prob": str(p) for i, p in enumerate(c.layer_rates, start=1)})
        params.update({f"layer{i}_width": str(w) for i, w in enumerate(model.hidden_sizes, start=1)})  # as built
        mlflow_run.log_params(params)
        mlflow_run.log_text(OmegaConf.to_yaml(track.redact_obj(resolved)), "config.yaml")
        mlflow_run.log_inputs(splits.records)  # the UI's Dataset column: name, digest, sizes, split seed
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
    if diverged is not None and not in_multirun():
        raise diverged  # a single run that diverges exits 1 with one line (sweep/run.py); a sweep goes on
    if pruned_at is not None:
        raise reporter.pruned(pruned_at) from None
    return _objective(metrics, names)


class _Pruned(Exception):
    def __init__(self, epoch: int):
        super().__init__(f"pruned after epoch {epoch}")
        self.epoch = epoch


def _train_and_record(c: Config, model, optimizer, splits, mlflow_run: track.Run, reporter, names) -> dict[str, float]:
    """The epoch loop: log each evaluated epoch's metrics (step = epoch) and, when it is the best by validation
    accuracy so far, `best_epoch` and `at_best_val.<metric>`; one summary line; ask the pruner whether to go on."""
    metrics: dict[str, float] = {}
    best = BestEpoch()
    if len(splits.val_x) == 0:
        log.info("no validation split (data.val_size=0): no best-epoch metrics")
        mlflow_run.set_tags({"at_best_val": "none: data.val_size=0 leaves no validation split"})
    bar = tqdm(total=c.trainer.epochs, desc=run_name(c), unit="epoch", disable=not c.trainer.progress, leave=False)
    for metrics in fit(model, optimizer, splits, epochs=c.trainer.epochs, batch_size=c.trainer.batch_size,
                       seed=c.seed, split_seed=c.data.split_seed, precision=c.trainer.precision,
                       train_eval_size=c.data.train_eval_size, drop_last=c.trainer.drop_last,
                       eval_every=c.trainer.eval_every):
        epoch = int(metrics.pop("epoch"))
        mlflow_run.log_metrics(metrics, step=epoch)
        if best.update(epoch, metrics):
            mlflow_run.log_metrics({"best_epoch": epoch, **{f"{AT_BEST}{k}": v for k, v in best.metrics.items()}},
                                   step=epoch)
        bar.update(epoch - bar.n)
        log.info("epoch %d/%d  train_acc %.4f  val_acc %s  test_acc %.4f  gap %+.4f  fit_loss %.4f",
                 epoch, c.trainer.epochs, metrics["train_acc"],
                 f"{metrics['val_acc']:.4f}" if "val_acc" in metrics else "-",
                 metrics["test_acc"], metrics["gap"], metrics["fit_loss"])
        if reporter is not None and reporter.should_stop(epoch, _objective(metrics, names)):
            bar.close()
            raise _Pruned(epoch)
    bar.close()
    if best.epoch is not None:
        log.info("best validation accuracy %.4f at epoch %d (test_acc %.4f, gap %+.4f there)", best.metrics["val_acc"],
                 best.epoch, best.metrics["test_acc"], best.metrics["gap"])
    return metrics
