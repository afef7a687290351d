"""Replicates, paired comparisons and ties: the statistics behind every number and sentence a report prints.

Vocabulary
- setting: the full effective configuration minus the seed, with exact values (0.2996 and 0.3012 are two
  settings; so are two learning rates or two precisions). Keys that never change what is trained are left
  out; they are listed once, in NOT_SETTING.
- replicate: a completed run (status FINISHED and not pruned) of a setting. Replicates are distinct seeds;
  two completed runs of one setting with one seed count once (their mean).
- baseline: the setting with every dropout rate 0 and everything else equal.

Why paired: runs with the same seed share initial weights, batch order and (with a fixed split seed) the
validation split, so the per-seed difference "setting minus baseline" cancels most of the seed-to-seed noise
that an unpaired interval counts twice. Below MIN_SEEDS paired seeds nothing is tested and no interval is
given. Tests are corrected for the number of comparisons with Holm's method (statsmodels).

Pure pandas/numpy/scipy/statsmodels (no MLflow, no plotting): the notebook, `python -m sweep.report` and the
parent-run summary all call this module and re-implement none of it.
"""
from __future__ import annotations

import ast
import fnmatch
import json
import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

SEED = "seed"
SETTING = "setting"            # column added by add_setting_column: the exact key (JSON of the setting's params)
LABEL = "setting_label"        # column added by add_setting_column: short, names only what varies
MIN_SEEDS = 3                  # fewer paired seeds: no interval, no test
MAX_NAMED = 5                  # a sentence names at most this many tied settings, then "and N more"

# Keys (fnmatch patterns) that are not part of a setting: the seed, and what never changes what is trained.
NOT_SETTING = (
    "seed",              # the replicate axis itself
    "objective",         # what a search optimises; a completed, unpruned run trains the same whatever it is
    "tracking.*",        # where results are written
    "optuna.*",          # search plumbing: storage, study, trial number
    "hydra.*",           # output folders, launcher
    "data.root", "data.download", "data.verify",  # where the files are and whether they are checked
    "trainer.progress",  # a progress bar
    "trainer.threads",   # CPU threads: changes only the order of floating-point sums
    "trainer.cpu_matmul",  # oneDNN or BLAS for fp32 products on the CPU: the same, summed in another order
    "trainer.device",    # where it runs ('auto' names no device); trainer.precision, which does matter, stays
    "layer*_width",      # the widths as built: model.hidden_sizes, model.constant_capacity and the rates, all kept
)

# Dropout keys: the baseline of a setting differs from it only in these, all set to 0.
DROPOUT_KEYS = ("drop_prob", "input_drop_prob", "layer_drop_probs")
_LAYER_RATE = re.compile(r"layer(\d+)_drop_prob$")  # effective per-layer rates the job logs (1-based)
SHORT_NAMES = {"drop_prob": "p", "input_drop_prob": "p_in"}  # layerN_drop_prob -> pN

HIGHER, LOWER = "higher", "lower"
NOT_DISTINGUISHABLE, TOO_FEW = "not distinguishable", "too few seeds"

# metric -> (words, scale, unit) for sentences; accuracies are stored as fractions and printed in points
METRIC_TEXT = {
    "test_acc": ("test accuracy", 100.0, "points"),
    "val_acc": ("validation accuracy", 100.0, "points"),
    "train_acc": ("training accuracy", 100.0, "points"),
    "gap": ("gap (train - test)", 100.0, "points"),
    "val_gap": ("validation gap (train - validation)", 100.0, "points"),
    "test_loss": ("test loss", 1.0, ""),
    "val_loss": ("validation loss", 1.0, ""),
    "train_loss": ("training loss", 1.0, ""),
}


# ---------------------------------------------------------------- settings and replicates

def canonical(value: Any) -> str:
    """One exact spelling per value, so '0.3', 0.3 and 3e-1 are one value, 15 and 15.0 are one value, and
    0.2996 and 0.3012 stay two (repr of a float round-trips exactly)."""
    if value is None or (pd.api.types.is_scalar(value) and not isinstance(value, str) and pd.isna(value)):
        return "None"  # None, NaN, pd.NA: a missing value (e.g. a layer a shallower model does not have)
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, str):
        s = value.strip()
        if s in ("None", "null", "nan", "NaN"):
            return "None"
        if s.startswith("[") or s.startswith("("):
            try:
                return canonical(list(ast.literal_eval(s)))
            except (ValueError, SyntaxError, TypeError):
                return s
        try:
            return str(int(s))
        except ValueError:
            pass
        try:
            value = float(s)
        except ValueError:
            return s
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(canonical(v) for v in value) + "]"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        f = float(value)
        if math.isnan(f):
            return "None"
        return str(int(f)) if f.is_integer() and abs(f) < 2 ** 53 else repr(f)
    return str(value)


def is_setting_key(name: str, ignore: Sequence[str] = NOT_SETTING) -> bool:
    """Whether a parameter name is part of a setting (not matched by any pattern in `ignore`)."""
    return not any(fnmatch.fnmatchcase(name, pat) for pat in ignore)


def setting_key(params: Mapping[str, Any], ignore: Sequence[str] = NOT_SETTING) -> str:
    """The exact, hashable key of one run's setting: sorted JSON of its canonical parameter values."""
    kept = {k: canonical(v) for k, v in params.items() if is_setting_key(k, ignore)}
    return json.dumps(kept, sort_keys=True)


def setting_params(key: str) -> dict[str, str]:
    """The canonical parameter values a setting key was built from."""
    return json.loads(key)


def _label_order(name: str) -> tuple:
    m = _LAYER_RATE.match(name)
    if name in SHORT_NAMES:
        return (0, DROPOUT_KEYS.index(name), name)
    if m:
        return (1, int(m.group(1)), name)
    if name == "layer_drop_probs":
        return (3, 0, name)
    return (2, 0, name)


def _short(name: str) -> str:
    m = _LAYER_RATE.match(name)
    return SHORT_NAMES.get(name) or (f"p{m.group(1)}" if m else name)


def _label_columns(settings: pd.DataFrame) -> list[str]:
    """Columns that vary between settings, minus the dropout columns that say nothing new: layerN_drop_prob
    where it equals drop_prob in every setting (a drop_prob sweep), and layer_drop_probs when the effective
    layerN rates are there."""
    def says_something(c: str) -> bool:
        if _LAYER_RATE.match(c) and "drop_prob" in settings:
            return bool((settings[c] != settings["drop_prob"]).any())
        if c == "layer_drop_probs":
            return not any(_LAYER_RATE.match(k) for k in settings.columns)
        return True
    varying = [c for c in settings.columns if settings[c].nunique() > 1 and says_something(c)]
    return sorted(varying, key=_label_order)


def add_setting_column(df: pd.DataFrame, param_cols: Iterable[str],
                       ignore: Sequence[str] = NOT_SETTING) -> pd.DataFrame:
    """A copy of `df` (one row per run) with SETTING (exact key from every param column not in `ignore`) and
    LABEL (e.g. "p=0.5, p_in=0.2": only the params that vary between the settings in `df`)."""
    cols = [c for c in param_cols if is_setting_key(c, ignore)]
    canon = df[cols].apply(lambda col: col.map(canonical)) if cols else pd.DataFrame(index=df.index)
    out = df.copy()
    out[SETTING] = [json.dumps(dict(zip(cols, row)), sort_keys=True) for row in canon.itertuples(index=False)]
    settings = canon.drop_duplicates()
    label_cols = _label_columns(settings)
    if not label_cols:  # one setting: name its dropout rates
        label_cols = [c for c in ("drop_prob", "input_drop_prob") if c in cols]
    if label_cols:
        out[LABEL] = [", ".join(f"{_short(c)}={v}" for c, v in zip(label_cols, row))
                      for row in canon[label_cols].itertuples(index=False)]
    else:
        out[LABEL] = "all runs"
    return out


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    return canonical(v) not in ("None", "False", "0")


def is_pruned(df: pd.DataFrame) -> pd.Series:
    """The `pruned` column as booleans (MLflow tags are the string 'true'; absent means not pruned)."""
    if "pruned" not in df:
        return pd.Series(False, index=df.index)
    return df["pruned"].map(_truthy).astype(bool)


def completed(df: pd.DataFrame) -> pd.DataFrame:
    """Runs that count as replicates: status FINISHED and not pruned (a pruned run stops early but is
    FINISHED in MLflow, with metrics from an early epoch)."""
    return df[(df["status"] == "FINISHED") & ~is_pruned(df)]


def per_seed(df: pd.DataFrame, metric: str, seed_col: str = SEED) -> pd.DataFrame:
    """Completed runs' `metric` as a seeds x settings table (mean when one seed of a setting ran twice)."""
    done = completed(df).dropna(subset=[metric])
    done = done.assign(**{seed_col: done[seed_col].map(canonical)})
    return done.pivot_table(index=seed_col, columns=SETTING, values=metric, aggfunc="mean")


def labels(df: pd.DataFrame) -> dict[str, str]:
    """setting key -> label."""
    return dict(zip(df[SETTING], df[LABEL]))


# ---------------------------------------------------------------- intervals and tests

def mean_interval(values: Iterable[float], confidence: float = 0.95) -> dict[str, float]:
    """n, mean, sd (n-1 denominator) and the t-interval mean -/+ t(1-a/2, n-1) * sd/sqrt(n); the interval is
    NaN below MIN_SEEDS values."""
    x = np.asarray(list(values), dtype=float)
    n = len(x)
    out = {"n": n, "mean": float(x.mean()) if n else math.nan, "sd": float(x.std(ddof=1)) if n > 1 else math.nan,
           "ci_low": math.nan, "ci_high": math.nan}
    if n >= MIN_SEEDS:
        half = stats.t.ppf(0.5 + confidence / 2, n - 1) * out["sd"] / math.sqrt(n)
        out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
    return out


def paired_test(diffs: Iterable[float], confidence: float = 0.95) -> dict[str, float]:
    """mean_interval of per-seed differences plus the paired t-test (one-sample t on the differences,
    two-sided, n-1 df). Identical differences (sd 0) give p = 1 when they are 0, else p = 0."""
    d = np.asarray(list(diffs), dtype=float)
    out = {**mean_interval(d, confidence), "t": math.nan, "p": math.nan}
    if out["n"] >= MIN_SEEDS:
        if out["sd"] == 0:
            out["t"] = 0.0 if out["mean"] == 0 else math.copysign(math.inf, out["mean"])
            out["p"] = 1.0 if out["mean"] == 0 else 0.0
        else:
            res = stats.ttest_1samp(d, 0.0)
            out["t"], out["p"] = float(res.statistic), float(res.pvalue)
    return out


def holm(pvalues: Iterable[float]) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels); NaN entries (untested comparisons) stay NaN and are not counted."""
    p = np.asarray(list(pvalues), dtype=float)
    out = np.full_like(p, math.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def verdict(n: int, mean: float, ci_low: float, ci_high: float, p_holm: float, alpha: float = 0.05) -> str:
    """The rule: fewer than MIN_SEEDS paired seeds -> "too few seeds"; "higher"/"lower" (sign of the mean
    difference) when the Holm-adjusted p <= alpha AND the unadjusted interval excludes 0; else "not
    distinguishable". With confidence = 1 - alpha the second condition follows from the first."""
    if n < MIN_SEEDS:
        return TOO_FEW
    if p_holm <= alpha and (ci_low > 0 or ci_high < 0):
        return HIGHER if mean > 0 else LOWER
    return NOT_DISTINGUISHABLE


# ---------------------------------------------------------------- paired comparisons

def compare(df: pd.DataFrame, pairs: Iterable[tuple[str, str]], metric: str, alpha: float = 0.05,
            confidence: float = 0.95, seed_col: str = SEED) -> pd.DataFrame:
    """One row per (setting, reference) pair: per-seed differences setting minus reference on `metric`,
    paired by seed (only seeds completed on both sides), their mean/sd/n, t-interval, paired t-test p and
    Holm-adjusted p over the tested pairs of this call, and the verdict."""
    table = per_seed(df, metric, seed_col)
    names = labels(df)
    rows = []
    for setting, ref in pairs:
        both = table[[setting, ref]].dropna() if {setting, ref} <= set(table.columns) else pd.DataFrame()
        diffs = (both[setting] - both[ref]) if len(both) else pd.Series(dtype=float)
        rows.append({"setting": setting, "label": names.get(setting, setting), "baseline": ref,
                     "baseline_label": names.get(ref, ref), "metric": metric,
                     "seeds": tuple(both.index), "mean_setting": both[setting].mean() if len(both) else math.nan,
                     "mean_baseline": both[ref].mean() if len(both) else math.nan,
                     **paired_test(diffs, confidence)})
    out = pd.DataFrame(rows, columns=["setting", "label", "baseline", "baseline_label", "metric", "seeds",
                                      "mean_setting", "mean_baseline", "n", "mean", "sd", "ci_low", "ci_high",
                                      "t", "p"])
    out = out.rename(columns={"mean": "mean_diff", "sd": "sd_diff"})
    out["p_holm"] = holm(out["p"])
    out["n_tests"] = int(out["p"].notna().sum())
    out["confidence"], out["alpha"] = confidence, alpha
    out["verdict"] = [verdict(r.n, r.mean_diff, r.ci_low, r.ci_high, r.p_holm, alpha) for r in out.itertuples()]
    return out


def _is_zero(v: str | None) -> bool:
    try:
        return v is not None and float(v) == 0.0
    except ValueError:
        return False


def dropout_free(params: Mapping[str, str]) -> bool:
    """Whether a setting (canonical params) trains without any dropout: every effective rate is 0. The
    effective per-layer rates (layerN_drop_prob) decide when logged; else drop_prob with layer_drop_probs
    (null entries follow drop_prob). input_drop_prob counts either way."""
    rates = [params.get("input_drop_prob", "0")]
    layer = [v for k, v in params.items() if _LAYER_RATE.match(k) and v != "None"]
    if layer:
        rates += layer
    elif "drop_prob" in params or "layer_drop_probs" in params:
        base = params.get("drop_prob", "0")
        per_layer = params.get("layer_drop_probs", "[]")
        try:
            entries = ast.literal_eval(per_layer)
        except (ValueError, SyntaxError):
            entries = []
        rates += [base] + [base if e is None else str(e) for e in entries]
    else:
        raise ValueError("no dropout keys (drop_prob, input_drop_prob, layer_drop_probs, layerN_drop_prob) "
                         "among the setting's params; pass the baseline explicitly")
    return all(_is_zero(r) for r in rates)


def find_baselines(df: pd.DataFrame) -> dict[str, str]:
    """setting -> its baseline: the dropout-free setting equal to it in every non-dropout key. Settings with
    no such baseline (and baselines themselves) are left out. When several dropout-free spellings share the
    other keys, the one with the most completed seeds (then the smallest key) is the baseline."""
    seeds = completed(df).groupby(SETTING)[SEED].nunique() if SEED in df else pd.Series(dtype=int)
    groups: dict[str, list[str]] = {}
    for key in pd.unique(df[SETTING]):
        params = setting_params(key)
        rest = json.dumps({k: v for k, v in params.items() if k not in DROPOUT_KEYS and not _LAYER_RATE.match(k)},
                          sort_keys=True)
        groups.setdefault(rest, []).append(key)
    out = {}
    for keys in groups.values():
        zero = sorted((k for k in keys if _knowably_dropout_free(k)), key=lambda k: (-seeds.get(k, 0), k))
        if zero:
            out.update({k: zero[0] for k in keys if k not in zero})
    return out


def _knowably_dropout_free(key: str) -> bool:
    """dropout_free, or False for a setting that logged no dropout keys (a job that failed before its run)."""
    try:
        return dropout_free(setting_params(key))
    except ValueError:
        return False


def resolve_setting(df: pd.DataFrame, name: str) -> str:
    """A setting key from its key or its label."""
    if name in set(df[SETTING]):
        return name
    hits = set(df.loc[df[LABEL] == name, SETTING])
    if len(hits) != 1:
        raise ValueError(f"baseline {name!r} is not a setting key or label; labels: {sorted(set(df[LABEL]))}")
    return hits.pop()


def compare_to_baseline(df: pd.DataFrame, metrics: Sequence[str] = ("test_acc", "gap"), baseline: str | None = None,
                        alpha: float = 0.05, confidence: float = 0.95, seed_col: str = SEED) -> pd.DataFrame:
    """Every setting against its baseline (find_baselines, or `baseline` given as a key or label), one block
    of rows per metric; Holm corrects over the tested comparisons of each metric."""
    if baseline is None:
        pairs = list(find_baselines(df).items())
    else:
        ref = resolve_setting(df, baseline)
        pairs = [(k, ref) for k in pd.unique(df[SETTING]) if k != ref]
    order = {k: i for i, k in enumerate(settings_order(df))}
    pairs.sort(key=lambda kv: order[kv[0]])
    return pd.concat([compare(df, pairs, m, alpha, confidence, seed_col) for m in metrics], ignore_index=True)


def _sort_value(v: str) -> tuple:
    try:
        return (0, float(v), "")
    except ValueError:
        return (1, 0.0, v)


def settings_order(df: pd.DataFrame) -> list[str]:
    """Setting keys ordered by their parameter values (numbers numerically), dropout keys first."""
    keys = list(pd.unique(df[SETTING]))

    def sort_key(k: str) -> tuple:
        params = setting_params(k)
        return tuple(_sort_value(params[c]) for c in sorted(params, key=_label_order))
    return sorted(keys, key=sort_key)


# ---------------------------------------------------------------- per-setting summaries

def summarize(df: pd.DataFrame, metrics: Sequence[str] = ("val_acc", "test_acc", "gap"), confidence: float = 0.95,
              keep: Sequence[str] = (), seed_col: str = SEED) -> pd.DataFrame:
    """One row per setting (every setting seen, ordered by its params): label, completed seeds, pruned runs
    and unfinished ones (FAILED, KILLED, RUNNING) counted separately, and per metric the unpaired mean, sd, n and t-interval over seeds (no
    interval below MIN_SEEDS). `keep` carries param columns (e.g. drop_prob) for plotting."""
    done = completed(df)
    pruned = df[is_pruned(df)]
    unfinished = df[(df["status"] != "FINISHED") & ~is_pruned(df)]
    tables = {m: per_seed(df, m, seed_col) for m in metrics}
    names = labels(df)
    first = df.drop_duplicates(SETTING).set_index(SETTING)
    rows = []
    for key in settings_order(df):
        row = {"setting": key, "label": names[key], **{c: first.at[key, c] for c in keep},
               "seeds": int(done.loc[done[SETTING] == key, seed_col].map(canonical).nunique()),
               "pruned": int((pruned[SETTING] == key).sum()), "unfinished": int((unfinished[SETTING] == key).sum())}
        for m, table in tables.items():
            s = mean_interval(table[key].dropna() if key in table else [], confidence)
            row.update({f"{m}_{k}": v for k, v in s.items()})
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- ranking with ties

def reads_test_set(metric: str) -> bool:
    """A metric computed on the test set: test_* and the reported gap (train - test); never used to select."""
    m = metric.lower()
    return "test" in m or (re.search(r"(^|[_.])gap($|[_.])", m) is not None and "val_gap" not in m)


def rank(df: pd.DataFrame, metric: str = "val_acc", higher_is_better: bool | None = None, alpha: float = 0.05,
         confidence: float = 0.95, seed_col: str = SEED) -> pd.DataFrame:
    """Settings best-first by their mean `metric` over completed seeds (a validation metric; a test metric is
    refused). Every other setting is compared with the top one, paired by seed, Holm over those comparisons;
    `tied` marks the top and every setting the comparison does not find worse (not distinguishable, too few
    paired seeds, or, when seeds differ, better on the paired seeds). Accuracies are better higher, losses and
    gaps lower, unless told."""
    if reads_test_set(metric):
        raise ValueError(f"rank by a validation metric (val_acc, val_loss, val_gap), not {metric!r}: "
                         "choosing by the test set makes the test estimate optimistic")
    if higher_is_better is None:
        higher_is_better = "acc" in metric
    table = per_seed(df, metric, seed_col)
    if table.empty:
        return pd.DataFrame(columns=["setting", "label", "metric", "seeds", "mean", "sd", "n", "mean_diff",
                                     "ci_low", "ci_high", "p", "p_holm", "verdict", "tied"])
    means = table.mean().sort_values(ascending=not higher_is_better, kind="stable")
    top, others = means.index[0], list(means.index[1:])
    vs = compare(df, [(k, top) for k in others], metric, alpha, confidence, seed_col).set_index("setting")
    names = labels(df)
    worse = LOWER if higher_is_better else HIGHER
    rows = []
    for key in means.index:
        own = table[key].dropna()
        row = {"setting": key, "label": names[key], "metric": metric, "seeds": len(own),
               "mean": own.mean(), "sd": own.std(ddof=1) if len(own) > 1 else math.nan}
        if key == top:
            row.update(n=len(own), verdict="top", tied=True)
        else:
            r = vs.loc[key]
            row.update(n=r.n, mean_diff=r.mean_diff, ci_low=r.ci_low, ci_high=r.ci_high, p=r.p,
                       p_holm=r.p_holm, verdict=r.verdict, tied=r.verdict != worse)
        rows.append(row)
    out = pd.DataFrame(rows)
    out["higher_is_better"], out["confidence"], out["alpha"] = higher_is_better, confidence, alpha
    return out


# ---------------------------------------------------------------- sentences

def _text(metric: str) -> tuple[str, float, str]:
    return METRIC_TEXT.get(metric, (metric, 1.0, ""))


def _num(x: float, scale: float, signed: bool = True) -> str:
    """Points with 2 decimals (1/100 of a point is below one test image in 10,000); losses with 4 digits."""
    sign = "+" if signed else ""
    return f"{x * scale:{sign}.2f}" if scale == 100.0 else f"{x * scale:{sign}.4g}"


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3g}"


def _seed_count(ns: Iterable[int]) -> str:
    ns = sorted(set(int(n) for n in ns))
    return str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"


def comparison_sentence(row: Mapping[str, Any] | Any) -> str:
    """One row of compare()/compare_to_baseline() (a dict or a pandas row) as the sentence a report prints."""
    r = row if isinstance(row, Mapping) else dict(row)
    words, scale, unit = _text(r["metric"])
    head = f"{r['label']} vs {r['baseline_label']}"
    if r["verdict"] == TOO_FEW:
        return f"{head}: too few paired seeds ({int(r['n'])}) for a {words} interval."
    unit = f" {unit}" if unit else ""
    verdict_text = r["verdict"]
    if verdict_text == NOT_DISTINGUISHABLE and (r["ci_low"] > 0 or r["ci_high"] < 0):
        verdict_text += f" after correcting for {int(r['n_tests'])} comparisons"
    return (f"{head}: {words} {_num(r['mean_diff'], scale)}{unit} ({r['confidence'] * 100:g} % CI "
            f"[{_num(r['ci_low'], scale)}, {_num(r['ci_high'], scale)}], n={int(r['n'])} seeds, "
            f"Holm-adjusted {_p(r['p_holm'])}): {verdict_text}.")


def comparison_sentences(table: pd.DataFrame) -> list[str]:
    """comparison_sentence for every row, in table order."""
    return [comparison_sentence(r) for r in table.to_dict("records")]


def ranking_sentence(ranking: pd.DataFrame) -> str:
    """rank()'s table as one sentence: the single best setting, or the settings tied for best."""
    if ranking.empty:
        return "Best: no completed runs to rank."
    metric = ranking["metric"].iloc[0]
    words, scale, unit = _text(metric)
    top = ranking.iloc[0]
    value = f"{_num(top['mean'], scale, signed=False)}{' %' if unit == 'points' else ''}"
    if len(ranking) == 1:
        return f"Best by {words}: {top['label']} ({value}, n={int(top['seeds'])} seeds), the only setting."
    tied = ranking[ranking["tied"]]
    if len(tied) == 1:
        worst_p = ranking["p_holm"].iloc[1:].max()
        return (f"Best by {words}: {top['label']} ({value}, n={int(top['seeds'])} seeds); every other setting is "
                f"distinguishably worse (Holm-adjusted {_p(worst_p).replace('=', '<=', 1)}).")
    names = list(tied["label"])
    sep = "; " if any(", " in n for n in names) else ", "  # labels such as "p=0.5, p_in=0.2" need ";"
    listed = sep.join(names) if len(names) <= MAX_NAMED else (
        sep.join(names[:MAX_NAMED]) + f" and {len(names) - MAX_NAMED} more")
    seeds = _seed_count(tied["n"].iloc[1:])
    return (f"Best by {words}: tied between {listed} "
            f"(cannot be separated with {seeds} paired seed{'' if seeds == '1' else 's'}).")
