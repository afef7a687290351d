"""What a sweep's parent run gets at the end, computed here and published by the parent callback through the
store's one writer (sweep/parent.py -> sweep/record/summary.py): the runs' CSV, the settings' CSV, the overview
plot, the counts (`children` tag), the settings and the best setting by validation accuracy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sweep.analysis.figures import overview_figure
from sweep.analysis.frame import headline_frame
from sweep.analysis.tables import best, counts_text, run_counts, setting_table, settings_text
from sweep.keys import PLOT, RUNS_CSV, SETTINGS_CSV


@dataclass
class Summary:
    runs: pd.DataFrame  # every child run (a study: both phases)
    shown: pd.DataFrame  # the runs its tables, figure and "best" rest on (a study: its headline phase)
    table: pd.DataFrame  # one row per setting of `shown`
    tags: dict[str, str]
    metrics: dict[str, float]

    def files(self) -> dict[str, Callable[[Path], None]]:
        """Results-file name -> a function that writes it to the path it is given."""
        return {RUNS_CSV: self._runs_csv, SETTINGS_CSV: self._settings_csv, PLOT: self._plot}

    def _runs_csv(self, path: Path) -> None:
        self.runs.to_csv(path, index=False)

    def _settings_csv(self, path: Path) -> None:
        self.table.to_csv(path, index=False)

    def _plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")  # a sweep draws without a display
        import matplotlib.pyplot as plt

        fig = overview_figure(self.shown, self.table)
        fig.savefig(path, dpi=120)
        plt.close(fig)


def summarize(df: pd.DataFrame) -> Summary:
    """The summary of the child runs `df` (children_frame): the counts from every run; the settings and the best
    setting from the headline runs."""
    shown = headline_frame(df)
    c = run_counts(df)
    others = c["total"] - c["finished"]
    tags = {
        "children": f"{c['finished']} finished / {c['total']}" if not others else f"{counts_text(c)} / {c['total']}",
        "settings": settings_text(shown),
    }
    metrics: dict[str, float] = {}
    top = best(shown)
    if top is not None:
        tags["best_setting"] = top["label"]
        tags["best_setting_tied_with"] = ", ".join(top["tied_with"]) or "none"
        for name, key in (
            ("best_setting_val_acc", "val_acc"),
            ("best_setting_test_acc", "test_acc"),
            ("best_setting_gap", "gap"),
            ("best_setting_seeds", "seeds"),
        ):
            if pd.notna(top[key]):
                metrics[name] = float(top[key])
    return Summary(df, shown, setting_table(shown), tags, metrics)
