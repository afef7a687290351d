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
run and returns its recorded objective without loading data or starting an MLflow run. The look and the
start of the job's own run happen under one lock of the sweep (`claim`): a second copy of the same grid
started at the same time finds the first one's RUNNING run and waits for it, instead of training the point
twice. The shared
parent (sweep/parent.py finds it by sweep id) keeps the old run as its child, so the sweep's summary
covers the reused points and the newly trained ones alike. The Optuna sweeper resumes through its
study instead (its trials must report to Optuna), so jobs it launches never reuse.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import time
from typing import Any, Iterator

from sweep import signals
from sweep.config import Config

log = logging.getLogger("sweep")

HASH_TAG = "config_hash"
IGNORED = (
    "tracking",
    "optuna",
    "trainer.progress",
    "data.download",
    "data.verify",
    "trainer.cpu_matmul",
    "study",
)  # how results are read (and which phase a replicate belongs to) does not change what is trained
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


def _resumes(c: Config, multirun: bool) -> bool:
    return bool(multirun and c.tracking.enabled and c.tracking.sweep_id) and not c.optuna.storage


def _finished(client, exp_id: str, c: Config, names: list[str]) -> Any | None:
    h = config_hash(c)
    runs = client.search_runs(
        [exp_id],
        f"tags.sweep_id = '{c.tracking.sweep_id}' and tags.{HASH_TAG} = '{h}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    for r in runs:
        tags, metrics = r.data.tags, r.data.metrics
        if tags.get("sweep_role") == "parent" or tags.get("pruned") == "true":
            continue
        values = [metrics.get(n) for n in names]
        if any(v is None or not math.isfinite(v) for v in values):
            continue
        shown = ", ".join(f"{n}={v:.6g}" for n, v in zip(names, values))
        log.info(
            "reused run %s (FINISHED in sweep %s, config_hash %s): %s; not training it again",
            r.info.run_id,
            c.tracking.sweep_id,
            h,
            shown,
        )
        return values[0] if len(values) == 1 else values
    return None


def _running_twin(client, exp_id: str, c: Config) -> str | None:
    """A RUNNING run of this sweep and config whose process is alive: another copy of the grid is training it."""
    from sweep import procid

    runs = client.search_runs(
        [exp_id],
        f"tags.sweep_id = '{c.tracking.sweep_id}' and tags.{HASH_TAG} = "
        f"'{config_hash(c)}' and attributes.status = 'RUNNING'",
        max_results=50,
    )
    return next(
        (r.info.run_id for r in runs if r.data.tags.get("sweep_role") != "parent" and not procid.gone(r.data.tags)),
        None,
    )


CLAIM_POLL = 2.0  # seconds between looks at a point another copy of the grid is training


@contextlib.contextmanager
def claim(c: Config, names: list[str], multirun: bool) -> Iterator[Any | None]:
    """Grid resume, safe against two copies of the same grid started together: yields the objective of a
    FINISHED run of this point (reuse it), or None, and then the caller starts its MLflow run inside this block.
    The look and the start happen under one lock of the sweep (sweep/dblock.py), so a second copy sees the
    first one's RUNNING run and waits for it to end (then reuses it, or trains the point itself if that run
    did not finish) instead of training the same configuration and seed twice. Outside a resumable multirun
    it yields None at once."""
    if not _resumes(c, multirun):
        yield None
        return
    from sweep import track
    from sweep.dblock import db_lock, lockable

    client, exp_id = track.connect(c.tracking)
    said = False
    while True:
        with (
            db_lock(c.tracking.uri, f"claim:{c.tracking.experiment}/{c.tracking.sweep_id}")
            if lockable(c.tracking.uri)
            else contextlib.nullcontext()
        ):
            reused = _finished(client, exp_id, c, names)
            twin = None if reused is not None else _running_twin(client, exp_id, c)
            if twin is None:
                yield reused
                return
        if not said:
            log.info(
                "run %s of another process is training this point (config_hash %s): waiting for it",
                twin,
                config_hash(c),
            )
            said = True
        time.sleep(CLAIM_POLL)
        signals.check()  # a lost SIGTERM does not leave this copy waiting
