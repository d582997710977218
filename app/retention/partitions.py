"""The day partitions of the log tables: which day a row belongs to, create ahead, drop.

Every row of ``decisions``, ``impressions`` and ``rewards`` carries
``log_day``: the UTC day of the time a decision id embeds
(``app.choosing.new_decision_id``: ``EXPERIMENT:`` + 12 hex digits of
milliseconds + 16 random hex digits). It is a function of the decision id
alone, so the unique keys, which must hold the partition column, still
collapse a repeated row (the key only gains a column the id decides), and a
reward lands in the partition of its impression and decision, where its
foreign keys point. An id that embeds no time (not made by /choose) gets day
0, 1970-01-01, and lands in the ``_default`` partition, never dropped.

Partition ``decisions_20261204`` holds ``log_day`` 2026-12-04, and so on;
``{table}_default`` holds what no day partition covers. The foreign keys
join the partitions of one day (:data:`FOREIGN_KEYS`; migration 0005 says
why). The SQL function ``decision_log_day(text)`` (migration 0005) is the
same function as :func:`log_day`.
"""

from __future__ import annotations

import datetime as dt
import logging
import re

import psycopg2.errors
import sqlalchemy
import sqlalchemy.exc
from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)

# Referencing before referenced: rewards -> impressions -> decisions (deferred foreign keys).
LOG_TABLES = ("rewards", "impressions", "decisions")
# Between the partitions of one day (as migration 0005 made them): table -> (name, key, parent)
FOREIGN_KEYS = {
    "impressions": ("impressions_decision_fk", "decision_id, log_day", "decisions"),
    "rewards": ("rewards_impression_fk", "decision_id, arm, log_day", "impressions"),
}
DAY_MS = 86_400_000
PG_EPOCH_DAY = 10_957  # 2000-01-01, where Postgres counts dates from, in days since 1970
_TIMED_ID = re.compile(r":([0-9a-f]{12})[0-9a-f]{16}\Z")
_DAY_PARTITION = re.compile(r"_(\d{8})\Z")

CHILDREN = """
SELECT c.relname FROM pg_inherits h
JOIN pg_class c ON c.oid = h.inhrelid
JOIN pg_class p ON p.oid = h.inhparent
WHERE p.relname = :parent AND p.relnamespace = 'public'::regnamespace
"""


def log_day(decision_id: str) -> int:
    """The day (since 1970-01-01, UTC) that ``decision_id`` embeds; 0 if it embeds none."""
    match = _TIMED_ID.search(decision_id)
    return int(match.group(1), 16) // DAY_MS if match else 0


def partition_name(table: str, day: dt.date) -> str:
    """The name of ``table``'s partition for ``day``."""
    return f"{table}_{day:%Y%m%d}"


def day_partitions(conn: Connection, table: str) -> list[dt.date]:
    """The days that ``table`` has a partition for, oldest first (not the default one)."""
    names = conn.execute(sqlalchemy.text(CHILDREN), {"parent": table}).scalars()
    days = []
    for name in names:
        match = _DAY_PARTITION.search(name)
        if match and name == f"{table}_{match.group(1)}":
            days.append(dt.datetime.strptime(match.group(1), "%Y%m%d").date())
    return sorted(days)


def create_day(conn: Connection, day: dt.date) -> bool:
    """Create the partitions of every log table for ``day`` (if missing); False if refused.

    Postgres refuses when the default partition already holds rows of that
    day (a decision id from a clock far ahead): those rows stay where they
    are, and the day gets no partition (logged). A lock timeout is raised.
    """
    try:
        with conn.begin_nested():
            for table in reversed(LOG_TABLES):  # the referenced tables first
                conn.execute(
                    sqlalchemy.text(
                        f"CREATE TABLE IF NOT EXISTS {partition_name(table, day)} "
                        f"PARTITION OF {table} FOR VALUES FROM ('{day}') "
                        f"TO ('{day + dt.timedelta(days=1)}')"
                    )
                )
            for table, (name, key, parent) in FOREIGN_KEYS.items():
                conn.execute(
                    sqlalchemy.text(
                        f"ALTER TABLE {partition_name(table, day)} ADD CONSTRAINT {name} "
                        f"FOREIGN KEY ({key}) REFERENCES {partition_name(parent, day)} ({key}) "
                        "DEFERRABLE INITIALLY DEFERRED"
                    )
                )
    except sqlalchemy.exc.DBAPIError as exc:
        if isinstance(exc.orig, psycopg2.errors.LockNotAvailable):
            raise  # busy (lock_timeout): the caller tries again later
        log.warning("no log partitions for %s: %s", day, exc.orig)
        return False
    return True


def create_ahead(conn: Connection, today: dt.date, days: int) -> list[dt.date]:
    """Make sure every log table has a partition for ``today`` and ``days`` days after it.

    Returns the days for which a partition was missing and is now there.
    """
    have = set(day_partitions(conn, "rewards"))
    made = []
    for offset in range(days + 1):
        day = today + dt.timedelta(days=offset)
        if day not in have and create_day(conn, day):
            made.append(day)
    return made


def drop_day(conn: Connection, day: dt.date) -> None:
    """Drop the partitions of every log table for ``day``: its rows are gone.

    The referencing partitions go first, with their foreign keys.
    """
    names = ", ".join(partition_name(table, day) for table in LOG_TABLES)
    conn.execute(sqlalchemy.text(f"DROP TABLE IF EXISTS {names}"))
