"""Grids resume: a rerun with the same `tracking.sweep_id` reuses every point that already FINISHED.

Every run is tagged `config_hash`, a hash of its effective config: the typed config with the keys
that do not change what is trained left out (`tracking.*`, the Optuna plumbing `optuna.*`, the
progress bar, how data files are fetched: `data.download`, `data.verify`, which library sums the fp32
products on the CPU: `trainer.cpu_matmul`, so that runs from before that key existed are found again, and
the verdict protocol `study.*`, the study phase included; the output folders live under `hydra.*`, which a
job's config does not hold). A key added later (`data.resample`) is left out at the value that trains what
runs from before it trained. The seed is part of it.

A job of a multirun given a `tracking.sweep_id` first looks for a FINISHED, not pruned run of that
sweep with the same hash that recorded the objective; if there is one, it logs one line naming that
run and returns its recorded objective without loading data or starting an MLflow run. The shared
parent (sweep/parent.py finds it by sweep id) keeps the old run as its child, so the sweep's summary
covers the reused points and the newly trained ones alike. The Optuna sweeper resumes through its
study instead (its trials must report to Optuna), so jobs it launches never reuse.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from typing import Any

from sweep.config import Config

log = logging.getLogger("sweep")

HASH_TAG = "config_hash"
IGNORED = ("tracking", "optuna", "trainer.progress", "data.download", "data.verify", "trainer.cpu_matmul",
           "study")  # how results are read (and which phase a replicate belongs to) does not change what is trained
LEGACY = {"data.resample": "none"}  # keys added later, left out at the value that trains what runs before them did


def config_hash(c: Config) -> str:
    """A stable hash of what a run trains (same config, same hash; any key above left out)."""
    d = dataclasses.asdict(c)
    for key in (*IGNORED, *LEGACY):
        *path, last = key.split(".")
        node = d
        for p in path:
            node = node.get(p, {})
        if key not in LEGACY or node.get(last) == LEGACY[key]:
            node.pop(last, None)
    text = json.dumps(d, sort_keys=True, default=str, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def finished_objective(c: Config, names: list[str], multirun: bool) -> Any | None:
    """The objective recorded by a FINISHED run of this sweep with this config, or None (train it)."""
    if not (multirun and c.tracking.enabled and c.tracking.sweep_id) or c.optuna.storage:
        return None
    from sweep import track

    client, exp_id = track.connect(c.tracking)
    h = config_hash(c)
    runs = client.search_runs([exp_id], f"tags.sweep_id = '{c.tracking.sweep_id}' and tags.{HASH_TAG} = '{h}' "
                              "and attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"],
                              max_results=50)
    for r in runs:
        tags, metrics = r.data.tags, r.data.metrics
        if tags.get("sweep_role") == "parent" or tags.get("pruned") == "true":
            continue
        values = [metrics.get(n) for n in names]
        if any(v is None or not math.isfinite(v) for v in values):
            continue
        shown = ", ".join(f"{n}={v:.6g}" for n, v in zip(names, values))
        log.info("reused run %s (FINISHED in sweep %s, config_hash %s): %s; not training it again",
                 r.info.run_id, c.tracking.sweep_id, h, shown)
        return values[0] if len(values) == 1 else values
    return None
