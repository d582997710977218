"""The state of each experiment's stream and lease, read from Redis in one round trip.

Shared by ``banditd status`` and the worker's metrics (read at scrape time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import redis

from app import keys
from app.cluster.client import queue_time, time_first


@dataclass(frozen=True)
class StreamState:
    """One experiment's stream as Redis sees it now.

    ``backlog`` counts the entries not yet learned and logged (the worker
    deletes an entry once it is); ``oldest_age_seconds`` is the age of the
    first of them, ``learned_age_seconds`` the age of the last entry learned
    from (the model's watermark), None when there is none.
    """

    experiment: str
    lease_holder: str | None
    backlog: int
    oldest_age_seconds: float | None
    learned_age_seconds: float | None
    dead_letters: int
    dead_lettered_ever: int


def _entry_ms(entry_id: bytes | str | None) -> int | None:
    if not entry_id:
        return None
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-")[0])


def read_streams(client: redis.Redis, experiments: Iterable[str]) -> list[StreamState]:
    """The state of each experiment's stream, in name order (one pipelined round trip)."""
    names = sorted(experiments)
    pipe = client.pipeline(transaction=False)
    queue_time(client, pipe)
    for name in names:
        pipe.get(keys.owner(name))
        pipe.xlen(keys.stream(name))
        pipe.xrange(keys.stream(name), count=1)
        pipe.get(keys.applied(name))
        pipe.xlen(keys.deadletters(name))
        pipe.get(keys.deadlettered(name))
    replies = time_first(client, pipe.execute())
    seconds, micros = replies[0]
    now_ms = seconds * 1000 + micros / 1000
    states = []
    for i, name in enumerate(names):
        holder, backlog, oldest, applied, dead, ever = replies[1 + 6 * i : 7 + 6 * i]
        oldest_ms = _entry_ms(oldest[0][0]) if oldest else None
        applied_ms = _entry_ms(applied)
        states.append(
            StreamState(
                experiment=name,
                lease_holder=holder.decode() if holder else None,
                backlog=int(backlog),
                oldest_age_seconds=None if oldest_ms is None else (now_ms - oldest_ms) / 1000,
                learned_age_seconds=None if applied_ms is None else (now_ms - applied_ms) / 1000,
                dead_letters=int(dead),
                dead_lettered_ever=int(ever or 0),
            )
        )
    return states
