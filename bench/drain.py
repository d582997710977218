"""The worker's sustained throughput from a backlog.

With no worker running, decisions and rewards are recorded into the stream
through the API's own Lua scripts (:mod:`bench.seed`); then ``banditd worker``
starts and the stream is watched until it is empty (the worker deletes what it
has acknowledged, and it acknowledges a batch only once its Postgres rows and
its learning are saved). Afterwards the rows in Postgres and the arm versions
in Redis are counted, so a fast drain that lost work would show.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import redis
import sqlalchemy
from sqlalchemy.engine import Engine

from app import keys
from app.config import Experiment
from app.model_store import ModelStore
from bench import seed
from bench.stack import UpdateWorker


def fill(
    client: redis.Redis, exp: Experiment, decisions: int, rewards: int, rng: np.random.Generator
) -> dict:
    """Record ``decisions`` decisions and ``rewards`` rewards for the first of them; timings."""
    arms = [exp.arms[i % len(exp.arms)] for i in range(decisions)]
    start = time.perf_counter()
    ids = seed.record_decisions(client, exp, arms, rng)
    accepted = seed.record_rewards(client, exp, list(zip(ids, arms))[:rewards], rng)
    seconds = time.perf_counter() - start
    events = client.xlen(keys.stream(exp.name))
    return {
        "decisions": decisions,
        "rewards": accepted,
        "events": events,
        "enqueue_seconds": round(seconds, 2),
        "enqueue_events_per_s": round(events / seconds),
    }


def run_drain(
    client: redis.Redis,
    engine: Engine,
    exp: Experiment,
    env: dict[str, str],
    log_dir: Path,
    *,
    timeout: float = 300.0,
) -> dict:
    """Start the worker on the backlog in ``exp``'s stream and time it until the stream is empty."""
    stream = keys.stream(exp.name)
    before = sum(ModelStore(client).versions(exp.name, exp.model_id).values())
    total = client.xlen(stream)
    curve = []
    worker = UpdateWorker(env, log_dir)
    worker.start()
    try:
        first = None
        while True:
            left = client.xlen(stream)
            now = time.monotonic() - worker.started_at
            curve.append((round(now, 3), left))
            if first is None and left < total:
                first = (now, left)
            if left == 0 or now > timeout or not worker.alive():
                break
            time.sleep(0.02)
    finally:
        worker.stop()
    if left:
        raise RuntimeError(f"the worker left {left} of {total} events after {now:.0f}s")
    after = sum(ModelStore(client).versions(exp.name, exp.model_id).values())
    with engine.connect() as conn:
        rows = {
            t: conn.execute(sqlalchemy.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("decisions", "impressions", "rewards")
        }
    steady = first[1] / (now - first[0]) if now > first[0] else None
    return {
        "events": total,
        "seconds_from_start": round(now, 2),
        "events_per_s_from_start": round(total / now),
        "seconds_from_first_ack": round(now - first[0], 2),
        "events_per_s": round(steady) if steady else None,
        "rows": rows,
        "rewards_learned": after - before,
        "curve": curve[:: max(1, len(curve) // 50)],
    }
