"""Runs -> one DataFrame: a row per run with its params, final metrics, status and tags; the numeric rates,
the setting key, the study phases, the replicates and machines behind a frame."""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from sweep import keys as K
from sweep import protocol as P
from sweep.analysis import stats as S

TAGS = K.FRAME_TAGS  # run tags kept as columns
PHASE = P.PHASE_PARAM  # the study phase a run belongs to (a param: the study sweeper sets it on each job)
HIDDEN_KEYS = ("drop_prob", "layer_drop_probs")  # plus layerN_drop_prob: the hidden-layer rates
INPUT_KEYS = ("input_drop_prob",)
HIDDEN, INPUT = "hidden_rate", "input_rate"  # derived numeric columns (mean effective hidden rate, input rate)
SERIES_MAX = 8  # the data-size study: 4 sizes x 2 input rates
METRIC_COLORS = {"train_acc": "tab:blue", "test_acc": "tab:orange", "val_acc": "tab:green", "gap": "tab:red"}
LAYER_PARAM = re.compile(r"layer(\d+)_drop_prob")  # sweep/job.py logs one per hidden layer, however many
NUMERIC = ("drop_prob", "input_drop_prob", "optimizer.lr")  # and every layerN_drop_prob: numbers in the frame


# ---------------------------------------------------------------- runs -> one frame


def frame_from_runs(runs: Iterable[Any]) -> pd.DataFrame:
    """One row per MLflow Run object (MlflowClient.search_runs)."""
    rows, params, metrics = [], set(), set()
    for r in runs:
        row = {
            "run_id": r.info.run_id,
            "run_name": r.info.run_name,
            "status": r.info.status,
            **{t: r.data.tags.get(t) for t in TAGS},
        }
        row.update(r.data.params)
        row.update(r.data.metrics)
        params |= set(r.data.params)
        metrics |= set(r.data.metrics)
        rows.append(row)
    return _frame(pd.DataFrame(rows), params, metrics)


def frame_from_search(runs: pd.DataFrame) -> pd.DataFrame:
    """The same frame from mlflow.search_runs' DataFrame (columns params.*, metrics.*, tags.*)."""
    out = pd.DataFrame(
        {"run_id": runs["run_id"], "status": runs["status"], "run_name": runs.get("tags.mlflow.runName")},
        index=runs.index,
    )
    for t in TAGS:
        out[t] = runs[f"tags.{t}"] if f"tags.{t}" in runs else None
    params = [c.removeprefix("params.") for c in runs.columns if c.startswith("params.")]
    metrics = [c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics.")]
    # a key no run of this selection logged is a column of NaN in the experiment-wide frame: drop it
    params = [p for p in params if runs[f"params.{p}"].notna().any()]
    metrics = [m for m in metrics if runs[f"metrics.{m}"].notna().any()]
    extra = pd.DataFrame(
        {**{p: runs[f"params.{p}"] for p in params}, **{m: runs[f"metrics.{m}"] for m in metrics}}, index=runs.index
    )
    return _frame(pd.concat([out, extra], axis=1).reset_index(drop=True), set(params), set(metrics))


def _frame(df: pd.DataFrame, params: set[str], metrics: set[str]) -> pd.DataFrame:
    """Columns in a stable order (identity, params, metrics), the setting key and label, the numeric rates."""
    meta = ["run_id", "run_name", "status", *TAGS]
    for c in meta:
        if c not in df:
            df[c] = None
    params_sorted = sorted(params, key=_param_order)
    metric_cols = [m for m in K.SUMMARY_METRICS if m in metrics] + sorted(metrics - set(K.SUMMARY_METRICS))
    for m in K.SUMMARY_METRICS:  # the summary's columns exist even before any run logged them
        if m not in df:
            df[m] = np.nan
            metric_cols.append(m)
    df = df[[*meta, *params_sorted, *metric_cols]].copy()
    for c in [*NUMERIC, *layer_columns(df)]:  # the same setting key either way: stats.canonical("0.5") == "0.5"
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    df["pruned"] = S.is_pruned(df)
    df = S.add_setting_column(df, params_sorted)
    df[HIDDEN], df[INPUT], df["uniform_hidden"] = _rates(df)
    if len(df):
        order = {k: i for i, k in enumerate(S.settings_order(df))}
        seed = pd.to_numeric(df.get(S.SEED, pd.Series(index=df.index, dtype=float)), errors="coerce")
        df = (
            df.assign(_o=df[S.SETTING].map(order), _s=seed)
            .sort_values(["_o", "_s"], kind="stable")
            .drop(columns=["_o", "_s"])
            .reset_index(drop=True)
        )
    return df


def _param_order(name: str) -> tuple:
    m = LAYER_PARAM.fullmatch(name)
    if name in ("drop_prob", "input_drop_prob"):
        return (0, name == "input_drop_prob", "")
    return (1, int(m.group(1)), "") if m else (2, 0, name)


def layer_columns(df: pd.DataFrame) -> list[str]:
    """The effective per-layer rate columns the jobs logged (layer1_drop_prob ...), in layer order."""
    names = [c for c in df.columns if LAYER_PARAM.fullmatch(c)]
    return sorted(names, key=lambda c: int(LAYER_PARAM.fullmatch(c).group(1)))


def _rates(df: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Mean effective hidden rate (layerN_drop_prob, else drop_prob), input rate (0 when not logged), and
    whether every hidden layer of the run uses one rate."""
    layers = layer_columns(df)
    if layers:
        rates = df[layers].apply(pd.to_numeric, errors="coerce")
        hidden, uniform = rates.mean(axis=1), rates.nunique(axis=1, dropna=True) <= 1
    else:
        hidden = pd.to_numeric(df.get("drop_prob", pd.Series(np.nan, index=df.index)), errors="coerce")
        uniform = pd.Series(True, index=df.index)
    inp = pd.to_numeric(df.get("input_drop_prob", pd.Series(0.0, index=df.index)), errors="coerce").fillna(0.0)
    return hidden, inp, uniform.astype(bool)


# ---------------------------------------------------------------- the protocol, phases, replicates, machines


@dataclass(frozen=True)
class Protocol:
    """How a sweep's results are read (sweep/protocol.py): family-wise alpha, the power designs aim for, the
    smallest effect of interest per metric (in the unit tables print) and the headline metrics."""

    alpha: float = P.ALPHA
    power: float = P.POWER
    smallest_effect: Mapping[str, float] = field(default_factory=lambda: dict(P.SMALLEST_EFFECT))
    metrics: tuple[str, ...] = ("test_acc", "gap")


def protocol_of(df: pd.DataFrame) -> Protocol:
    """The protocol the runs logged (their `study.*` params; the first completed run's, else any run's), or
    protocol.py's defaults for runs from before those params existed."""
    rows = S.completed(df)
    rows = rows if len(rows) else df
    if rows.empty or "study.alpha" not in rows:
        return Protocol()

    def first(col: str):
        values = rows[col].dropna() if col in rows else pd.Series(dtype=object)
        return values.iloc[0] if len(values) else None

    prefix = "study.smallest_effect."
    effects = {c[len(prefix) :]: float(first(c)) for c in rows.columns if c.startswith(prefix) and first(c) is not None}
    metrics = first("study.metrics")
    try:
        metrics = tuple(str(m) for m in ast.literal_eval(metrics)) if isinstance(metrics, str) else Protocol.metrics
    except (ValueError, SyntaxError):
        metrics = Protocol.metrics
    return Protocol(
        alpha=float(first("study.alpha") or P.ALPHA),
        power=float(first("study.power") or P.POWER),
        smallest_effect=effects or dict(P.SMALLEST_EFFECT),
        metrics=metrics,
    )


def phase_frames(df: pd.DataFrame) -> dict[str | None, pd.DataFrame]:
    """The runs of each study phase ("exploratory", "confirmatory"), in that order; runs of no phase (a plain
    grid) under None. Phases never mix: their replicates were drawn for different purposes."""
    phase = (
        df[PHASE].map(lambda v: None if S.canonical(v) == "None" else str(v))
        if PHASE in df
        else pd.Series(None, index=df.index, dtype=object)
    )
    out = {}
    for name in (*P.PHASES, None):
        part = df[phase.isna()] if name is None else df[phase == name]
        if len(part):
            out[name] = part.reset_index(drop=True)
    return out


def _seed_range(seeds: Iterable[Any]) -> str:
    """'1-5' for consecutive seeds, else '1, 3, 7' (at most 6 named)."""
    values = sorted({int(float(s)) for s in seeds if S.canonical(s) != "None"})
    if not values:
        return "none"
    if values == list(range(values[0], values[-1] + 1)) and len(values) > 2:
        return f"{values[0]}-{values[-1]}"
    return ", ".join(map(str, values[:6])) + (f" and {len(values) - 6} more" if len(values) > 6 else "")


def replicates_text(df: pd.DataFrame) -> str:
    """What the runs' replicates are: their seeds and what each one draws (data.resample), e.g. "seeds 1001-1020;
    each draws the training randomness and the 2,000-image training subset (data.resample=subset)"."""
    done = S.completed(df)
    rows = done if len(done) else df
    resample = rows["data.resample"].dropna().map(str).unique() if "data.resample" in rows else np.array([])
    how = ", ".join(sorted(resample)) or "none"
    subset = rows["data.train_subset"].dropna().map(S.canonical).unique() if "data.train_subset" in rows else []
    size = f"{int(subset[0]):,}-image " if len(subset) == 1 and subset[0] != "None" else ""
    split = rows["data.split_seed"].dropna().map(S.canonical).unique() if "data.split_seed" in rows else []
    split_txt = f"data.split_seed={split[0]}" if len(split) == 1 else "data.split_seed"
    draws = {
        "none": f"training randomness only; every replicate trains on the same images ({split_txt})",
        "subset": f"training randomness and the {size}training subset; the validation split is fixed ({split_txt})",
        "split": "training randomness, the validation split and the training subset",
    }.get(how, how)
    seeds = rows[S.SEED] if S.SEED in rows else []
    return f"Replicates: seeds {_seed_range(seeds)}; each draws the {draws} (data.resample={how})."


def machines_text(df: pd.DataFrame) -> str:
    """The CPUs, oneDNN ISA families and precisions the completed runs ran with, e.g. "Ran on: AMD EPYC
    (oneDNN AVX512_CORE_BF16), fp32, 30 runs"; runs from before these tags are counted as unrecorded."""
    done = S.completed(df)
    if done.empty:
        return ""
    cols = {"cpu_model": "?", "onednn_isa": "?", "trainer.precision": "?", "onednn_max_cpu_isa": "unset", "device": "?"}
    keys = done.reindex(columns=list(cols)).fillna(cols).astype(str)
    parts = []
    for (cpu, isa, prec, cap, dev), n in keys.value_counts(sort=False).items():
        where = "CPU not recorded" if cpu == "?" else (cpu if dev in ("cpu", "?") else f"{dev} on {cpu}")
        capped = "" if cap == "unset" else f", ONEDNN_MAX_CPU_ISA={cap}"
        isa_txt = "" if isa == "?" else f" (oneDNN {isa}{capped})"
        parts.append(f"{where}{isa_txt}, {prec}: {n} run{'s' if n != 1 else ''}")
    return "Ran on: " + "; ".join(parts) + "."


def failures_text(df: pd.DataFrame, most: int = 5) -> str:
    """The runs that are not replicates because they did not finish (failed, killed, still running), named with
    their error: '' when there are none."""
    bad = df[(df["status"] != "FINISHED")]
    if bad.empty:
        return ""
    names = []
    for _, r in bad.head(most).iterrows():
        why = r.get("error")
        why = (
            "" if why is None or (isinstance(why, float) and math.isnan(why)) else f": {str(why).splitlines()[0][:120]}"
        )
        names.append(f"{r['run_name'] or r['run_id']} [{r['status']}{why}]")
    more = f" and {len(bad) - most} more" if len(bad) > most else ""
    return (
        f"Not counted ({len(bad)} run{'s' if len(bad) != 1 else ''} that did not finish): "
        + "; ".join(names)
        + more
        + "."
    )


_LONG_FLOAT = re.compile(r"(?<![\w.])\d+\.\d{5,}(?:e-?\d+)?")


def display_labels(labels: Iterable[str]) -> dict[str, str]:
    """label -> the label with long floats (a search's 0.324876732149455) at 4 significant digits, for
    screens and legends; labels that would then collide keep every digit. Keys and CSVs keep exact values."""
    labels = list(dict.fromkeys(labels))
    short = {lab: _LONG_FLOAT.sub(lambda m: f"{float(m.group()):.4g}", lab) for lab in labels}
    clash = pd.Series(list(short.values())).duplicated(keep=False).to_numpy()
    return {lab: (lab if c else short[lab]) for lab, c in zip(labels, clash)}


def pts(x: float, signed: bool = False) -> str:
    return "" if x is None or pd.isna(x) else f"{x * 100:{'+' if signed else ''}.2f}"


def headline_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The runs a sweep's figures and "best" rest on: a study's confirmatory phase once it has run, else its
    exploratory phase; a plain sweep's runs."""
    phases = phase_frames(df)
    return phases.get(P.CONFIRMATORY, phases.get(P.EXPLORATORY, df))


def children_frame(client, parent_id: str) -> pd.DataFrame:
    """Every child run of a sweep's parent run, as frame_from_runs."""
    parent = client.get_run(parent_id)
    runs = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'", max_results=10_000
    )
    return frame_from_runs(runs)
