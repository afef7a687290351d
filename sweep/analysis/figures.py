"""Figures: accuracy and the gap against the mean hidden-layer rate, the overview, the MC-dropout curves and
the reliability diagrams (matplotlib, imported when a figure is drawn)."""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sweep.analysis import stats as S
from sweep.analysis.frame import (
    HIDDEN,
    HIDDEN_KEYS,
    INPUT,
    INPUT_KEYS,
    LAYER_PARAM,
    METRIC_COLORS,
    SERIES_MAX,
    display_labels,
    layer_columns,
)
from sweep.analysis.tables import counts_text, run_counts, setting_table, settings_text
from sweep.keys import MC_CURVE, RELIABILITY_ARTIFACT

# ---------------------------------------------------------------- figures


def _series(table: pd.DataFrame, axis_keys: Sequence[str]) -> pd.Series:
    """Per setting (table row), the label of its series: the setting's params minus the x-axis keys (and
    minus the derived per-layer rates for the hidden axis), naming only what varies between series."""

    def rest(key: str) -> dict[str, str]:
        return {
            k: v
            for k, v in S.setting_params(key).items()
            if k not in axis_keys and not (HIDDEN_KEYS == tuple(axis_keys) and LAYER_PARAM.fullmatch(k))
        }

    params = pd.DataFrame([rest(k) for k in table["setting"]], index=table.index)
    if params.shape[1] == 0:
        return pd.Series("", index=table.index)
    labelled = S.add_setting_column(params, list(params.columns))
    varying = params.nunique() > 1
    return (
        labelled[S.LABEL].map(display_labels(labelled[S.LABEL])) if varying.any() else pd.Series("", index=table.index)
    )


def bars_text(table: pd.DataFrame, metrics: Sequence[str]) -> str:
    """What the error bars of a figure drawn from `table` are, or that there are none (fewer than MIN_SEEDS
    replicates in every setting): the words a title may use."""
    drawn = any(f"{m}_ci_low" in table and table[f"{m}_ci_low"].notna().any() for m in metrics)
    return (
        "bars: 95 % t-interval of each setting's mean over its replicates (unpaired)"
        if drawn
        else f"no bars: every setting has fewer than {S.MIN_SEEDS} replicates"
    )


def _draw(
    ax, df: pd.DataFrame, table: pd.DataFrame, metrics: Sequence[tuple[str, str]], x: str, shade_gap: bool = False
) -> None:
    """Per-run points (faint), per-setting means (with t-intervals from MIN_SEEDS replicates) joined per series,
    for each (metric, linestyle) pair; accuracies and gaps in points. `shade_gap` hatches the area between the
    train and test accuracy lines of each series: the overfitting gap."""
    import matplotlib.pyplot as plt

    done = S.completed(df)
    keys = HIDDEN_KEYS if x == HIDDEN else INPUT_KEYS
    series = _series(table, keys)
    names = list(dict.fromkeys(series))
    discrete = len(names) <= SERIES_MAX
    colors = {n: plt.cm.tab10(i % 10) for i, n in enumerate(names)}
    for mi, (metric, style) in enumerate(metrics):
        word = metric.replace("_acc", "").replace("gap", "gap (train - test)")
        if discrete:
            for name in names:
                t = table[series == name].sort_values(x)
                color = colors[name] if len(names) > 1 else METRIC_COLORS.get(metric, "black")
                runs = done[done[S.SETTING].isin(t["setting"])]
                ax.scatter(runs[x], runs[metric] * 100, s=10, color=color, alpha=0.35, zorder=2)
                lo, hi, mean = t[f"{metric}_ci_low"], t[f"{metric}_ci_high"], t[f"{metric}_mean"]
                err = np.vstack([(mean - lo).fillna(0), (hi - mean).fillna(0)]) * 100
                unique_x = t[x].nunique() == len(t)
                label = ", ".join(s for s in (word if len(metrics) > 1 or len(names) == 1 else "", name) if s)
                ax.errorbar(
                    t[x],
                    mean * 100,
                    yerr=err if np.any(err) else None,
                    fmt=style if unique_x else "o",
                    color=color,
                    capsize=3,
                    ms=4,
                    label=label or None,
                    zorder=3,
                )
                if shade_gap and mi == 0 and unique_x and {"train_acc_mean", "test_acc_mean"} <= set(t.columns):
                    ax.fill_between(
                        t[x],
                        t["test_acc_mean"] * 100,
                        t["train_acc_mean"] * 100,
                        facecolor="none",
                        hatch="//",
                        edgecolor=color,
                        linewidth=0,
                        alpha=0.45,
                        zorder=1,
                        label="gap (hatched)" if name == names[0] else None,
                    )
        else:  # many settings (a search): one point per setting, coloured by the other rate
            other = INPUT if x == HIDDEN else HIDDEN
            sc = ax.scatter(
                table[x],
                table[f"{metric}_mean"] * 100,
                c=table[other],
                cmap="viridis",
                s=18,
                marker="o" if mi == 0 else "^",
                label=word if len(metrics) > 1 else None,
            )
            if mi == 0:
                ax.figure.colorbar(
                    sc, ax=ax, label="input dropout rate" if other == INPUT else "mean hidden-layer dropout rate"
                )
    if len(metrics) > 1 or (discrete and len(names) > 1):
        ax.legend(fontsize=7, loc="best")


def axis_label(df: pd.DataFrame, x: str = HIDDEN) -> str:
    if x == INPUT:
        return "input dropout rate (input_drop_prob)"
    uniform = bool(S.completed(df)["uniform_hidden"].all())
    n = len(layer_columns(df))
    return (
        "hidden-layer dropout rate (drop_prob)"
        if uniform
        else f"mean effective hidden-layer dropout rate (over {n} layers; rates differ per layer)"
    )


def _empty(ax) -> None:
    ax.text(0.5, 0.5, "no completed runs", ha="center", va="center", transform=ax.transAxes)


def accuracy_figure(df: pd.DataFrame, table: pd.DataFrame | None = None, ax=None):
    """Final train (dashed) and test (solid) accuracy against the mean effective hidden rate, the gap between
    them hatched."""
    import matplotlib.pyplot as plt

    table = setting_table(df) if table is None else table
    fig, ax = plt.subplots(figsize=(6.4, 4.2), constrained_layout=True) if ax is None else (ax.figure, ax)
    if table.empty:
        _empty(ax)
    else:
        _draw(ax, df, table, (("train_acc", "--o"), ("test_acc", "-o")), HIDDEN, shade_gap=True)
    ax.set_xlabel(axis_label(df))
    ax.set_ylabel("final accuracy (%)")
    return fig


def gap_figure(df: pd.DataFrame, table: pd.DataFrame | None = None):
    """The gap (train - test, points) against the mean effective hidden rate, and against the input rate in a
    second panel when the input rate varies."""
    import matplotlib.pyplot as plt

    table = setting_table(df) if table is None else table
    axes_x = [HIDDEN] + ([INPUT] if not table.empty and table[INPUT].nunique() > 1 else [])
    fig, axes = plt.subplots(1, len(axes_x), figsize=(6.4 * len(axes_x), 4.2), squeeze=False, constrained_layout=True)
    for ax, x in zip(axes[0], axes_x):
        if table.empty:
            _empty(ax)
        else:
            _draw(ax, df, table, (("gap", "-o"),), x)
        ax.axhline(0, color="black", lw=0.5)
        ax.set_xlabel(axis_label(df, x))
        ax.set_ylabel("gap = train - test accuracy (points)")
    return fig


def overview_figure(df: pd.DataFrame, table: pd.DataFrame | None = None):
    """The parent run's picture: accuracies above, the gap below, against the mean effective hidden rate."""
    import matplotlib.pyplot as plt

    table = setting_table(df) if table is None else table
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.2, 7.0), sharex=True, constrained_layout=True)
    if table.empty:
        _empty(top)
    else:
        _draw(top, df, table, (("train_acc", "--o"), ("test_acc", "-o")), HIDDEN, shade_gap=True)
        _draw(bottom, df, table, (("gap", "-o"),), HIDDEN)
    bottom.axhline(0, color="black", lw=0.5)
    top.set_ylabel("final accuracy (%)")
    bottom.set_ylabel("gap = train - test (points)")
    bottom.set_xlabel(axis_label(df))
    c = run_counts(df)
    top.set_title(
        f"Train vs test accuracy and gap ({settings_text(df)}; {counts_text(c)})\n"
        f"points: runs; lines: means over replicates; {bars_text(table, ('train_acc', 'test_acc', 'gap'))}",
        fontsize=9,
    )
    return fig


# ---------------------------------------------------------------- the ensemble effect (eval.mc_samples > 0)


def mc_curves(client, df: pd.DataFrame) -> pd.DataFrame:
    """The MC-dropout curves of the completed runs that recorded one: one row per (run, t) with the setting,
    seed, t, the MC average's test accuracy and NLL after t passes, and the run's weight-scaling test accuracy
    and NLL (`ws_acc`, `ws_nll`). Empty when no run evaluated with eval.mc_samples > 0."""
    done = S.completed(df)
    if "mc_test_acc" not in done or done["mc_test_acc"].isna().all():
        return pd.DataFrame(columns=["run_id", S.SETTING, S.LABEL, S.SEED, "t", "acc", "nll", "ws_acc", "ws_nll"])
    rows = []
    for _, r in done[done["mc_test_acc"].notna()].iterrows():
        hist = {
            m: {x.step: x.value for x in client.get_metric_history(r["run_id"], f"{MC_CURVE}test_{m}")}
            for m in ("acc", "nll")
        }
        for t in sorted(hist["acc"]):
            rows.append(
                {
                    "run_id": r["run_id"],
                    S.SETTING: r[S.SETTING],
                    S.LABEL: r[S.LABEL],
                    S.SEED: r[S.SEED],
                    "t": t,
                    "acc": hist["acc"][t],
                    "nll": hist["nll"].get(t, math.nan),
                    "ws_acc": r["test_acc"],
                    "ws_nll": r.get("test_nll", math.nan),
                }
            )
    return pd.DataFrame(rows)


def mc_figure(curves: pd.DataFrame):
    """Srivastava et al. 2014, Fig. 11's question per setting with dropout: test accuracy (left) and NLL (right)
    of the average of t dropout passes against t (log scale), mean over seeds, with the weight-scaling
    network's mean as a dashed line of the same colour. A setting without dropout is left out (its passes
    are all the same network)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    shown = [k for k in pd.unique(curves[S.SETTING]) if not S.dropout_free(S.setting_params(k))]
    names = display_labels(curves[S.LABEL])
    for i, key in enumerate(shown):
        c = curves[curves[S.SETTING] == key]
        color = plt.cm.tab10(i % 10)
        mean = c.groupby("t")[["acc", "nll"]].mean()
        seeds = c[S.SEED].nunique()
        label = f"{names[c[S.LABEL].iloc[0]]} ({seeds} seed{'s' if seeds != 1 else ''})"
        for ax, m, ws, scale in ((axes[0], "acc", "ws_acc", 100), (axes[1], "nll", "ws_nll", 1)):
            ax.plot(mean.index, mean[m] * scale, color=color, label=label)
            ax.axhline(c.drop_duplicates("run_id")[ws].mean() * scale, color=color, ls="--", lw=1)
    for ax, what in ((axes[0], "test accuracy (%)"), (axes[1], "test NLL (nats per image)")):
        ax.set_xscale("log")
        ax.set_xlabel("dropout passes averaged (t)")
        ax.set_ylabel(what)
    if not shown:
        _empty(axes[0])
    axes[0].legend(fontsize=7, loc="lower right")
    axes[1].set_title("solid: MC average of t passes; dashed: weight scaling (one pass, dropout off)", fontsize=8)
    return fig


def reliability_bins(client, run_ids: Iterable[str]) -> dict[str, dict[str, list[float]]]:
    """The reliability bins the runs logged (eval.mc_samples > 0), pooled over the runs: per kind
    ("weight_scaling", "mc"), per bin the image count and the count-weighted mean confidence and accuracy."""
    pooled: dict[str, dict[str, np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rid in run_ids:
            try:
                path = client.download_artifacts(rid, RELIABILITY_ARTIFACT, tmp)
            except Exception:  # noqa: BLE001 - a run without the artifact (mc_samples = 0) adds nothing
                continue
            data = json.loads(Path(path).read_text())
            for kind in ("weight_scaling", "mc"):
                if kind not in data:
                    continue
                b = data[kind]
                n = np.asarray(b["count"], dtype=float)
                acc = pooled.setdefault(
                    kind,
                    {
                        "lower": np.asarray(b["lower"]),
                        "upper": np.asarray(b["upper"]),
                        "count": np.zeros_like(n),
                        "conf": np.zeros_like(n),
                        "correct": np.zeros_like(n),
                    },
                )
                acc["count"] += n
                acc["conf"] += n * np.asarray(b["confidence"])
                acc["correct"] += n * np.asarray(b["accuracy"])
    out = {}
    for kind, acc in pooled.items():
        safe = np.maximum(acc["count"], 1)
        out[kind] = {
            "lower": acc["lower"].tolist(),
            "upper": acc["upper"].tolist(),
            "count": acc["count"].tolist(),
            "confidence": (acc["conf"] / safe).tolist(),
            "accuracy": (acc["correct"] / safe).tolist(),
        }
    return out


def reliability_figure(panels: Sequence[tuple[str, dict[str, dict[str, list[float]]]]]):
    """One reliability diagram per (title, pooled bins): accuracy against mean confidence per bin (weight
    scaling as bars, the MC average as points when recorded), the diagonal being perfect calibration."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False, constrained_layout=True)
    for ax, (title, bins) in zip(axes[0], panels):
        ax.plot([0, 1], [0, 1], color="black", lw=0.8, ls=":")
        for kind, style in (("weight_scaling", "bar"), ("mc", "o")):
            if kind not in bins:
                continue
            b = bins[kind]
            used = np.asarray(b["count"]) > 0
            lo, hi = np.asarray(b["lower"])[used], np.asarray(b["upper"])[used]
            acc = np.asarray(b["accuracy"])[used]
            if style == "bar":
                ax.bar(
                    lo,
                    acc,
                    width=hi - lo,
                    align="edge",
                    alpha=0.5,
                    edgecolor="tab:blue",
                    label="weight scaling (accuracy per confidence bin)",
                )
            else:
                ax.plot(np.asarray(b["confidence"])[used], acc, "o", color="tab:red", ms=4, label="MC average")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (max predicted probability)")
        ax.set_ylabel("accuracy in the bin")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    return fig
