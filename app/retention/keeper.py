"""Retention: drop the log's old day partitions without breaking a rebuild.

Each experiment keeps its log ``retention_days`` (its config key, else
``BANDITD_RETENTION_DAYS``; neither: forever). Its horizon is now minus that;
a day is past it when the whole day is.

A rebuild replays an experiment's rewards after a model snapshot, each with
its decision, so before the log of a day goes, the experiment's *base* is
chosen: the newest snapshot at or before its horizon (or, if every snapshot
is newer, its oldest one). A day may go for an experiment only if none of its
learned rewards (explicit or default) in that day comes after the base: the
base then holds everything the day taught the model, and the rewards after
the base, with their decisions (a reward shares its decision's day), stay.
The base is recorded in ``log_retention``; snapshot pruning keeps it, and
``banditd rebuild --no-snapshots`` replays from it.

A day partition is dropped, oldest first, when every experiment with
decisions in it lets the day go. An experiment whose own retention is
shorter than the others' has its rows of such a day deleted instead: the
same rule, at the price of row deletes (and the vacuum after them) instead
of a dropped table.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import sqlalchemy
import sqlalchemy.exc
from sqlalchemy.engine import Connection, Engine

from app.config import Config
from app.periodic import PeriodicTask
from app.retention.partitions import LOG_TABLES, create_ahead, day_partitions, drop_day

log = logging.getLogger(__name__)

DAYS_AHEAD = 7  # day partitions kept ready ahead of today
CHECK_SECONDS = 3600.0  # how often a worker applies retention
_LOCK = 0x62616E6469747232  # pg advisory lock key: "banditr2"
LOCK_TIMEOUT = "2s"  # how long a day's drop may wait for the worker's writes to finish
NO_BASE = (-1, -1)  # a position before every stream entry: replay from the start

EXPERIMENTS = "SELECT DISTINCT experiment FROM config_versions"
BASE = """
SELECT stream_ms, stream_seq FROM (
    (SELECT 0 AS choice, stream_ms, stream_seq FROM model_snapshots
     WHERE experiment = :e AND stream_ms <= :horizon_ms
     ORDER BY stream_ms DESC, stream_seq DESC LIMIT 1)
    UNION ALL
    (SELECT 1, stream_ms, stream_seq FROM model_snapshots
     WHERE experiment = :e ORDER BY stream_ms, stream_seq LIMIT 1)
) found ORDER BY choice LIMIT 1
"""
RECORD = """
INSERT INTO log_retention (experiment, base_ms, base_seq, dropped_before, applied_at)
VALUES (:e, :ms, :seq, :before, now())
ON CONFLICT (experiment) DO UPDATE SET base_ms = excluded.base_ms, base_seq = excluded.base_seq,
    dropped_before = excluded.dropped_before, applied_at = excluded.applied_at
"""
REPLAY_BASE = """
SELECT base_ms, base_seq, dropped_before FROM log_retention WHERE experiment = :e
"""
PRUNE_BEFORE_BASE = """
DELETE FROM model_snapshots
WHERE experiment = :e AND (stream_ms, stream_seq) < (:ms, :seq)
"""


@dataclass
class Retained:
    """What one application of retention did."""

    created: list[dt.date] = field(default_factory=list)  # day partitions made ahead
    dropped: list[dt.date] = field(default_factory=list)  # day partitions dropped
    deleted: dict[str, int] = field(default_factory=dict)  # experiment -> decisions deleted
    deleted_through: dict[str, dt.date] = field(default_factory=dict)  # experiment -> last day
    bases: dict[str, tuple[int, int]] = field(default_factory=dict)  # experiment -> base
    held: dict[str, str] = field(default_factory=dict)  # experiment -> why it holds a day back
    locked: bool = True  # False: another process was applying retention, nothing was done

    def describe(self) -> str:
        """One line per fact, for the terminal and the worker's log."""
        if not self.locked:
            return "another process is applying retention; nothing done"
        lines = [
            f"created day partitions: {_days(self.created)}",
            f"dropped day partitions: {_days(self.dropped)}",
        ]
        lines += [f"deleted {n} decision(s) of {e}" for e, n in sorted(self.deleted.items())]
        lines += [
            f"{e}: replays from snapshot {ms}-{seq}" for e, (ms, seq) in sorted(self.bases.items())
        ]
        lines += [f"{e}: {why}" for e, why in sorted(self.held.items())]
        return "\n".join(lines)


def _days(days: list[dt.date]) -> str:
    if not days:
        return "none"
    return f"{days[0]}" if len(days) == 1 else f"{days[0]} to {days[-1]} ({len(days)})"


def replay_base(engine: Engine, experiment: str) -> tuple[tuple[int, int], dt.date] | None:
    """The snapshot a whole-log replay starts from since retention, and the first day kept.

    None if retention has not dropped any of ``experiment``'s learned rewards.
    """
    with engine.connect() as conn:
        found = conn.execute(sqlalchemy.text(REPLAY_BASE), {"e": experiment}).first()
    return None if found is None else ((found.base_ms, found.base_seq), found.dropped_before)


def retention_days(config: Config, experiment: str, default: float | None) -> float | None:
    """How many days ``experiment``'s log is kept: its config's, else ``default``; None: forever."""
    configured = config.get(experiment)
    if configured is not None and configured.retention_days is not None:
        return configured.retention_days
    return default


def apply_retention(
    engine: Engine, config: Config, default_days: float | None, now: dt.datetime
) -> Retained:
    """Make the day partitions ahead, then drop or delete what is past retention (see module).

    Each day is its own transaction, which first locks the three log tables in
    the order the worker writes them (so neither waits for the other in a
    cycle), waiting at most ``LOCK_TIMEOUT`` for them; a day it could not lock
    is left for the next run.
    """
    result = Retained()
    with engine.connect() as conn:
        with conn.begin():
            locked = conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": _LOCK})
            if not locked.scalar():
                return Retained(locked=False)
        try:
            _apply(conn, config, default_days, now, result)
        finally:
            with conn.begin():
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK})
    return result


def _apply(
    conn: Connection,
    config: Config,
    default_days: float | None,
    now: dt.datetime,
    result: Retained,
) -> None:
    try:
        with conn.begin():
            # a new partition locks its parent: never queue the worker's writes long behind it
            conn.execute(sqlalchemy.text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            result.created = create_ahead(conn, now.date(), DAYS_AHEAD)
    except sqlalchemy.exc.OperationalError as exc:  # lock_timeout: busy, try next run
        result.held["*"] = f"log tables busy ({exc.orig}); next run"
        return
    with conn.begin():
        experiments = set(conn.execute(sqlalchemy.text(EXPERIMENTS)).scalars())
        experiments |= set(config.experiments)
        horizons: dict[str, dt.datetime] = {}
        for experiment in sorted(experiments):
            days = retention_days(config, experiment, default_days)
            if days is not None:
                horizons[experiment] = now - dt.timedelta(days=days)
        bases = {e: _base(conn, e, h) for e, h in horizons.items()}
        latest = max((h.date() for h in horizons.values()), default=dt.date.min)
        # a day can go once a horizon has passed the whole of it: only those are looked at
        days = [d for d in day_partitions(conn, "decisions") if d + dt.timedelta(days=1) <= latest]
    dropping = True
    for day in days:
        try:
            dropping = _retain_day(conn, day, experiments, horizons, bases, dropping, result)
        except sqlalchemy.exc.OperationalError as exc:  # lock_timeout: busy, try next run
            result.held.setdefault("*", f"{day}: log tables busy ({exc.orig}); next run")
            break
    touched = experiments if result.dropped else set(result.deleted)
    with conn.begin():
        for experiment in sorted(touched & set(bases)):
            base = bases[experiment]
            if base == NO_BASE:
                continue
            result.bases[experiment] = base
            conn.execute(
                sqlalchemy.text(RECORD),
                {
                    "e": experiment,
                    "ms": base[0],
                    "seq": base[1],
                    "before": _kept_since(result, experiment),
                },
            )
            conn.execute(
                sqlalchemy.text(PRUNE_BEFORE_BASE),
                {"e": experiment, "ms": base[0], "seq": base[1]},
            )


def _retain_day(
    conn: Connection,
    day: dt.date,
    experiments: set[str],
    horizons: dict[str, dt.datetime],
    bases: dict[str, tuple[int, int]],
    dropping: bool,
    result: Retained,
) -> bool:
    """Drop ``day`` if every experiment in it lets it go, else delete the rows of those that do.

    Returns whether it was dropped. One transaction that first takes the log
    tables in the order the worker writes them (so neither waits for the other
    in a cycle), waiting at most ``LOCK_TIMEOUT``; the worker's writes wait
    for it meanwhile.
    """
    with conn.begin():
        conn.execute(sqlalchemy.text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        conn.execute(sqlalchemy.text(f"LOCK TABLE {', '.join(reversed(LOG_TABLES))}"))
        present = _present(conn, day, experiments)
        if dropping and all(_may_go(conn, day, e, horizons, bases, result) for e in present):
            drop_day(conn, day)
            result.dropped.append(day)
            return True
        # the log stays contiguous: from the first day kept on, an experiment's rows only
        for experiment in present:
            if _may_go(conn, day, experiment, horizons, bases, result):
                gone = _delete_rows(conn, day, experiment)
                result.deleted[experiment] = result.deleted.get(experiment, 0) + gone
                result.deleted_through[experiment] = day
    return False


def _base(conn: Connection, experiment: str, horizon: dt.datetime) -> tuple[int, int]:
    """The snapshot the experiment's replay will start from once its old log is gone."""
    found = conn.execute(
        sqlalchemy.text(BASE),
        {"e": experiment, "horizon_ms": int(horizon.timestamp() * 1000)},
    ).first()
    return (found.stream_ms, found.stream_seq) if found else NO_BASE


def _present(conn: Connection, day: dt.date, experiments: set[str]) -> list[str]:
    """The experiments with decisions in ``day``'s partition (an index probe each)."""
    table = f"decisions_{day:%Y%m%d}"
    return [
        e
        for e in sorted(experiments)
        if conn.execute(
            sqlalchemy.text(f"SELECT EXISTS (SELECT 1 FROM {table} WHERE experiment = :e)"),
            {"e": e},
        ).scalar()
    ]


def _may_go(
    conn: Connection,
    day: dt.date,
    experiment: str,
    horizons: dict[str, dt.datetime],
    bases: dict[str, tuple[int, int]],
    result: Retained,
) -> bool:
    """Whether ``experiment``'s rows of ``day`` are past its retention and its base holds them."""
    horizon = horizons.get(experiment)
    if horizon is None:
        result.held.setdefault(experiment, f"kept forever (no retention): holds {day}")
        return False
    if day + dt.timedelta(days=1) > horizon.date():
        return False
    base = bases[experiment]
    after_base = conn.execute(
        sqlalchemy.text(
            f"SELECT EXISTS (SELECT 1 FROM rewards_{day:%Y%m%d} WHERE experiment = :e "
            "AND kind IN ('explicit', 'default') AND (stream_ms, stream_seq) > (:ms, :seq))"
        ),
        {"e": experiment, "ms": base[0], "seq": base[1]},
    ).scalar()
    if after_base:
        result.held.setdefault(
            experiment,
            f"holds {day}: it has rewards learned after the snapshot a rebuild would start "
            f"from ({'none' if base == NO_BASE else '%d-%d' % base})",
        )
        return False
    return True


def _delete_rows(conn: Connection, day: dt.date, experiment: str) -> int:
    """Delete ``experiment``'s rows of ``day``; returns how many decisions went."""
    deleted = 0
    for table in LOG_TABLES:  # referencing rows first
        gone = conn.execute(
            sqlalchemy.text(f"DELETE FROM {table}_{day:%Y%m%d} WHERE experiment = :e"),
            {"e": experiment},
        ).rowcount
        if table == "decisions":
            deleted = gone
    return deleted


def _kept_since(result: Retained, experiment: str) -> dt.date:
    """The first day after every day dropped, or deleted for ``experiment``, in this run."""
    last = max(result.dropped[-1:] + [result.deleted_through.get(experiment, dt.date.min)])
    return last + dt.timedelta(days=1)


class RetentionKeeper:
    """Applies retention every ``every_seconds`` on a thread of its own, from the worker.

    The first :meth:`tick` applies it (partitions ahead after a restart);
    an advisory lock keeps two workers from doing it at once, and a failure
    is logged and tried again at the next due time.
    """

    def __init__(
        self,
        engine: Engine,
        config: Callable[[], Config],
        default_days: float | None,
        every_seconds: float = CHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.config = config
        self.default_days = default_days
        self.wall_clock = wall_clock
        self._task = PeriodicTask(self._apply, every_seconds, clock=clock, thread_name="retention")

    def tick(self) -> None:
        """Start applying retention if it is due and not running."""
        self._task.tick()

    def _apply(self) -> Retained | None:
        now = dt.datetime.fromtimestamp(self.wall_clock(), dt.timezone.utc)
        try:
            result = apply_retention(self.engine, self.config(), self.default_days, now)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            log.warning("retention failed, will retry: %s", exc)
            return None
        if result.dropped or result.deleted or result.created:
            log.info("retention: %s", result.describe().replace("\n", "; "))
        return result

    def wait(self) -> Retained | None:
        """The outcome of the run in progress or last run (None if none or failed)."""
        return self._task.wait()

    def close(self) -> None:
        """Stop the thread after the run in progress."""
        self._task.close()
