"""The store query behind grid resume (the hash and the rules are sweep/config.py's `config_hash`): a FINISHED,
not pruned run of this sweep with this hash that recorded the objective is reused; a RUNNING one of a live
process is another copy of the grid training the point, and is waited for. The look and the start of the job's
own run happen under one lock of the sweep (`claim`), so two copies started together never train a point twice.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import Any, Iterator

from sweep import keys as K
from sweep.record.store import connect
from sweep.util import procid, signals
from sweep.util.dblock import db_lock, lockable

log = logging.getLogger("sweep")
CLAIM_POLL = 2.0  # seconds between looks at a point another copy of the grid is training


def _finished(client, exp_id: str, sweep_id: str, h: str, names: list[str]) -> Any | None:
    runs = client.search_runs(
        [exp_id],
        f"tags.{K.SWEEP_ID_TAG} = '{sweep_id}' and tags.{K.HASH_TAG} = '{h}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    for r in runs:
        tags, metrics = r.data.tags, r.data.metrics
        if tags.get(K.SWEEP_ROLE_TAG) == K.PARENT_ROLE or tags.get("pruned") == "true":
            continue
        values = [metrics.get(n) for n in names]
        if any(v is None or not math.isfinite(v) for v in values):
            continue
        shown = ", ".join(f"{n}={v:.6g}" for n, v in zip(names, values))
        log.info(
            "reused run %s (FINISHED in sweep %s, config_hash %s): %s; not training it again",
            r.info.run_id,
            sweep_id,
            h,
            shown,
        )
        return values[0] if len(values) == 1 else values
    return None


def _running_twin(client, exp_id: str, sweep_id: str, h: str) -> str | None:
    """A RUNNING run of this sweep and config whose process is alive: another copy of the grid is training it."""
    runs = client.search_runs(
        [exp_id],
        f"tags.{K.SWEEP_ID_TAG} = '{sweep_id}' and tags.{K.HASH_TAG} = '{h}' and attributes.status = 'RUNNING'",
        max_results=50,
    )
    return next(
        (
            r.info.run_id
            for r in runs
            if r.data.tags.get(K.SWEEP_ROLE_TAG) != K.PARENT_ROLE and not procid.gone(r.data.tags)
        ),
        None,
    )


@contextlib.contextmanager
def claim(tracking, config_hash: str, names: list[str]) -> Iterator[Any | None]:
    """Yields the objective of a FINISHED run of this point (reuse it), or None, and then the caller starts its
    MLflow run inside this block. The look and the start happen under one lock of the sweep, so a second copy
    sees the first one's RUNNING run and waits for it to end (then reuses it, or trains the point itself if that
    run did not finish) instead of training the same configuration and seed twice."""
    client, exp_id = connect(tracking)  # the job's own client: the store was set up once in this process
    said = False
    while True:
        with (
            db_lock(tracking.uri, f"claim:{tracking.experiment}/{tracking.sweep_id}")
            if lockable(tracking.uri)
            else contextlib.nullcontext()
        ):
            reused = _finished(client, exp_id, tracking.sweep_id, config_hash, names)
            twin = None if reused is not None else _running_twin(client, exp_id, tracking.sweep_id, config_hash)
            if twin is None:
                yield reused
                return
        if not said:
            log.info(
                "run %s of another process is training this point (config_hash %s): waiting for it",
                twin,
                config_hash,
            )
            said = True
        time.sleep(CLAIM_POLL)
        signals.check()  # a lost SIGTERM does not leave this copy waiting
