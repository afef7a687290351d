"""The reader: runs -> one DataFrame -> settings and replicates -> paired statistics -> tables, sentences and
figures. analysis.ipynb, `python -m sweep.report` (which executes that notebook), the study sweeper and the
parent run's end-of-sweep summary all call these functions (`from sweep import analysis as A`).

    frame.py    runs -> one frame: a row per run (every param it logged, its final metrics, status, tags), the
                setting key, the numeric rates, the study phases, the replicates and machines behind it
    tables.py   counts, the per-setting table with its paired comparisons against p = 0, "best", verdicts,
                the agreement of two phases or two runs of a study
    text.py     the console table, what it reads as, the fit view, a study's phases, the end-of-sweep text
    figures.py  accuracy and the gap against the dropout rate, the overview, MC-dropout curves, reliability
    summary.py  what the parent run gets at the end (published by sweep/parent.py through sweep/record/)
    stats.py    the statistics: settings and replicates, paired intervals, Holm, TOST, ranking, power

- A *setting* is a run's configuration minus the replicate index `seed` (stats.SETTING); a run that logged
  no params is no setting.
- Results (tables, "best", figures) use completed runs only: FINISHED and not pruned. Pruned, failed and
  killed runs are counted separately ("12 finished, 3 pruned, 1 failed") and named with their error.
- A two-phase study's runs carry `study.phase`; its phases are analysed apart (phase_frames), and its headline
  tables, figures and "best" are the confirmatory phase's (headline_frame).
- "Best" is the top of stats.rank by validation accuracy among settings with at least stats.MIN_SEEDS
  replicates, with the settings it cannot be told apart from (tied); never by a test metric. Each setting is
  compared with its p = 0 baseline, paired by replicate, on test accuracy and gap, and gets one of the four
  verdicts (sweep/protocol.py) under the protocol its runs logged (`study.*`: Protocol, protocol_of).
- Figures put the mean effective hidden-layer rate on x and draw one series per value of everything else that
  varies; error bars are the unpaired 95 % t-intervals of each setting's mean over its replicates, drawn from
  three replicates on (bars_text says which a title may promise).

Reads MLflow, never writes it (sweep/record/ is the one writer); imports pandas, MLflow's client and matplotlib
(lazily), never torch, the config or the recording code: reading results needs no training code.
"""

from sweep.analysis import stats
from sweep.analysis.figures import (
    accuracy_figure,
    axis_label,
    bars_text,
    gap_figure,
    mc_curves,
    mc_figure,
    overview_figure,
    reliability_bins,
    reliability_figure,
)
from sweep.analysis.frame import (
    HIDDEN,
    HIDDEN_KEYS,
    INPUT,
    INPUT_KEYS,
    LAYER_PARAM,
    METRIC_COLORS,
    NUMERIC,
    PHASE,
    SERIES_MAX,
    TAGS,
    Protocol,
    children_frame,
    display_labels,
    failures_text,
    frame_from_runs,
    frame_from_search,
    headline_frame,
    layer_columns,
    machines_text,
    phase_frames,
    protocol_of,
    replicates_text,
)
from sweep.analysis.summary import (
    Summary,
    summarize,
)
from sweep.analysis.tables import (
    CONTRADICTED,
    DECIDED,
    NO_BASELINE,
    ONE_INCONCLUSIVE,
    PAIRED_FIELDS,
    SAME,
    agreement,
    agreement_text,
    best,
    counts_text,
    crosscheck,
    headline,
    paired_comparisons,
    run_counts,
    setting_table,
    settings_text,
    verdict_table,
)
from sweep.analysis.text import (
    FIT_VIEW,
    best_epoch_console,
    best_epoch_table,
    console_table,
    diff_text,
    end_of_sweep_text,
    epochs_text,
    rank_text,
    reading_text,
    study_text,
)
from sweep.keys import AT_BEST, MC_CURVE, PLOT, RELIABILITY_ARTIFACT, RUNS_CSV, SETTINGS_CSV

__all__ = [
    "stats",
    "AT_BEST",
    "MC_CURVE",
    "PLOT",
    "RELIABILITY_ARTIFACT",
    "RUNS_CSV",
    "SETTINGS_CSV",
    "TAGS",
    "PHASE",
    "HIDDEN_KEYS",
    "INPUT_KEYS",
    "HIDDEN",
    "INPUT",
    "SERIES_MAX",
    "METRIC_COLORS",
    "LAYER_PARAM",
    "NUMERIC",
    "frame_from_runs",
    "frame_from_search",
    "layer_columns",
    "Protocol",
    "protocol_of",
    "phase_frames",
    "replicates_text",
    "machines_text",
    "failures_text",
    "display_labels",
    "headline_frame",
    "children_frame",
    "run_counts",
    "counts_text",
    "settings_text",
    "setting_table",
    "PAIRED_FIELDS",
    "paired_comparisons",
    "best",
    "NO_BASELINE",
    "headline",
    "verdict_table",
    "SAME",
    "DECIDED",
    "CONTRADICTED",
    "agreement",
    "crosscheck",
    "ONE_INCONCLUSIVE",
    "agreement_text",
    "diff_text",
    "rank_text",
    "console_table",
    "reading_text",
    "FIT_VIEW",
    "best_epoch_table",
    "epochs_text",
    "best_epoch_console",
    "study_text",
    "end_of_sweep_text",
    "bars_text",
    "axis_label",
    "accuracy_figure",
    "gap_figure",
    "overview_figure",
    "mc_curves",
    "mc_figure",
    "reliability_bins",
    "reliability_figure",
    "Summary",
    "summarize",
]
