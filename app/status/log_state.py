"""What the Postgres log says about each experiment: its last snapshot and recent traffic."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

import sqlalchemy
from sqlalchemy.engine import Engine

SNAPSHOTS = """
SELECT experiment, max(taken_at) AS taken_at FROM model_snapshots
WHERE experiment = ANY(:names) GROUP BY experiment
"""
# The log's view of the last minute: what the worker has logged (it trails the API by its lag).
RECENT = """
SELECT e.name AS experiment,
       (SELECT count(*) FROM decisions d
         WHERE d.experiment = e.name AND d.decided_at > now() - interval '1 minute') AS decisions,
       (SELECT count(*) FROM rewards r
         WHERE r.experiment = e.name AND r.kind = 'explicit'
           AND r.received_at > now() - interval '1 minute') AS rewards
FROM unnest(CAST(:names AS text[])) AS e(name)
"""


@dataclass(frozen=True)
class LogState:
    """One experiment in the log: latest snapshot, decisions and explicit rewards of the last
    minute (None when not read)."""

    experiment: str
    last_snapshot_at: datetime | None
    decisions_last_minute: int | None = None
    rewards_last_minute: int | None = None


def last_snapshots(engine: Engine, experiments: Iterable[str]) -> dict[str, datetime]:
    """When each experiment's latest model snapshot was taken (absent: never)."""
    with engine.connect() as conn:
        rows = conn.execute(sqlalchemy.text(SNAPSHOTS), {"names": sorted(experiments)}).all()
    return {r.experiment: r.taken_at for r in rows}


def read_log(engine: Engine, experiments: Iterable[str]) -> dict[str, LogState]:
    """Each experiment's latest snapshot and its logged traffic over the last minute."""
    names = sorted(experiments)
    snapshots = last_snapshots(engine, names)
    with engine.connect() as conn:
        rows = conn.execute(sqlalchemy.text(RECENT), {"names": names}).all()
    return {
        r.experiment: LogState(r.experiment, snapshots.get(r.experiment), r.decisions, r.rewards)
        for r in rows
    }
