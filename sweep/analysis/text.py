"""Tables and sentences for the console and the report: the settings table, what it reads as, the fit view
(train accuracy, best epoch), a study's phases, and what the console shows when a sweep ends."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from sweep import protocol as P
from sweep.analysis import stats as S
from sweep.analysis.frame import (
    Protocol,
    display_labels,
    failures_text,
    machines_text,
    phase_frames,
    protocol_of,
    pts,
    replicates_text,
)
from sweep.analysis.tables import (
    add_paired,
    agreement,
    agreement_text,
    counts_text,
    headline,
    run_counts,
    setting_table,
    settings_text,
    verdict_table,
)
from sweep.keys import AT_BEST, PLOT, RUNS_CSV, SETTINGS_CSV
from sweep.util.paths import PROJECT_ROOT
from sweep.util.redact import redact


def diff_text(row: pd.Series, short: str) -> str:
    """A setting_table row's paired difference (short: 'd_test' or 'd_gap') as '+0.45 [+0.36,+0.55] higher',
    'inconclusive (2 replicates)', or '-' for a baseline or a setting without one."""
    verdict = row.get(f"{short}_verdict")
    if verdict is None or (not isinstance(verdict, str) and pd.isna(verdict)):
        return "-"  # a baseline itself, or no baseline in the sweep
    n = int(row[f"{short}_n"])
    if n < S.MIN_SEEDS:
        return f"{verdict} ({n} replicate{'s' if n != 1 else ''})"
    lo, hi = pts(row[f"{short}_lo"], True), pts(row[f"{short}_hi"], True)
    return f"{pts(row[f'{short}_mean'], True)} [{lo},{hi}] {verdict}"


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
            pts(r.get("val_acc_mean")),
            pts(r.get("test_acc_mean")),
            pts(r.get("gap_mean")),
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
    add_paired(table, paired, FIT_VIEW)
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
            pts(r["train_acc_mean"]),
            diff_text(r, "d_train"),
            f"{r['best_epoch_mean']:.0f}",
            epochs_text(r),
            pts(r[f"{AT_BEST}test_acc_mean"]),
            diff_text(r, "d_best_test"),
            pts(r[f"{AT_BEST}gap_mean"]),
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
    return (
        uri.startswith("sqlite:///")
        and Path(uri.removeprefix("sqlite:///")).resolve() == (PROJECT_ROOT / "runs" / "mlflow.db").resolve()
    )
