"""Whether every experiment's stream is being learned from: a live lease holder, little lag."""

from __future__ import annotations

from typing import Iterable

import redis

from app import keys
from app.cluster.client import queue_time, time_first


def stream_problems(
    client: redis.Redis, experiments: Iterable[str], max_lag_seconds: float
) -> list[str]:
    """What is wrong with the experiments' streams, one phrase each; empty when all is well.

    A stream is wrong when no live worker holds its lease, or when its oldest
    entry not yet learned and logged is older than ``max_lag_seconds``.
    """
    names = sorted(experiments)
    pipe = client.pipeline(transaction=False)
    queue_time(client, pipe)
    for name in names:
        pipe.exists(keys.owner(name))
        pipe.xrange(keys.stream(name), count=1)
    seconds, micros = (replies := time_first(client, pipe.execute()))[0]
    now_ms = seconds * 1000 + micros // 1000
    problems = []
    for i, name in enumerate(names):
        held, oldest = replies[1 + 2 * i], replies[2 + 2 * i]
        if not held:
            problems.append(f"{name}: no live worker holds its lease")
        if oldest:
            age = (now_ms - int(oldest[0][0].split(b"-")[0])) / 1000
            if age > max_lag_seconds:
                problems.append(f"{name}: its oldest unlearned entry is {age:.0f} s old")
    return problems
