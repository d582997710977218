"""One export: an experiment's log tables for a range of UTC days, from one snapshot.

The three tables are read in one ``REPEATABLE READ`` transaction, so an
export never has an impression whose decision it lacks because the worker
wrote between two reads. Rows go into a staging directory (``.export-*``
inside the output directory, which readers skip); only when every table is
written are the days' partitions swapped in, one rename each. An export that
fails leaves the output as it was. A lock file (``.export.lock``) keeps two
exports into one directory from interleaving their swaps.
"""

from __future__ import annotations

import fcntl
import resource
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time as clock_time, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

from sqlalchemy.engine import Engine

from app.export.columns import quote, table_columns
from app.export.parquet import DayFiles, Parser, swap
from app.export.postgres import json_lines

# Each table and the column whose UTC day partitions it: a decision and its
# impressions by when it was made, a reward by when it arrived, so a past day
# is complete once it is over and the worker has caught up (a reward can come
# days after its decision: partitioned by the decision, old days would change).
TABLES = {"decisions": "decided_at", "impressions": "decided_at", "rewards": "received_at"}
CHUNK_BYTES = 4 << 20
ROW_GROUP_ROWS = 122_880  # DuckDB's own row group size: its unit of parallel scanning
STAGE_PREFIX = ".export-"
LOCK = ".export.lock"

KNOWN = """
SELECT EXISTS (SELECT 1 FROM config_versions WHERE experiment = %(e)s)
    OR EXISTS (SELECT 1 FROM decisions WHERE experiment = %(e)s)
"""

Progress = Callable[[str, int, int, bool], None]  # table, rows, bytes read, table done


class ExportError(Exception):
    """The export cannot run as asked (exit 2: bad arguments, unknown experiment)."""


class ExportBusy(Exception):
    """Another export into the same directory is running."""


@dataclass
class TableSummary:
    """What one table's export wrote."""

    rows: int = 0
    read_bytes: int = 0
    parquet_bytes: int = 0
    max_batch_rows: int = 0
    max_held_rows: int = 0
    days: dict[str, int] = field(default_factory=dict)


@dataclass
class Summary:
    """What an export wrote: rows per table and day, bytes, partitions removed, cost."""

    experiment: str
    since: str
    until: str
    out: str
    tables: dict[str, TableSummary] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    peak_rss_mb: float = 0.0


def _midnight(day: date) -> datetime:
    return datetime.combine(day, clock_time.min, timezone.utc)


def _select(cursor, table: str, key: str, experiment: str, since: date, until: date) -> tuple:
    columns = table_columns(cursor, table)
    if not columns:
        raise ExportError(f"no table {table!r} in the database (run banditd migrate)")
    selected = ", ".join(f"{c.select} AS {quote(c.name)}" for c in columns)
    query = cursor.mogrify(
        f"SELECT {selected} FROM {quote(table)} "
        f"WHERE experiment = %s AND {quote(key)} >= %s AND {quote(key)} < %s "
        f"ORDER BY {quote(key)}",
        (experiment, _midnight(since), _midnight(until)),
    ).decode()
    return columns, query


@contextmanager
def _staging(out: Path) -> Iterator[Path]:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExportBusy(f"another export into {out} is running") from None
        for stale in out.glob(STAGE_PREFIX + "*"):  # left by an export that died
            shutil.rmtree(stale, ignore_errors=True)
        stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=out))
        try:
            yield stage
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def _export_table(
    connection,
    table: str,
    query: str,
    files: DayFiles,
    parser: Parser,
    chunk_bytes: int,
    progress: Progress | None,
) -> TableSummary:
    summary = TableSummary()
    if progress:
        progress(table, 0, 0, False)
    try:
        for chunk in json_lines(connection, query, chunk_bytes=chunk_bytes):
            batch = parser.parse(chunk)
            files.write(batch)
            summary.rows += batch.num_rows
            summary.read_bytes += len(chunk)
            if progress:
                progress(table, summary.rows, summary.read_bytes, False)
    finally:
        files.close()
    summary.max_batch_rows = files.max_batch_rows
    summary.max_held_rows = files.max_held_rows
    if progress:
        progress(table, summary.rows, summary.read_bytes, True)
    return summary


def export(
    engine: Engine,
    experiment: str,
    since: date,
    until: date,
    out: Path,
    *,
    chunk_bytes: int = CHUNK_BYTES,
    row_group_rows: int = ROW_GROUP_ROWS,
    progress: Progress | None = None,
) -> Summary:
    """Export ``experiment``'s decisions, impressions and rewards of the days ``[since, until)``.

    Parameters
    ----------
    engine : Engine
        The banditd database.
    experiment : str
        An experiment with rows in the log (else :class:`ExportError`).
    since, until : date
        The first UTC day exported, and the day after the last one.
    out : Path
        The output directory: ``out/table=NAME/date=YYYY-MM-DD/part-0.parquet``.
        Each day of the range is replaced, or removed if it now has no rows.
    chunk_bytes : int
        Bytes of Postgres output (JSON lines) parsed at a time; with the
        chunks read ahead and ``row_group_rows`` it bounds the memory used.
    row_group_rows : int
        Rows per Parquet row group (a day's last one may have fewer); rows
        wait in memory until there are this many.
    progress : callable, optional
        Called after each chunk and at the end of each table.

    Returns
    -------
    Summary
        Rows per table and day, bytes, removed partitions, seconds, peak RSS.
    """
    if until <= since:
        raise ExportError(f"empty range: --until {until} is not after --since {since}")
    started = time.monotonic()
    summary = Summary(experiment, since.isoformat(), until.isoformat(), str(out))
    days = [since + timedelta(days=n) for n in range((until - since).days)]
    pooled = engine.raw_connection()
    connection = pooled.driver_connection
    try:
        connection.rollback()  # the pool's ping may have opened a transaction
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cursor.execute("SET LOCAL TimeZone = 'UTC'")
            cursor.execute(KNOWN, {"e": experiment})
            if not cursor.fetchone()[0]:
                raise ExportError(f"no experiment {experiment!r} in the log")
            queries = {
                table: _select(cursor, table, key, experiment, since, until)
                for table, key in TABLES.items()
            }
        with _staging(out) as stage:
            for table, (columns, query) in queries.items():
                parser = Parser(columns)
                files = DayFiles(stage, table, TABLES[table], parser.schema, row_group_rows)
                summary.tables[table] = _export_table(
                    connection, table, query, files, parser, chunk_bytes, progress
                )
                summary.tables[table].days = {
                    day.isoformat(): n for day, n in sorted(files.rows.items())
                }
            connection.rollback()  # the snapshot is no longer needed
            for table in TABLES:
                moved, removed = swap(stage, out, table, days)
                summary.tables[table].parquet_bytes = moved
                summary.removed.extend(removed)
    except BaseException:
        pooled.invalidate()  # a COPY cut short leaves the connection unusable
        raise
    finally:
        pooled.close()
    summary.seconds = round(time.monotonic() - started, 3)
    summary.peak_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return summary
