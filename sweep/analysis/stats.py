"""Replicates, paired comparisons, verdicts and design: the statistics behind every number and sentence a report
prints.

Vocabulary
- setting: the full effective configuration minus the replicate, with exact values (0.2996 and 0.3012 are two
  settings; so are two learning rates or two precisions). Keys that never change what is trained are left
  out; they are listed once, in NOT_SETTING.
- replicate: a completed run (status FINISHED and not pruned) of a setting, named by its `seed`, the replicate
  index. A replicate draws the training randomness (initial weights, batch order, dropout masks) and, as
  `data.resample` says, the training subset and the validation split; within one replicate every setting sees
  the same images, seed and batch order. Two completed runs of one setting and replicate count once (their mean).
- baseline: the setting with every dropout rate 0 and everything else equal.

Why paired: runs of one replicate share initial weights, batch order and data, so the per-replicate difference
"setting minus baseline" cancels most of the replicate-to-replicate noise that an unpaired interval counts twice.

Verdicts (sweep/protocol.py has the words): within one family (one metric's comparisons of one phase, m of them
tested) each comparison gets ONE printed interval, and the verdict is read from it, so the two never disagree:
- equivalence first: when the comparison's interval at the family's level alpha / m lies inside +/- the
  smallest effect of interest, the verdict is `equivalent` and that interval is printed. This is two one-sided
  tests at alpha / (2m) each (Bonferroni over the family: multiplicity-controlled, conservative); its adjusted p
  is `p_equiv` = min(1, 2m * p_tost). A difference too small to matter is called so even when it is not 0:
  that claim does not flip between "higher", "equivalent" and "inconclusive" with the draw of replicates (or
  the CPU's kernels) the way a significant-but-tiny difference does; the sentence says when it excludes 0;
- otherwise the interval is at Holm's step level: the k-th smallest p of m is tested at alpha / (m - k + 1)
  while every smaller p was significant; once one was not, the rest are at alpha / m. It excludes 0 exactly
  when the Holm-adjusted p is <= alpha: `higher` / `lower`;
- otherwise, or with fewer than MIN_REPLICATES pairs: `inconclusive`.

Design: the power of the paired t-test (noncentral t), the replicates a confirmatory phase needs for POWER at
the smallest effect of interest, and the minimum detectable effect of a design.

Pure pandas/numpy/scipy (no MLflow, no plotting): the notebook, `python -m sweep.report`, the
study sweeper and the parent-run summary all call this module and re-implement none of it.
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

from sweep import protocol as P

SEED = "seed"
SETTING = "setting"  # column added by add_setting_column: the exact key (JSON of the setting's params)
NO_PARAMS, NO_PARAMS_LABEL = "{}", "(no params: failed before logging its configuration)"
LABEL = "setting_label"  # column added by add_setting_column: short, names only what varies
MIN_SEEDS = P.MIN_REPLICATES  # fewer paired replicates: no interval, no test (the verdict is inconclusive)
MAX_NAMED = 5  # a sentence names at most this many tied settings, then "and N more"

# Keys (fnmatch patterns) that are not part of a setting: the seed, and what never changes what is trained.
NOT_SETTING = (
    "seed",  # the replicate axis itself
    "study.*",  # the verdict protocol (phase, smallest effects, alpha, power): how results are read
    "objective",  # what a search optimises; a completed, unpruned run trains the same whatever it is
    "tracking.*",  # where results are written
    "optuna.*",  # search plumbing: storage, study, trial number
    "hydra.*",  # output folders, launcher
    "data.root",
    "data.download",
    "data.verify",  # where the files are and whether they are checked
    "trainer.progress",  # a progress bar
    "trainer.threads",  # CPU threads: changes only the order of floating-point sums
    "trainer.cpu_matmul",  # oneDNN or BLAS for fp32 products on the CPU: the same, summed in another order
    "trainer.device",  # where it runs ('auto' names no device); trainer.precision, which does matter, stays
    "layer*_width",  # the widths as built: model.hidden_sizes, model.constant_capacity and the rates, all kept
)

# Dropout keys: the baseline of a setting differs from it only in these, all set to 0.
DROPOUT_KEYS = ("drop_prob", "input_drop_prob", "layer_drop_probs")
_LAYER_RATE = re.compile(r"layer(\d+)_drop_prob$")  # effective per-layer rates the job logs (1-based)
SHORT_NAMES = {"drop_prob": "p", "input_drop_prob": "p_in"}  # layerN_drop_prob -> pN

HIGHER, LOWER, EQUIVALENT, INCONCLUSIVE = P.HIGHER, P.LOWER, P.EQUIVALENT, P.INCONCLUSIVE
VERDICT_WORDS = P.VERDICTS

# metric -> (words, scale, unit) for sentences; accuracies are stored as fractions and printed in points
METRIC_TEXT = {
    "test_acc": ("test accuracy", 100.0, "points"),
    "val_acc": ("validation accuracy", 100.0, "points"),
    "train_acc": ("training accuracy", 100.0, "points"),
    "gap": ("gap (train - test)", 100.0, "points"),
    "val_gap": ("validation gap (train - validation)", 100.0, "points"),
    "test_loss": ("test loss", 1.0, ""),
    "best_epoch": ("best-validation epoch", 1.0, "epochs"),
    "at_best_val.test_acc": ("test accuracy at the best-validation epoch", 100.0, "points"),
    "at_best_val.gap": ("gap at the best-validation epoch", 100.0, "points"),
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
        return str(int(f)) if f.is_integer() and abs(f) < 2**53 else repr(f)
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


def add_setting_column(
    df: pd.DataFrame, param_cols: Iterable[str], ignore: Sequence[str] = NOT_SETTING
) -> pd.DataFrame:
    """A copy of `df` (one row per run) with SETTING (exact key from every param column not in `ignore`) and
    LABEL (e.g. "p=0.5, p_in=0.2": only the params that vary between the settings in `df`)."""
    cols = [c for c in param_cols if is_setting_key(c, ignore)]
    canon = df[cols].apply(lambda col: col.map(canonical)) if cols else pd.DataFrame(index=df.index)
    out = df.copy()
    out[SETTING] = [json.dumps(dict(zip(cols, row)), sort_keys=True) for row in canon.itertuples(index=False)]
    # a run that logged no params at all (its job failed before it could) is no setting: it is counted and named
    blank = (canon == "None").all(axis=1) if cols and len(canon) else pd.Series(False, index=df.index)
    out.loc[blank, SETTING] = NO_PARAMS
    settings = canon[~blank].drop_duplicates()
    label_cols = _label_columns(settings)
    if not label_cols:  # one setting: name its dropout rates
        label_cols = [c for c in ("drop_prob", "input_drop_prob") if c in cols]
    if label_cols:
        out[LABEL] = [
            ", ".join(f"{_short(c)}={v}" for c, v in zip(label_cols, row))
            for row in canon[label_cols].itertuples(index=False)
        ]
    else:
        out[LABEL] = "all runs"
    out.loc[blank, LABEL] = NO_PARAMS_LABEL
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
    out = {
        "n": n,
        "mean": float(x.mean()) if n else math.nan,
        "sd": float(x.std(ddof=1)) if n > 1 else math.nan,
        "ci_low": math.nan,
        "ci_high": math.nan,
    }
    if n >= MIN_SEEDS:
        half = stats.t.ppf(0.5 + confidence / 2, n - 1) * out["sd"] / math.sqrt(n)
        out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
    return out


def tost_p(diffs: Iterable[float], margin: float) -> float:
    """Two one-sided tests of |mean difference| < margin (paired t, n-1 df): the larger of the two one-sided
    p-values (H0: mean <= -margin, H0: mean >= +margin). NaN below MIN_SEEDS values or without a margin.
    Identical differences (sd 0) give 0 inside the margin, else 1."""
    d = np.asarray(list(diffs), dtype=float)
    if len(d) < MIN_SEEDS or margin is None or not math.isfinite(margin) or margin <= 0:
        return math.nan
    sd = d.std(ddof=1)
    if sd == 0:
        return 0.0 if abs(d.mean()) < margin else 1.0
    se, df = sd / math.sqrt(len(d)), len(d) - 1
    p_low = stats.t.sf((d.mean() + margin) / se, df)  # H0: mean <= -margin
    p_high = stats.t.cdf((d.mean() - margin) / se, df)  # H0: mean >= +margin
    return float(max(p_low, p_high))


SD_ROUNDING = 1e-12  # a spread this small (relative) is float rounding of identical differences, not a spread


def paired_test(diffs: Iterable[float], confidence: float = 0.95, margin: float | None = None) -> dict[str, float]:
    """mean_interval of per-replicate differences plus the paired t-test (one-sample t on the differences,
    two-sided, n-1 df), the effect size d_z = mean / sd, and with `margin` the TOST p (tost_p). Identical
    differences (sd 0) give p = 1 when they are 0, else p = 0."""
    d = np.asarray(list(diffs), dtype=float)
    out = {
        **mean_interval(d, confidence),
        "t": math.nan,
        "p": math.nan,
        "d_z": math.nan,
        "p_tost": tost_p(d, margin) if margin is not None else math.nan,
    }
    if out["n"] >= MIN_SEEDS:
        if out["sd"] <= SD_ROUNDING * max(1.0, abs(out["mean"])):  # identical up to float rounding (0.95 - 0.9)
            out["t"] = 0.0 if out["mean"] == 0 else math.copysign(math.inf, out["mean"])
            out["p"] = 1.0 if out["mean"] == 0 else 0.0
            out["d_z"] = out["t"]
        else:
            out["t"] = out["mean"] / (out["sd"] / math.sqrt(out["n"]))  # scipy's ttest_1samp, without its
            out["p"] = float(2 * stats.t.sf(abs(out["t"]), out["n"] - 1))  # warning on near-identical values
            out["d_z"] = out["mean"] / out["sd"]
    return out


def holm(pvalues: Iterable[float]) -> np.ndarray:
    """Holm-adjusted p-values: the k-th smallest of m becomes max over j <= k of min(1, (m - j + 1) p_(j)) (what
    statsmodels' multipletests(method="holm") gives, tested; written out because that call costs ~50 ms). NaN
    entries (untested comparisons) stay NaN and are not counted."""
    p = np.asarray(list(pvalues), dtype=float)
    out = np.full_like(p, math.nan)
    idx = np.flatnonzero(~np.isnan(p))
    if len(idx):
        order = idx[np.argsort(p[idx], kind="stable")]
        m = len(order)
        out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


def holm_levels(pvalues: Iterable[float], alpha: float = P.ALPHA) -> np.ndarray:
    """Each test's level in Holm's step-down procedure: the k-th smallest of m p-values is tested at
    alpha / (m - k + 1) while every smaller one was rejected; after the first that is not, the rest (and it) get
    alpha / m. NaN entries stay NaN and are not counted. An interval at 1 - level excludes 0 exactly when the
    Holm-adjusted p is <= alpha (sweep/analysis/stats.py's docstring says why)."""
    p = np.asarray(list(pvalues), dtype=float)
    out = np.full_like(p, math.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = len(idx)
    rejecting = True
    for k, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        step = alpha / (m - k)
        rejecting = rejecting and p[i] <= step
        out[i] = step if rejecting else alpha / m
    return out


def verdict(
    n: int,
    ci_low: float,
    ci_high: float,
    margin: float | None = None,
    family_low: float | None = None,
    family_high: float | None = None,
) -> str:
    """The rule (module docstring): fewer than MIN_SEEDS pairs -> inconclusive; the family-level interval
    (`family_low`, `family_high`, at alpha / m; the step interval when not given) inside +/- `margin` (the
    smallest effect of interest, same unit) -> equivalent; else the step-level interval (`ci_low`, `ci_high`)
    excluding 0 -> higher/lower (its side); else inconclusive."""
    if n < MIN_SEEDS or math.isnan(ci_low) or math.isnan(ci_high):
        return INCONCLUSIVE
    lo, hi = (ci_low, ci_high) if family_low is None else (family_low, family_high)
    if margin is not None and math.isfinite(margin) and -margin < lo and hi < margin:
        return EQUIVALENT
    if ci_low > 0:
        return HIGHER
    if ci_high < 0:
        return LOWER
    return INCONCLUSIVE


# ---------------------------------------------------------------- design: power, replicates, detectable effect


def power(effect: float, sd: float, n: int, level: float) -> float:
    """Power of the two-sided paired t-test at `level` with n pairs when the true mean difference is `effect`
    and the differences' sd is `sd`: P(|T| > t(1 - level/2, n-1)) with T noncentral t (n-1 df, effect/sd*sqrt(n))."""
    if n < 2 or not sd > 0:
        return math.nan if n < 2 else (1.0 if effect != 0 else level)
    df, nc = n - 1, abs(effect) / sd * math.sqrt(n)
    crit = stats.t.ppf(1 - level / 2, df)
    out = float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))
    if math.isfinite(out):
        return out
    # scipy's noncentral t returns NaN for some large nc at few df: the same probability by integrating over the
    # chi-square V of T = (Z + nc) / sqrt(V / df)
    from scipy.integrate import quad

    def given(v: float) -> float:
        c = crit * math.sqrt(v / df)
        return (stats.norm.sf(c - nc) + stats.norm.cdf(-c - nc)) * stats.chi2.pdf(v, df)

    return float(min(1.0, quad(given, 0, math.inf, limit=200)[0]))


def replicates_for(effect: float, sd: float, level: float, target: float = P.POWER, cap: int = 10_000) -> int | None:
    """The fewest pairs (at least MIN_SEEDS) that give `target` power at `effect`; None when more than `cap`
    would be needed."""
    if not sd > 0:
        return MIN_SEEDS
    for n in range(MIN_SEEDS, cap + 1):
        if power(effect, sd, n, level) >= target:
            return n
    return None


def detectable_effect(sd: float, n: int, level: float, target: float = P.POWER) -> float:
    """The minimum detectable effect of a design: the true mean difference the two-sided paired t-test at `level`
    with n pairs finds with `target` power (NaN below MIN_SEEDS pairs or without a spread)."""
    if n < MIN_SEEDS or not sd > 0 or not math.isfinite(sd):
        return math.nan
    from scipy.optimize import brentq

    hi = sd
    while power(hi, sd, n, level) < target:
        hi *= 2
    return float(brentq(lambda e: power(e, sd, n, level) - target, 0.0, hi, xtol=sd * 1e-9))


# ---------------------------------------------------------------- paired comparisons


def margin_of(metric: str, smallest_effect: Mapping[str, float] | None = None) -> float | None:
    """The smallest effect of interest of `metric` in its stored unit (a fraction for accuracies), from
    `smallest_effect` (in the unit tables print; protocol.SMALLEST_EFFECT when None); None when not set."""
    table = P.SMALLEST_EFFECT if smallest_effect is None else smallest_effect
    value = table.get(metric)
    if value is None:
        return None
    return float(value) / _text(metric)[1]


COMPARE_COLUMNS = [
    "setting",
    "label",
    "baseline",
    "baseline_label",
    "metric",
    "seeds",
    "mean_setting",
    "mean_baseline",
    "n",
    "mean_diff",
    "sd_diff",
    "d_z",
    "t",
    "p",
    "p_tost",
    "p_holm",
    "p_equiv",
    "level",
    "confidence",
    "ci_low",
    "ci_high",
    "margin",
    "mde",
    "power",
    "n_tests",
    "alpha",
    "verdict",
]


def compare(
    df: pd.DataFrame,
    pairs: Iterable[tuple[str, str]],
    metric: str,
    alpha: float = P.ALPHA,
    smallest_effect: Mapping[str, float] | None = None,
    seed_col: str = SEED,
    target_power: float = P.POWER,
) -> pd.DataFrame:
    """One row per (setting, reference) pair, one family: per-replicate differences setting minus reference on
    `metric`, paired by replicate (only replicates completed on both sides): mean/sd/n, d_z, paired t p, TOST p
    against the metric's smallest effect of interest (`margin`, stored unit), Holm-adjusted p, the row's Holm
    step level and the interval at that level (`confidence` = 1 - level), the Bonferroni-adjusted TOST p
    (`p_equiv`), the design's minimum detectable effect at `target_power` and level alpha / m (`mde`), and the
    verdict read from the interval (module docstring)."""
    table = per_seed(df, metric, seed_col)
    names = labels(df)
    margin = margin_of(metric, smallest_effect)
    rows = []
    for setting, ref in pairs:
        both = table[[setting, ref]].dropna() if {setting, ref} <= set(table.columns) else pd.DataFrame()
        diffs = (both[setting] - both[ref]) if len(both) else pd.Series(dtype=float)
        res = paired_test(diffs, margin=margin if margin is not None else math.nan)
        rows.append(
            {
                "setting": setting,
                "label": names.get(setting, setting),
                "baseline": ref,
                "baseline_label": names.get(ref, ref),
                "metric": metric,
                "seeds": tuple(both.index),
                "mean_setting": both[setting].mean() if len(both) else math.nan,
                "mean_baseline": both[ref].mean() if len(both) else math.nan,
                "n": res["n"],
                "mean_diff": res["mean"],
                "sd_diff": res["sd"],
                "d_z": res["d_z"],
                "t": res["t"],
                "p": res["p"],
                "p_tost": res["p_tost"],
            }
        )
    out = pd.DataFrame(rows, columns=COMPARE_COLUMNS[:15])
    m = int(out["p"].notna().sum())
    out["p_holm"] = holm(out["p"])
    out["p_equiv"] = [min(1.0, 2 * m * p) if not math.isnan(p) else math.nan for p in out["p_tost"]]
    steps = holm_levels(out["p"], alpha)

    def interval(r, level: float) -> tuple[float, float]:
        if r.n < MIN_SEEDS or math.isnan(level):
            return math.nan, math.nan
        half = 0.0 if r.sd_diff == 0 else stats.t.ppf(1 - level / 2, r.n - 1) * r.sd_diff / math.sqrt(r.n)
        return r.mean_diff - half, r.mean_diff + half

    levels, lows, highs, verdicts = [], [], [], []
    for r, step in zip(out.itertuples(), steps):
        family = alpha / m if m else math.nan
        (lo, hi), (flo, fhi) = interval(r, step), interval(r, family)
        v = verdict(r.n, lo, hi, margin, flo, fhi)
        if v == EQUIVALENT:  # the interval that decided it is the one printed
            step, lo, hi = family, flo, fhi
        levels.append(step)
        lows.append(lo)
        highs.append(hi)
        verdicts.append(v)
    out["level"], out["ci_low"], out["ci_high"] = levels, lows, highs
    out["confidence"] = 1 - out["level"]
    out["margin"] = margin if margin is not None else math.nan
    out["mde"] = [detectable_effect(r.sd_diff, r.n, alpha / max(m, 1), target_power) for r in out.itertuples()]
    out["power"] = target_power
    out["n_tests"], out["alpha"] = m, alpha
    out["verdict"] = verdicts
    return out[COMPARE_COLUMNS]


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
        if not isinstance(entries, (list, tuple)):  # "None": a run that never logged its rates
            entries = []
        rates += [base] + [base if e is None else str(e) for e in entries]
    else:
        raise ValueError(
            "no dropout keys (drop_prob, input_drop_prob, layer_drop_probs, layerN_drop_prob) "
            "among the setting's params; pass the baseline explicitly"
        )
    return all(_is_zero(r) for r in rates)


def find_baselines(df: pd.DataFrame) -> dict[str, str]:
    """setting -> its baseline: the dropout-free setting equal to it in every non-dropout key. Settings with
    no such baseline (and baselines themselves) are left out. When several dropout-free spellings share the
    other keys, the one with the most completed seeds (then the smallest key) is the baseline."""
    seeds = completed(df).groupby(SETTING)[SEED].nunique() if SEED in df else pd.Series(dtype=int)
    groups: dict[str, list[str]] = {}
    for key in pd.unique(df[SETTING]):
        params = setting_params(key)
        rest = json.dumps(
            {k: v for k, v in params.items() if k not in DROPOUT_KEYS and not _LAYER_RATE.match(k)}, sort_keys=True
        )
        groups.setdefault(rest, []).append(key)
    out = {}
    for keys in groups.values():
        zero = sorted((k for k in keys if _knowably_dropout_free(k)), key=lambda k: (-seeds.get(k, 0), k))
        if zero:
            out.update({k: zero[0] for k in keys if k not in zero})
    return out


def _knowably_dropout_free(key: str) -> bool:
    """dropout_free, or False for a setting that logged no dropout keys or unreadable ones (a job that failed
    before its run could log them)."""
    try:
        return dropout_free(setting_params(key))
    except (ValueError, TypeError):
        return False


def resolve_setting(df: pd.DataFrame, name: str) -> str:
    """A setting key from its key or its label."""
    if name in set(df[SETTING]):
        return name
    hits = set(df.loc[df[LABEL] == name, SETTING])
    if len(hits) != 1:
        raise ValueError(f"baseline {name!r} is not a setting key or label; labels: {sorted(set(df[LABEL]))}")
    return hits.pop()


def compare_to_baseline(
    df: pd.DataFrame,
    metrics: Sequence[str] = ("test_acc", "gap"),
    baseline: str | None = None,
    alpha: float = P.ALPHA,
    smallest_effect: Mapping[str, float] | None = None,
    seed_col: str = SEED,
    target_power: float = P.POWER,
) -> pd.DataFrame:
    """Every setting against its baseline (find_baselines, or `baseline` given as a key or label), one block
    of rows per metric; each metric's comparisons are one family (Holm, compare())."""
    if baseline is None:
        pairs = list(find_baselines(df).items())
    else:
        ref = resolve_setting(df, baseline)
        pairs = [(k, ref) for k in pd.unique(df[SETTING]) if k != ref]
    order = {k: i for i, k in enumerate(settings_order(df))}
    pairs.sort(key=lambda kv: order[kv[0]])
    return pd.concat(
        [compare(df, pairs, m, alpha, smallest_effect, seed_col, target_power) for m in metrics], ignore_index=True
    )


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


def summarize(
    df: pd.DataFrame,
    metrics: Sequence[str] = ("val_acc", "test_acc", "gap"),
    confidence: float = 0.95,
    keep: Sequence[str] = (),
    seed_col: str = SEED,
) -> pd.DataFrame:
    """One row per setting (every setting seen, ordered by its params): label, completed seeds, pruned runs
    and unfinished ones (FAILED, KILLED, RUNNING) counted separately, and per metric the unpaired mean, sd, n and
    t-interval over seeds (no interval below MIN_SEEDS). `keep` carries param columns (e.g. drop_prob) for plotting."""
    done = completed(df)
    pruned = df[is_pruned(df)]
    unfinished = df[(df["status"] != "FINISHED") & ~is_pruned(df)]
    tables = {m: per_seed(df, m, seed_col) for m in metrics}
    names = labels(df)
    first = df.drop_duplicates(SETTING).set_index(SETTING)
    rows = []
    for key in settings_order(df):
        row = {
            "setting": key,
            "label": names[key],
            **{c: first.at[key, c] for c in keep},
            "seeds": int(done.loc[done[SETTING] == key, seed_col].map(canonical).nunique()),
            "pruned": int((pruned[SETTING] == key).sum()),
            "unfinished": int((unfinished[SETTING] == key).sum()),
        }
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


def rank(
    df: pd.DataFrame,
    metric: str = "val_acc",
    higher_is_better: bool | None = None,
    alpha: float = P.ALPHA,
    smallest_effect: Mapping[str, float] | None = None,
    seed_col: str = SEED,
) -> pd.DataFrame:
    """Settings best-first by their mean `metric` over completed replicates (a validation metric; a test metric
    is refused). Only settings with at least MIN_SEEDS replicates are ranked (`ranked`, `rank` 1, 2, ...); the
    others come last, unranked. Every other ranked setting is compared with the top one, paired by replicate,
    as one family (compare()). `tied` marks the top and the settings just below it whose interval against the
    top does not lie on the worse side of 0 (an equivalent one that does is not tied either), stopping at the
    first that does: a tied setting is never below one that is not, so never below a baseline that is not
    tied itself. Accuracies are better higher, losses
    and gaps lower, unless told."""
    if reads_test_set(metric):
        raise ValueError(
            f"rank by a validation metric (val_acc, val_loss, val_gap), not {metric!r}: "
            "choosing by the test set makes the test estimate optimistic"
        )
    if higher_is_better is None:
        higher_is_better = "acc" in metric
    columns = [
        "setting",
        "label",
        "metric",
        "seeds",
        "mean",
        "sd",
        "ranked",
        "rank",
        "n",
        "mean_diff",
        "ci_low",
        "ci_high",
        "confidence",
        "p",
        "p_holm",
        "verdict",
        "tied",
    ]
    table = per_seed(df, metric, seed_col)
    if table.empty:
        return pd.DataFrame(columns=columns)
    counts = table.notna().sum()
    means = table.mean().sort_values(ascending=not higher_is_better, kind="stable")
    ranked = [k for k in means.index if counts[k] >= MIN_SEEDS]
    unranked = [k for k in means.index if counts[k] < MIN_SEEDS]
    names = labels(df)
    rows = []
    if ranked:
        top, others = ranked[0], ranked[1:]
        vs = compare(df, [(k, top) for k in others], metric, alpha, smallest_effect, seed_col).set_index("setting")
        worse = LOWER if higher_is_better else HIGHER
        still_tied = True
        for place, key in enumerate(ranked, start=1):
            own = table[key].dropna()
            row = {
                "setting": key,
                "label": names[key],
                "metric": metric,
                "seeds": len(own),
                "mean": own.mean(),
                "sd": own.std(ddof=1) if len(own) > 1 else math.nan,
                "ranked": True,
                "rank": place,
            }
            if key == top:
                row.update(n=len(own), verdict="top", tied=True)
            else:
                r = vs.loc[key]
                below = r.ci_high < 0 if higher_is_better else r.ci_low > 0  # its interval on the worse side of 0
                still_tied = still_tied and r.verdict != worse and not below
                row.update(
                    n=r.n,
                    mean_diff=r.mean_diff,
                    ci_low=r.ci_low,
                    ci_high=r.ci_high,
                    confidence=r.confidence,
                    p=r.p,
                    p_holm=r.p_holm,
                    verdict=r.verdict,
                    tied=still_tied,
                )
            rows.append(row)
    for key in unranked:
        own = table[key].dropna()
        rows.append(
            {
                "setting": key,
                "label": names[key],
                "metric": metric,
                "seeds": len(own),
                "mean": own.mean(),
                "sd": own.std(ddof=1) if len(own) > 1 else math.nan,
                "ranked": False,
                "rank": math.nan,
                "verdict": "not ranked",
                "tied": False,
            }
        )
    out = pd.DataFrame(rows, columns=columns)
    out["higher_is_better"], out["alpha"] = higher_is_better, alpha
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


def confidence_text(confidence: float) -> str:
    """0.99 -> '99 %', 0.9875 -> '98.75 %'."""
    return f"{confidence * 100:.4g} %"


def margin_text(margin: float, metric: str) -> str:
    """The smallest effect of interest as the tables print it: '+/-0.30 points'."""
    _, scale, unit = _text(metric)
    return f"±{_num(margin, scale, signed=False)}{' ' + unit if unit else ''}"


def verdict_reason(r: Mapping[str, Any]) -> str:
    """Why a row got its verdict, in words that match its interval."""
    margin = r.get("margin")
    has_margin = margin is not None and not (isinstance(margin, float) and math.isnan(margin))
    metric = r["metric"]
    if r["verdict"] in (HIGHER, LOWER):
        inside = has_margin and -margin < r["ci_low"] and r["ci_high"] < margin
        return "the interval excludes 0" + (
            f" (it lies inside {margin_text(margin, metric)} at its step level, but "
            "not at the family's level an equivalence claim needs)"
            if inside
            else ""
        )
    if r["verdict"] == EQUIVALENT:
        side = "" if r["ci_low"] <= 0 <= r["ci_high"] else "; it also excludes 0: a real difference, but a smaller one"
        return f"the interval lies inside {margin_text(margin, metric)}, the smallest effect of interest{side}"
    if int(r["n"]) < MIN_SEEDS:
        return f"{int(r['n'])} paired replicate{'s' if int(r['n']) != 1 else ''}; a test needs {MIN_SEEDS}"
    if not has_margin:
        return "the interval holds 0, and no smallest effect of interest is set for this metric"
    return f"the interval holds 0 and reaches beyond {margin_text(margin, metric)}"


def comparison_sentence(row: Mapping[str, Any] | Any) -> str:
    """One row of compare()/compare_to_baseline() (a dict or a pandas row) as the sentence a report prints."""
    r = row if isinstance(row, Mapping) else dict(row)
    words, scale, unit = _text(r["metric"])
    head = f"{r['label']} vs {r['baseline_label']}"
    if int(r["n"]) < MIN_SEEDS:
        return f"{head}: {words}: {r['verdict']} ({verdict_reason(r)})."
    unit = f" {unit}" if unit else ""
    dz = f", d_z={r['d_z']:+.2f}" if "d_z" in r and math.isfinite(r["d_z"]) else ""
    mde = r.get("mde")
    detect = (
        f", detects {_num(mde, scale, signed=False)}{unit} with {r.get('power', P.POWER):.0%} power"
        if mde is not None and math.isfinite(mde)
        else ""
    )
    return (
        f"{head}: {words} {_num(r['mean_diff'], scale)}{unit} ({confidence_text(r['confidence'])} CI "
        f"[{_num(r['ci_low'], scale)}, {_num(r['ci_high'], scale)}] at "
        f"{'the family' if r['verdict'] == EQUIVALENT else 'its Holm step'} level, "
        f"n={int(r['n'])} replicates{dz}{detect}): {r['verdict']}, {verdict_reason(r)}."
    )


def comparison_sentences(table: pd.DataFrame) -> list[str]:
    """comparison_sentence for every row, in table order."""
    return [comparison_sentence(r) for r in table.to_dict("records")]


def ranking_sentence(ranking: pd.DataFrame) -> str:
    """rank()'s table as one sentence: the single best setting, or the settings tied for best (each with its
    verdict against the top), and what keeps the rest out."""
    if ranking.empty:
        return "Best: no completed runs to rank."
    metric = ranking["metric"].iloc[0]
    words, scale, unit = _text(metric)
    ranked = ranking[ranking["ranked"].astype(bool)]
    unranked = ranking[~ranking["ranked"].astype(bool)]
    if ranked.empty:
        most = int(ranking["seeds"].max())
        return (
            f"Best: not chosen; no setting has {MIN_SEEDS} replicates yet (the most is {most}), and fewer "
            f"cannot be ranked: run each setting with at least {MIN_SEEDS} seeds (seed=1,2,3)."
        )
    top = ranked.iloc[0]
    value = f"{_num(top['mean'], scale, signed=False)}{' %' if unit == 'points' else ''}"
    left_out = (
        f" Not ranked ({len(unranked)}, fewer than {MIN_SEEDS} replicates): {_listing(list(unranked['label']))}."
        if len(unranked)
        else ""
    )
    if len(ranked) == 1:
        return (
            f"Best by {words}: {top['label']} ({value}, n={int(top['seeds'])} replicates), the only ranked setting."
            + left_out
        )
    tied = ranked[ranked["tied"].astype(bool)]
    nxt = ranked[~ranked["tied"].astype(bool)]
    after = ""
    if len(nxt):
        r = nxt.iloc[0]
        after = (
            f"; the next by mean, {r['label']}, is {r['verdict']} than the best "
            f"({confidence_text(r['confidence'])} CI [{_num(r['ci_low'], scale)}, {_num(r['ci_high'], scale)}])"
        )
    if len(tied) == 1:
        return f"Best by {words}: {top['label']} ({value}, n={int(top['seeds'])} replicates){after}." + left_out
    names = [f"{r['label']} ({'best' if r['verdict'] == 'top' else r['verdict']})" for _, r in tied.iterrows()]
    seeds = _seed_count(tied["n"].iloc[1:])
    return (
        f"Best by {words}: tied between {_listing(names)}, which {seeds} paired replicates cannot separate from "
        f"the best ({value}){after}." + left_out
    )


def _listing(names: list[str]) -> str:
    sep = "; " if any(", " in n for n in names) else ", "  # labels such as "p=0.5, p_in=0.2" need ";"
    return (
        sep.join(names)
        if len(names) <= MAX_NAMED
        else (sep.join(names[:MAX_NAMED]) + f" and {len(names) - MAX_NAMED} more")
    )
