"""Runs -> one DataFrame -> settings and replicates -> paired statistics -> tables, sentences and figures.

The one home of the analysis: the parent-run summary at the end of every sweep (`summarize_children`, called
from sweep/parent.py), analysis.ipynb and `python -m sweep.report` (which executes that notebook) all call
these functions; the statistics themselves are in sweep/stats.py.

- A run's row carries every parameter it logged (the whole effective configuration; one layerN_drop_prob
  column per hidden layer of the deepest model, empty for shallower ones), its final metrics, status and
  `pruned` tag; the rates are numbers, other params the strings MLflow holds. A *setting* is that
  configuration minus the replicate index `seed` (stats.SETTING); a run that logged no params is no setting.
- Results (tables, "best", figures) use completed runs only: FINISHED and not pruned. Pruned, failed and
  killed runs are counted separately ("12 finished, 3 pruned, 1 failed") and named with their error.
- A two-phase study's runs carry `study.phase`; its phases are analysed apart (phase_frames), and its headline
  tables, figures and "best" are the confirmatory phase's (headline_frame).
- "Best" is the top of stats.rank by validation accuracy among settings with at least stats.MIN_SEEDS
  replicates, with the settings it cannot be told apart from (tied); never by a test metric. Each setting is
  compared with its p = 0 baseline, paired by replicate, on test accuracy and gap, and gets one of the four
  verdicts (sweep/stats.py) under the protocol its runs logged (`study.*`: Protocol, protocol_of).
- Figures put the mean effective hidden-layer rate on x (the mean of layerN_drop_prob, which is drop_prob
  when every layer uses it, whatever the depth) and draw one series per value of everything else that
  varies (the input rate, a learning rate, ...): up to SERIES_MAX series get a colour and a line each;
  more (an Optuna search draws a new setting every trial) become one point per setting coloured by the
  input rate. Error bars are the unpaired 95 % t-intervals of each setting's mean over its replicates, drawn
  from three replicates on (bars_text says which a title may promise).

Imports pandas, MLflow's client and matplotlib (lazily), never torch: reading results needs no training code.
"""

from __future__ import annotations

import ast
import json
import math
import re
import tempfile
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweep import atomic
from sweep import protocol as P
from sweep import stats as S

METRICS = ("train_acc", "val_acc", "test_acc", "gap", "train_loss", "val_loss", "test_loss")
TAGS = (
    "job_num",
    "pruned",
    "pruned_epoch",
    "optuna_study",
    "optuna_trial",
    "error",
    "device",
    "overrides",  # run tags
    "cpu_model",
    "onednn_isa",
    "onednn_max_cpu_isa",
    "cpu_matmul_path",
)  # kept as columns
PHASE = P.PHASE_PARAM  # the study phase a run belongs to (a param: the study sweeper sets it on each job)
HIDDEN_KEYS = ("drop_prob", "layer_drop_probs")  # plus layerN_drop_prob: the hidden-layer rates
INPUT_KEYS = ("input_drop_prob",)
HIDDEN, INPUT = "hidden_rate", "input_rate"  # derived numeric columns (mean effective hidden rate, input rate)
SERIES_MAX = 8  # the data-size study: 4 sizes x 2 input rates
METRIC_COLORS = {"train_acc": "tab:blue", "test_acc": "tab:orange", "val_acc": "tab:green", "gap": "tab:red"}
SETTINGS_CSV = "sweep_settings.csv"
RUNS_CSV = "sweep_results.csv"
PLOT = "gap_vs_dropout.png"
LAYER_PARAM = re.compile(r"layer(\d+)_drop_prob")  # sweep/job.py logs one per hidden layer, however many
NUMERIC = ("drop_prob", "input_drop_prob", "optimizer.lr")  # and every layerN_drop_prob: numbers in the frame
AT_BEST = "at_best_val."  # sweep.train.AT_BEST (not imported: reading results needs no torch)
MC_CURVE = "mc_curve."  # sweep.job.MC_CURVE: the MC-dropout average's test scores against t = 1..T (step = t)
RELIABILITY_ARTIFACT = "calibration/reliability.json"  # sweep.job.RELIABILITY_ARTIFACT


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
    metric_cols = [m for m in METRICS if m in metrics] + sorted(metrics - set(METRICS))
    for m in METRICS:  # the summary's columns exist even before any run logged them
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


# ---------------------------------------------------------------- counts, settings, best


def run_counts(df: pd.DataFrame) -> dict[str, int]:
    """finished (completed: FINISHED, not pruned), pruned, failed, killed, running; and total."""
    pruned = S.is_pruned(df)
    status = df["status"].where(~pruned, "PRUNED")
    out = {
        "finished": int((status == "FINISHED").sum()),
        "pruned": int(pruned.sum()),
        "failed": int((status == "FAILED").sum()),
        "killed": int((status == "KILLED").sum()),
        "running": int(status.isin(["RUNNING", "SCHEDULED"]).sum()),
    }
    out["total"] = len(df)
    return out


def counts_text(counts: dict[str, int]) -> str:
    """'12 finished, 3 pruned, 1 failed' (killed and running only when there are some)."""
    parts = [f"{counts['finished']} finished", f"{counts['pruned']} pruned", f"{counts['failed']} failed"]
    parts += [f"{counts[k]} {k}" for k in ("killed", "running") if counts.get(k)]
    return ", ".join(parts)


def settings_text(df: pd.DataFrame) -> str:
    """'2 settings x 3 replicates' (or '5 settings, 1-3 replicates each') over completed runs."""
    done = S.completed(df)
    if done.empty:
        return "no completed settings"
    seeds = done.groupby(S.SETTING)[S.SEED].agg(lambda s: s.map(S.canonical).nunique())
    n = sorted(set(seeds))
    many = "s" if len(seeds) > 1 else ""
    if len(n) == 1:
        return f"{len(seeds)} setting{many} x {n[0]} replicate{'s' if n[0] > 1 else ''}"
    return f"{len(seeds)} settings, {n[0]}-{n[-1]} replicates each"


def setting_table(df: pd.DataFrame, by_rank: bool = False, protocol: Protocol | None = None) -> pd.DataFrame:
    """One row per setting with completed runs, in parameter order (or best-first by validation accuracy with
    `by_rank`; rank is NaN without validation metrics and for settings with fewer than MIN_SEEDS replicates):
    label, rates, replicates (and pruned/unfinished runs of it), unpaired mean and 95 % t-interval of val/test/
    train accuracy and gap, `tied` with the top (stats.rank), and the paired difference from its baseline on
    test accuracy and on gap (d_test_*, d_gap_*: mean, interval and its confidence, Holm p, verdict, n)."""
    proto = protocol or protocol_of(df)
    done = S.completed(df)
    if done.empty:
        return pd.DataFrame(columns=["setting", "label", HIDDEN, INPUT, "seeds", "rank", "tied"])
    table = S.summarize(df, ("val_acc", "test_acc", "train_acc", "gap"), 0.95, keep=(HIDDEN, INPUT))
    table = table[table["seeds"] > 0].reset_index(drop=True)
    if done["val_acc"].notna().any():
        ranking = S.rank(df, "val_acc", alpha=proto.alpha, smallest_effect=proto.smallest_effect)
        table = table.merge(ranking[["setting", "tied", "rank"]], on="setting", how="left")
        table["tied"] = table["tied"].fillna(False).astype(bool)
        if by_rank:
            table = table.sort_values("rank", na_position="last", kind="stable")
    else:
        table["rank"], table["tied"] = math.nan, False
    paired = paired_comparisons(df, proto)
    base_label = dict(zip(paired["setting"], paired["baseline_label"]))
    table["baseline"] = table["setting"].map(base_label)
    _add_paired(table, paired, (("test_acc", "d_test"), ("gap", "d_gap")))
    return table.reset_index(drop=True)


PAIRED_FIELDS = {
    "n": "n",
    "mean_diff": "mean",
    "ci_low": "lo",
    "ci_high": "hi",
    "confidence": "conf",
    "p_holm": "p_holm",
    "verdict": "verdict",
    "margin": "margin",
}


def _add_paired(table: pd.DataFrame, paired: pd.DataFrame, columns: Sequence[tuple[str, str]]) -> None:
    """Per (metric, short) the paired difference of each table row's setting from its baseline, as columns
    <short>_n, _mean, _lo, _hi, _conf, _p_holm, _verdict, _margin (None where the metric has no comparison)."""
    for metric, short in columns:
        part = paired[paired["metric"] == metric].set_index("setting")
        for col, name in PAIRED_FIELDS.items():
            table[f"{short}_{name}"] = table["setting"].map(part[col]) if len(part) else None


def paired_comparisons(
    df: pd.DataFrame, protocol: Protocol | None = None, metrics: Sequence[str] = ("test_acc", "gap")
) -> pd.DataFrame:
    """stats.compare_to_baseline on `metrics` under the runs' protocol; empty when the runs log no dropout rate."""
    proto = protocol or protocol_of(df)
    try:
        return S.compare_to_baseline(
            df, metrics, alpha=proto.alpha, smallest_effect=proto.smallest_effect, target_power=proto.power
        )
    except ValueError:  # no dropout keys among the params: no baseline can be named
        return S.compare(df, [], metrics[0])


def best(df: pd.DataFrame, protocol: Protocol | None = None) -> dict[str, Any] | None:
    """The best setting by validation accuracy among settings with at least MIN_SEEDS completed replicates (None
    without validation metrics or such settings): its label, replicates, mean val/test accuracy and gap, and
    the labels it is tied with."""
    done = S.completed(df)
    if done.empty or done["val_acc"].isna().all():
        return None
    table = setting_table(df, by_rank=True, protocol=protocol)
    if table["rank"].isna().all():
        return None
    top = table.iloc[0]
    return {
        "setting": top["setting"],
        "label": top["label"],
        "seeds": int(top["seeds"]),
        "val_acc": top["val_acc_mean"],
        "test_acc": top["test_acc_mean"],
        "gap": top["gap_mean"],
        "tied_with": [lab for lab in table.loc[table["tied"].astype(bool), "label"] if lab != top["label"]],
    }


NO_BASELINE = "The sweep has no setting without dropout (p = 0, all else equal) to compare it with."


def headline(df: pd.DataFrame, protocol: Protocol | None = None) -> str:
    """The report's sentence: the best by validation accuracy (or the settings tied for it), then the top
    setting against its p = 0 baseline on the protocol's metrics, paired by replicate."""
    proto = protocol or protocol_of(df)
    done = S.completed(df)
    if done.empty:
        return "Best: no completed runs to rank."
    if done["val_acc"].isna().all():
        return (
            "Best: not chosen; the runs have no validation split (data.val_size=0), and choosing by the "
            "test set would make its test accuracy an optimistic estimate."
        )
    ranking = S.rank(df, "val_acc", alpha=proto.alpha, smallest_effect=proto.smallest_effect)
    short = display_labels(df[S.LABEL])
    ranking["label"] = ranking["label"].map(short)
    parts = [S.ranking_sentence(ranking)]
    try:
        baselines = S.find_baselines(df)
    except ValueError:
        baselines = {}
    if not ranking["ranked"].astype(bool).any():
        if not baselines:
            parts.append(NO_BASELINE)
        return " ".join(parts)
    top = ranking["setting"].iloc[0]
    if top in baselines:  # its rows of the sweep's family of comparisons: Holm over every setting, not this one
        paired = paired_comparisons(df, proto, proto.metrics)
        paired = paired[paired["setting"] == top].copy()
        paired["label"], paired["baseline_label"] = paired["label"].map(short), paired["baseline_label"].map(short)
        parts += S.comparison_sentences(paired)
    elif baselines and S.dropout_free(S.setting_params(top)):
        parts.append("The top setting trains without dropout.")
    else:
        parts.append(NO_BASELINE)
    return " ".join(parts)


def verdict_table(df: pd.DataFrame, protocol: Protocol | None = None) -> pd.DataFrame:
    """Every setting against its baseline on the protocol's metrics: the rows compare() gives, one family per
    metric (the headline verdicts of a confirmatory phase)."""
    proto = protocol or protocol_of(df)
    return paired_comparisons(df, proto, proto.metrics)


SAME, DECIDED, CONTRADICTED = "same", "decided", "contradicted"


def agreement(exploratory: pd.DataFrame, confirmatory: pd.DataFrame) -> pd.DataFrame:
    """Per (setting, metric) compared in both phases: the two verdicts and how they relate: `same` word;
    `decided` (the exploratory phase was inconclusive, the confirmatory one is not: it had the replicates the
    exploratory phase lacked); or `contradicted` (two different conclusions: higher against lower, or either
    against equivalent, or a conclusion the confirmatory phase could not repeat)."""
    cols = ["label", "metric", "exploratory", "confirmatory", "relation"]
    if exploratory.empty or confirmatory.empty:
        return pd.DataFrame(columns=cols)
    e = exploratory.set_index(["setting", "metric"])["verdict"]
    c = confirmatory.set_index(["setting", "metric"])
    rows = []
    for k in c.index:
        if k not in e.index:
            continue
        before, after = e[k], c.at[k, "verdict"]
        relation = SAME if before == after else DECIDED if before == P.INCONCLUSIVE else CONTRADICTED
        rows.append(
            {
                "label": c.at[k, "label"],
                "metric": k[1],
                "exploratory": before,
                "confirmatory": after,
                "relation": relation,
            }
        )
    return pd.DataFrame(rows, columns=cols)


def crosscheck(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Two runs of the same study (e.g. under two CPU kernel families), their headline verdicts side by side per
    (setting, metric): `same` word, `one inconclusive` (compatible: one run decided what the other could not),
    or `contradicted` (higher against lower, or a direction against equivalent)."""
    cols = ["label", "metric", "a", "b", "a_interval", "b_interval", "relation"]
    va, vb = verdict_table(headline_frame(a)), verdict_table(headline_frame(b))
    if va.empty or vb.empty:
        return pd.DataFrame(columns=cols)
    ia, ib = va.set_index(["setting", "metric"]), vb.set_index(["setting", "metric"])
    _, scale, _ = S.METRIC_TEXT["test_acc"]
    rows = []
    for k in ia.index:
        if k not in ib.index:
            continue
        x, y = ia.loc[k], ib.loc[k]
        relation = (
            SAME
            if x.verdict == y.verdict
            else ONE_INCONCLUSIVE
            if P.INCONCLUSIVE in (x.verdict, y.verdict)
            else CONTRADICTED
        )
        rows.append(
            {
                "label": x.label,
                "metric": k[1],
                "a": x.verdict,
                "b": y.verdict,
                "relation": relation,
                **{
                    f"{n}_interval": f"{_pts(r.mean_diff, True)} [{_pts(r.ci_low, True)},{_pts(r.ci_high, True)}]"
                    for n, r in (("a", x), ("b", y))
                },
            }
        )
    return pd.DataFrame(rows, columns=cols)


ONE_INCONCLUSIVE = "one inconclusive"


def agreement_text(agree: pd.DataFrame) -> str:
    """One sentence: how many verdicts the two phases share, how many the confirmatory phase decided, and which
    it contradicted."""
    if agree.empty:
        return ""
    n = agree["relation"].value_counts()
    bad = agree[agree["relation"] == CONTRADICTED]
    return (
        f"Exploratory vs confirmatory, {len(agree)} verdicts: {n.get(SAME, 0)} the same, {n.get(DECIDED, 0)} "
        "inconclusive in the exploratory phase and decided by the confirmatory one, "
        f"{n.get(CONTRADICTED, 0)} contradicted"
        + (
            "."
            if bad.empty
            else ": "
            + "; ".join(f"{r.label} {r.metric} ({r.exploratory} -> {r.confirmatory})" for r in bad.itertuples())
            + "."
        )
    )


# ---------------------------------------------------------------- the console table

_LONG_FLOAT = re.compile(r"(?<![\w.])\d+\.\d{5,}(?:e-?\d+)?")


def display_labels(labels: Iterable[str]) -> dict[str, str]:
    """label -> the label with long floats (a search's 0.324876732149455) at 4 significant digits, for
    screens and legends; labels that would then collide keep every digit. Keys and CSVs keep exact values."""
    labels = list(dict.fromkeys(labels))
    short = {lab: _LONG_FLOAT.sub(lambda m: f"{float(m.group()):.4g}", lab) for lab in labels}
    clash = pd.Series(list(short.values())).duplicated(keep=False).to_numpy()
    return {lab: (lab if c else short[lab]) for lab, c in zip(labels, clash)}


def _pts(x: float, signed: bool = False) -> str:
    return "" if x is None or pd.isna(x) else f"{x * 100:{'+' if signed else ''}.2f}"


def diff_text(row: pd.Series, short: str) -> str:
    """A setting_table row's paired difference (short: 'd_test' or 'd_gap') as '+0.45 [+0.36,+0.55] higher',
    'inconclusive (2 replicates)', or '-' for a baseline or a setting without one."""
    verdict = row.get(f"{short}_verdict")
    if verdict is None or (not isinstance(verdict, str) and pd.isna(verdict)):
        return "-"  # a baseline itself, or no baseline in the sweep
    n = int(row[f"{short}_n"])
    if n < S.MIN_SEEDS:
        return f"{verdict} ({n} replicate{'s' if n != 1 else ''})"
    lo, hi = _pts(row[f"{short}_lo"], True), _pts(row[f"{short}_hi"], True)
    return f"{_pts(row[f'{short}_mean'], True)} [{lo},{hi}] {verdict}"


def rank_text(row: pd.Series) -> str:
    """'1' for the top by validation, '=1' for a setting tied with it, else its place; '-' for a setting with
    too few replicates to rank; '' without val_acc."""
    r = row.get("rank")
    if r is None or pd.isna(r):
        return "-" if row.get("val_acc_mean") is not None and pd.notna(row.get("val_acc_mean")) else ""
    return "1" if r == 1 else ("=1" if bool(row.get("tied")) else str(int(r)))


def _text_table(head: Sequence[str], rows: list[list], left: Sequence[int], label_width: int = 48) -> list[str]:
    """Fixed-width lines: the first cell of each row is a label wrapped at `label_width`; columns in `left` are
    left-aligned, the others right-aligned."""
    rows = [[textwrap.wrap(str(r[0]), label_width, break_on_hyphens=False) or [""], *r[1:]] for r in rows]
    lw = max(len(head[0]), *(len(line) for r in rows for line in r[0]))
    widths = [lw] + [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(1, len(head))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 or i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    out = [line(head), line(["-" * w for w in widths])]
    for r in rows:
        out.append(line([r[0][0], *r[1:]]))
        out += [line([extra] + [""] * (len(head) - 1)) for extra in r[0][1:]]
    return out


def console_table(table: pd.DataFrame, max_rows: int = 40, label_width: int = 48) -> str:
    """The table of points as fixed-width text: setting, replicates, rank by validation accuracy ('=1': tied
    with the best, '-': too few replicates to rank), mean val / test accuracy and gap in %, and the paired
    difference from p = 0 in test accuracy and gap (interval, verdict). More than `max_rows` settings: the
    best by validation."""
    if table.empty:
        return "(no completed runs)"
    shown = table if len(table) <= max_rows else table.sort_values("rank", kind="stable").head(max_rows)
    shown = shown.assign(label=shown["label"].map(display_labels(table["label"])))
    head = ["setting", "repl.", "rank", "val %", "test %", "gap", "test vs p=0", "gap vs p=0"]
    rows = [
        [
            r["label"],
            str(int(r["seeds"])),
            rank_text(r),
            _pts(r.get("val_acc_mean")),
            _pts(r.get("test_acc_mean")),
            _pts(r.get("gap_mean")),
            diff_text(r, "d_test"),
            diff_text(r, "d_gap"),
        ]
        for _, r in shown.iterrows()
    ]
    out = _text_table(head, rows, (6, 7), label_width)
    if len(table) > max_rows:
        out.append(f"... the {max_rows} best by validation shown; {len(table) - max_rows} more in {SETTINGS_CSV}")
    return "\n".join(out)


def reading_text(table: pd.DataFrame, protocol: Protocol | None = None) -> str:
    """How to read console_table's last two columns: the interval levels it carries and the smallest effects."""
    proto = protocol or Protocol()
    confs = sorted({float(c) for col in ("d_test_conf", "d_gap_conf") if col in table for c in table[col].dropna()})
    level = (
        (
            "at each comparison's Holm step level ("
            + (
                S.confidence_text(confs[0])
                if len(confs) == 1
                else f"{S.confidence_text(confs[0])}-{S.confidence_text(confs[-1])}"
            )
            + ")"
        )
        if confs
        else "at each comparison's Holm step level"
    )
    effects = ", ".join(f"{m} ±{proto.smallest_effect[m]:g}" for m in ("test_acc", "gap") if m in proto.smallest_effect)
    return (
        f"Means over completed replicates; rank by validation accuracy (=1: tied with the best; -: fewer than "
        f"{S.MIN_SEEDS} replicates, not ranked). 'vs p=0': paired by replicate, mean [interval] in points, "
        f"the interval {level}; equivalent: it lies inside the smallest effect of interest ({effects} points; "
        f"then at the family's level); higher/lower: it excludes 0; else inconclusive."
    )


# The best-validation-epoch view: is a smaller gap regularisation, or only slower fitting? Final train accuracy
# (lower = the network fits its training set less), the epoch of the best validation accuracy (later = it needs
# longer to get there), and test accuracy and gap at that epoch, each setting against its p = 0 baseline paired
# by replicate. "Slower fitting" needs both views: train accuracy at its ceiling can hide a later best epoch.
FIT_VIEW = (
    ("train_acc", "d_train"),
    ("best_epoch", "d_epoch"),
    (f"{AT_BEST}test_acc", "d_best_test"),
    (f"{AT_BEST}gap", "d_best_gap"),
)


def best_epoch_table(df: pd.DataFrame, protocol: Protocol | None = None) -> pd.DataFrame:
    """One row per setting with completed runs: replicates, mean final train accuracy, mean best_epoch, mean test
    accuracy and gap at the best-validation epoch, and the paired differences of each from the baseline
    (d_train_*, d_epoch_*, d_best_test_*, d_best_gap_*). Empty when the runs have no best-epoch metrics."""
    proto = protocol or protocol_of(df)
    metrics = [m for m, _ in FIT_VIEW]
    done = S.completed(df)
    if done.empty or any(m not in df or df[m].isna().all() for m in metrics):
        return pd.DataFrame()
    table = S.summarize(df, metrics, 0.95)
    table = table[table["seeds"] > 0].reset_index(drop=True)
    try:
        paired = S.compare_to_baseline(
            df, metrics, alpha=proto.alpha, smallest_effect=proto.smallest_effect, target_power=proto.power
        )
    except ValueError:
        paired = pd.DataFrame(columns=["setting", "metric"])
    _add_paired(table, paired, FIT_VIEW)
    return table


def epochs_text(row: pd.Series) -> str:
    """d_epoch as '+12 [+4,+20] higher' (epochs, not points)."""
    verdict = row.get("d_epoch_verdict")
    if verdict is None or (not isinstance(verdict, str) and pd.isna(verdict)):
        return "-"
    n = int(row["d_epoch_n"])
    if n < S.MIN_SEEDS:
        return f"{verdict} ({n} replicate{'s' if n != 1 else ''})"
    return f"{row['d_epoch_mean']:+.0f} [{row['d_epoch_lo']:+.0f},{row['d_epoch_hi']:+.0f}] {verdict}"


def best_epoch_console(table: pd.DataFrame, label_width: int = 48) -> str:
    """best_epoch_table as fixed-width text ('' when empty)."""
    if table.empty:
        return ""
    shown = table.assign(label=table["label"].map(display_labels(table["label"])))
    head = [
        "setting",
        "repl.",
        "train %",
        "train vs p=0",
        "best ep.",
        "best ep. vs p=0",
        "test % @best",
        "test vs p=0 @best",
        "gap @best",
        "gap vs p=0 @best",
    ]
    rows = [
        [
            r["label"],
            str(int(r["seeds"])),
            _pts(r["train_acc_mean"]),
            diff_text(r, "d_train"),
            f"{r['best_epoch_mean']:.0f}",
            epochs_text(r),
            _pts(r[f"{AT_BEST}test_acc_mean"]),
            diff_text(r, "d_best_test"),
            _pts(r[f"{AT_BEST}gap_mean"]),
            diff_text(r, "d_best_gap"),
        ]
        for _, r in shown.iterrows()
    ]
    return "\n".join(_text_table(head, rows, (3, 5, 7, 9), label_width))


def _phase_block(df: pd.DataFrame, proto: Protocol, title: str) -> list[str]:
    """One phase's (or a plain sweep's) table, its reading, the machines and the runs left out."""
    table = setting_table(df, protocol=proto)
    about = [textwrap.fill(t, 110) for t in (replicates_text(df), machines_text(df), failures_text(df)) if t]
    return [title, *about, "", console_table(table), "", textwrap.fill(reading_text(table, proto), 110)]


def study_text(df: pd.DataFrame, plan: Mapping[str, Any] | None = None) -> list[str]:
    """A two-phase study's summary: both phases' tables, the frozen plan, the confirmatory verdicts in the four
    words (the headline), and whether the exploratory phase's verdicts agree with them."""
    phases = phase_frames(df)
    proto = protocol_of(df)
    lines: list[str] = []
    exp, conf = phases.get(P.EXPLORATORY), phases.get(P.CONFIRMATORY)
    if exp is not None:
        lines += _phase_block(exp, proto, "== Exploratory phase: designs the confirmatory phase; not a headline ==")
        lines.append("")
    if plan:
        lines += [
            "== The plan, fixed before the confirmatory phase ==",
            *(textwrap.fill(ln, 110, subsequent_indent="  ") for ln in plan.get("lines", [])),
            "",
        ]
    if conf is None:
        lines.append("The confirmatory phase has not run yet: no headline verdict.")
        return lines
    lines += _phase_block(conf, proto, "== Confirmatory phase (fresh replicates): the headline verdicts ==")
    verdicts = verdict_table(conf, proto)
    short = display_labels(conf[S.LABEL])
    verdicts = verdicts.assign(label=verdicts["label"].map(short), baseline_label=verdicts["baseline_label"].map(short))
    lines += ["", "Confirmatory verdicts:"] + [
        textwrap.fill(s, 110, initial_indent="- ", subsequent_indent="  ") for s in S.comparison_sentences(verdicts)
    ]
    if exp is not None:
        agree = agreement(verdict_table(exp, proto), verdicts)
        if len(agree):
            lines.append(textwrap.fill(agreement_text(agree), 110))
    return lines


def end_of_sweep_text(
    df: pd.DataFrame,
    parent_id: str | None = None,
    sweep_dir: Path | str | None = None,
    tracking_uri: str | None = None,
    plan: Mapping[str, Any] | None = None,
) -> str:
    """What the console shows when a sweep ends: counts, the table of points (per phase for a study, with its
    plan and headline verdicts), the sentence, and where the CSVs, the plot, the MLflow UI and the report are."""
    from sweep.redact import redact

    proto = protocol_of(df)
    phases = phase_frames(df)
    lines = [f"Sweep summary: {len(df)} runs: {counts_text(run_counts(df))}; {settings_text(df)}.", ""]
    if set(phases) & set(P.PHASES):
        lines += study_text(df, plan)
        fit_df = phases.get(P.CONFIRMATORY, phases.get(P.EXPLORATORY))
    else:
        lines += [ln for ln in _phase_block(df, proto, "")[1:]] + [textwrap.fill(headline(df, proto), 110)]
        fit_df = df
    lines.append("")
    fit = best_epoch_console(best_epoch_table(fit_df, proto))
    if fit:
        lines += [
            "Final train accuracy, the best-validation epoch, and test accuracy and gap there (a smaller gap from",
            "slower fitting shows as lower train accuracy or a later best epoch):",
            "",
            fit,
            "",
        ]
    if sweep_dir is not None:
        d = Path(sweep_dir)
        lines.append(f"CSV:    {d / RUNS_CSV} (one row per run)")
        lines.append(f"        {d / SETTINGS_CSV} (one row per setting)")
        lines.append(f"Plot:   {d / PLOT}")
    default = tracking_uri is None or _is_default_store(tracking_uri)
    lines.append("Browse: make ui" if default else f"Browse: mlflow ui --backend-store-uri {redact(tracking_uri)}")
    args = ([f"--tracking-uri {redact(tracking_uri)}"] if not default else []) + (
        [f"--parent-run-id {parent_id}"] if parent_id else []
    )
    lines.append("Report: make report" + (f" REPORT_ARGS='{' '.join(args)}'" if args else ""))
    return "\n".join(ln for ln in lines if ln is not None)


def _is_default_store(uri: str) -> bool:
    from sweep.paths import PROJECT_ROOT

    return (
        uri.startswith("sqlite:///")
        and Path(uri.removeprefix("sqlite:///")).resolve() == (PROJECT_ROOT / "runs" / "mlflow.db").resolve()
    )


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


def headline_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The runs a sweep's figures and "best" rest on: a study's confirmatory phase once it has run, else its
    exploratory phase; a plain sweep's runs."""
    phases = phase_frames(df)
    return phases.get(P.CONFIRMATORY, phases.get(P.EXPLORATORY, df))


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


# ---------------------------------------------------------------- the parent run's summary


def children_frame(client, parent_id: str) -> pd.DataFrame:
    """Every child run of a sweep's parent run, as frame_from_runs."""
    parent = client.get_run(parent_id)
    runs = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'", max_results=10_000
    )
    return frame_from_runs(runs)


def summarize_children(client, parent_id: str, sweep_dir: Path | None) -> pd.DataFrame:
    """Logs onto the parent run (and writes into the sweep folder): the runs' CSV, the settings' CSV, the
    overview plot, the counts (`children` tag) and the best setting by validation accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = children_frame(client, parent_id)
    shown = headline_frame(df)  # a study: its confirmatory phase (else exploratory); CSV of runs: every run
    table = setting_table(shown)
    with tempfile.TemporaryDirectory() as tmp:  # made aside, logged, then renamed into the sweep folder: a full
        staged = Path(tmp)  # sweep folder keeps its old files whole and MLflow still gets these
        df.to_csv(staged / RUNS_CSV, index=False)
        table.to_csv(staged / SETTINGS_CSV, index=False)
        fig = overview_figure(shown, table)
        fig.savefig(staged / PLOT, dpi=120)
        plt.close(fig)
        files = (RUNS_CSV, SETTINGS_CSV, PLOT)
        plan = Path(sweep_dir) / P.PLAN_ARTIFACT if sweep_dir else None
        plan_files = [str(plan)] if plan is not None and plan.is_file() else []  # a study's frozen design

        def into_sweep_folder() -> None:
            for name in files if sweep_dir else ():
                atomic.copy(staged / name, Path(sweep_dir) / name)

        def onto_parent() -> None:
            for path in [str(staged / name) for name in files] + plan_files:
                client.log_artifact(parent_id, path)

        failed: list[Exception] = []  # each place gets what it can take; the first failure is raised at the end
        for write in (into_sweep_folder, onto_parent, lambda: _tag_summary(client, parent_id, df, shown)):
            try:
                write()
            except Exception as e:  # noqa: BLE001
                failed.append(e)
        if failed:
            raise failed[0]
    return df


def _tag_summary(client, parent_id: str, df: pd.DataFrame, shown: pd.DataFrame) -> None:
    """The counts (all runs), the settings and the best setting (of the headline runs), as tags and metrics of
    the parent run."""
    c = run_counts(df)
    others = c["total"] - c["finished"]
    client.set_tag(
        parent_id,
        "children",
        f"{c['finished']} finished / {c['total']}" if not others else f"{counts_text(c)} / {c['total']}",
    )
    client.set_tag(parent_id, "settings", settings_text(shown))
    top = best(shown)
    if top is not None:
        client.set_tag(parent_id, "best_setting", top["label"])
        client.set_tag(parent_id, "best_setting_tied_with", ", ".join(top["tied_with"]) or "none")
        for name, key in (
            ("best_setting_val_acc", "val_acc"),
            ("best_setting_test_acc", "test_acc"),
            ("best_setting_gap", "gap"),
            ("best_setting_seeds", "seeds"),
        ):
            if pd.notna(top[key]):
                client.log_metric(parent_id, name, float(top[key]))
