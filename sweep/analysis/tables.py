"""Settings tables: counts, one row per setting with its paired comparison against the p = 0 baseline, the
best setting by validation accuracy, verdict tables, and the agreement of two phases or two runs of a study."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from sweep import protocol as P
from sweep.analysis import stats as S
from sweep.analysis.frame import HIDDEN, INPUT, Protocol, display_labels, headline_frame, protocol_of, pts

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
    add_paired(table, paired, (("test_acc", "d_test"), ("gap", "d_gap")))
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


def add_paired(table: pd.DataFrame, paired: pd.DataFrame, columns: Sequence[tuple[str, str]]) -> None:
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
                    f"{n}_interval": f"{pts(r.mean_diff, True)} [{pts(r.ci_low, True)},{pts(r.ci_high, True)}]"
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
