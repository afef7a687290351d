"""Calibration metrics and MC-dropout evaluation: pure torch, no Hydra, no MLflow.

Weight scaling (the network with dropout off, each kept unit's 1/(1-p) already folded in by inverted
dropout) stands in for the average of the exponentially many thinned networks dropout trains. MC dropout
measures that average directly: T passes with dropout on, their softmax outputs averaged (Srivastava et
al. 2014, sec. 7.5 / Fig. 11; Gal & Ghahramani 2016). `scores` rates a set of predicted probabilities:

    acc    fraction whose argmax is the label (ties: the lowest class index, torch.argmax)
    nll    mean of -log p_label; p is clamped to the dtype's smallest normal number first, so a confidently
           wrong average costs a large finite amount (about 87.3 in float32) instead of inf
    brier  mean over samples of sum_k (p_k - y_k)^2 with y one-hot (Brier 1950, multi-class): 0 is perfect,
           2 the worst; not divided by the number of classes
    ece    expected calibration error (Guo et al. 2017) over ECE_BINS equal-width confidence bins:
           sum_b |b|/N * |acc(b) - conf(b)|, confidence = the largest probability; bin b holds the
           confidences in (b/15, (b+1)/15], closed on the right, the first bin also taking 0

Everything stays on the probabilities' device; the functions return Python floats (one sync each).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from sweep.training.train import EVAL_BATCH  # rows per forward pass: bounds activation memory

ECE_BINS = 15


def _check(probs: torch.Tensor, y: torch.Tensor) -> None:
    if probs.ndim != 2 or y.shape != probs.shape[:1]:
        raise ValueError(f"need probs (N, C) and labels (N,), got {tuple(probs.shape)} and {tuple(y.shape)}")
    if len(y) == 0:
        raise ValueError("no samples to score")


def accuracy(probs: torch.Tensor, y: torch.Tensor) -> float:
    _check(probs, y)
    return (probs.argmax(1) == y).float().mean().item()


def nll(probs: torch.Tensor, y: torch.Tensor) -> float:
    _check(probs, y)
    p = probs.gather(1, y[:, None]).squeeze(1).clamp_min(torch.finfo(probs.dtype).tiny)
    return (-p.log()).mean().item()


def brier(probs: torch.Tensor, y: torch.Tensor) -> float:
    _check(probs, y)
    onehot = F.one_hot(y, probs.shape[1]).to(probs.dtype)
    return (probs - onehot).square().sum(1).mean().item()


def reliability(probs: torch.Tensor, y: torch.Tensor, bins: int = ECE_BINS) -> dict[str, list[float]]:
    """Per confidence bin (see the module docstring for the edges): `count`, mean `confidence` and
    `accuracy` (0 for an empty bin), and the bin's `lower`/`upper` edges: a reliability diagram's data."""
    _check(probs, y)
    conf, pred = probs.max(1)
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=conf.dtype, device=conf.device)
    # bucketize(right=False) gives i with edges[i] < v <= edges[i+1] over the inner edges: right-closed bins
    idx = torch.bucketize(conf, edges[1:-1], right=False)
    count = torch.zeros(bins, dtype=conf.dtype, device=conf.device).index_add_(0, idx, torch.ones_like(conf))
    conf_sum = torch.zeros_like(count).index_add_(0, idx, conf)
    correct = torch.zeros_like(count).index_add_(0, idx, (pred == y).to(conf.dtype))
    safe = count.clamp_min(1)
    return {
        "lower": edges[:-1].tolist(),
        "upper": edges[1:].tolist(),
        "count": count.tolist(),
        "confidence": (conf_sum / safe).tolist(),
        "accuracy": (correct / safe).tolist(),
    }


def ece(probs: torch.Tensor, y: torch.Tensor, bins: int = ECE_BINS) -> float:
    r = reliability(probs, y, bins)
    n = sum(r["count"])
    return sum(c / n * abs(a - f) for c, a, f in zip(r["count"], r["accuracy"], r["confidence"]))


def scores(probs: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """acc, nll, ece and brier of one set of predicted probabilities (rows sum to 1)."""
    return {"acc": accuracy(probs, y), "nll": nll(probs, y), "ece": ece(probs, y), "brier": brier(probs, y)}


def _dropouts(model: nn.Module) -> list[nn.Dropout]:
    return [m for m in model.modules() if isinstance(m, nn.Dropout)]


@torch.inference_mode()
def predict_proba(model: nn.Module, x: torch.Tensor, batch: int = EVAL_BATCH) -> torch.Tensor:
    """Weight scaling: softmax of the model with dropout off (eval mode), in fp32, batched. (N, C)."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([F.softmax(model(x[i : i + batch]).float(), 1) for i in range(0, len(x), batch)])
    finally:
        model.train(was_training)


def mc_predict(
    model: nn.Module, x: torch.Tensor, T: int, *, generator: torch.Generator | None = None, batch: int = EVAL_BATCH
) -> Iterator[torch.Tensor]:
    """MC dropout: yields, after each pass t = 1..T, the average of the first t passes' softmax outputs
    over all of `x` (a fresh (N, C) float32 tensor each time), so a caller can score the average against t.

    A pass runs the whole of `x` in fp32, `batch` rows at a time, with every dropout module in train mode
    and everything else in eval mode. Memory: one (N, C) running sum plus one batch's activations.
    The masks come from `generator` when given (it must be on x's device; the model's dropout modules must
    be models.mlp.Dropout, which take one), else from torch's global RNG; pass t draws its masks batch by
    batch, layer by layer, so the same generator state gives the same sequence of averages. The model's
    modes and its dropouts' generators are restored before each yield, so the model is never left in
    the MC state while the caller holds the generator."""
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T={T!r} is invalid: the number of MC passes must be an integer >= 1")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch={batch!r} is invalid: rows per forward pass must be an integer >= 1")
    drops = _dropouts(model)
    if generator is not None:
        if generator.device.type != x.device.type:
            raise ValueError(f"the generator is on {generator.device} but the data on {x.device}")
        if any(not hasattr(d, "generator") for d in drops):
            raise TypeError("a generator needs the model's dropouts to be models.mlp.Dropout")
    return _mc_passes(model, drops, x, T, generator, batch)  # checked now, not at the first next()


def _mc_passes(model, drops, x, T, generator, batch) -> Iterator[torch.Tensor]:
    if not drops:  # no dropout module (every rate 0): every pass is the same network, so one pass is the average
        with torch.inference_mode():
            probs = predict_proba(model, x, batch)
        for _ in range(T):
            yield probs.clone()
        return
    total = None
    for t in range(1, T + 1):
        with torch.inference_mode():
            modes = [(m, m.training) for m in model.modules()]
            gens = [getattr(d, "generator", None) for d in drops]
            model.eval()
            for d in drops:
                d.train()
                if generator is not None:
                    d.generator = generator
            try:
                probs = torch.cat([F.softmax(model(x[i : i + batch]).float(), 1) for i in range(0, len(x), batch)])
            finally:
                for m, mode in modes:
                    m.training = mode
                if generator is not None:
                    for d, g in zip(drops, gens):
                        d.generator = g
            total = probs if total is None else total.add_(probs)
            avg = total / t
        yield avg


def mc_curve(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    T: int,
    *,
    generator: torch.Generator | None = None,
    batch: int = EVAL_BATCH,
) -> tuple[list[dict[str, float]], torch.Tensor]:
    """`scores` of the MC average after each t = 1..T (each dict also holds `t`), and the final average."""
    curve, avg = [], None
    for t, avg in enumerate(mc_predict(model, x, T, generator=generator, batch=batch), start=1):
        curve.append({"t": t, **scores(avg, y)})
    return curve, avg


def final_evaluation(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    mc_samples: int = 0,
    *,
    generator: torch.Generator | None = None,
    batch: int = EVAL_BATCH,
):
    """What a run records once, after its last epoch (sweep/job.py), on one split (the test set):

    metrics  test_nll, test_ece, test_brier of weight scaling; with mc_samples = T > 0 also mc_test_acc,
             mc_test_nll, mc_test_ece, mc_test_brier of the average of T dropout passes
    curve    [] or, for t = 1..T, `scores` of the average of the first t passes (each dict holds `t`)
    bins     {"weight_scaling": reliability(...)} and, with T > 0, "mc" too: reliability diagrams' data

    Cost: one pass for weight scaling and T MC passes of `x`, batched; the MC masks come from `generator`."""
    probs = predict_proba(model, x, batch)
    ws = scores(probs, y)
    metrics = {f"test_{k}": ws[k] for k in ("nll", "ece", "brier")}  # test_acc: the last epoch's already
    bins = {"weight_scaling": reliability(probs, y)}
    curve: list[dict[str, float]] = []
    if mc_samples > 0:
        curve, avg = mc_curve(model, x, y, mc_samples, generator=generator, batch=batch)
        metrics.update({f"mc_test_{k}": v for k, v in curve[-1].items() if k != "t"})
        bins["mc"] = reliability(avg, y)
    return metrics, curve, bins
