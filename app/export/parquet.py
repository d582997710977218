"""Chunks of JSON rows to Parquet: one file per table and UTC day, written a row group at a time.

Files are written into a staging directory inside the output directory (on
the same file system) and moved into place by :func:`swap`: each partition is
one file, ``table=NAME/date=YYYY-MM-DD/part-0.parquet``, replaced by one
``rename``, so a reader sees a day's old rows or its new rows, never a mix
and never a half-written file.
"""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from app.export.columns import Column, parquet_schema, transport_schema

PART = "part-0.parquet"
STAGED_SUFFIX = ".partial"  # no reader's *.parquet glob matches a staged file
COMPRESSION = "zstd"
_EPOCH = date(1970, 1, 1)
_MICROS_PER_DAY = 86_400_000_000


class OutOfOrder(Exception):
    """Rows did not arrive in the order of their partition column."""


def partition(root: Path, table: str, day: date) -> Path:
    """The directory of ``table``'s rows of ``day`` under ``root``."""
    return root / f"table={table}" / f"date={day.isoformat()}"


class Parser:
    """Parses chunks of JSON lines into Arrow tables of a table's Parquet schema."""

    def __init__(self, columns: list[Column]) -> None:
        self.names = [c.name for c in columns]
        self.schema = parquet_schema(columns)
        self.cast = self.schema != transport_schema(columns)  # dates travel as integers
        self.options = pa_json.ParseOptions(
            explicit_schema=transport_schema(columns), unexpected_field_behavior="error"
        )

    def parse(self, chunk: bytes) -> pa.Table:
        """The rows of ``chunk`` (whole JSON lines), typed."""
        parsed = pa_json.read_json(pa.BufferReader(chunk), parse_options=self.options)
        parsed = parsed.select(self.names)
        return parsed.cast(self.schema) if self.cast else parsed


class DayFiles:
    """Writes one table's rows, ordered by ``key``, to a Parquet file per UTC day of ``key``.

    Rows wait in memory until a day has ``row_group_rows`` of them (or ends),
    then leave as one row group: the chunk parsed at a time can stay small
    while row groups stay big enough for readers to skip and scan well.
    """

    def __init__(
        self, root: Path, table: str, key: str, schema: pa.Schema, row_group_rows: int
    ) -> None:
        self.root, self.table, self.key, self.schema = root, table, key, schema
        self.row_group_rows = row_group_rows
        self.rows: dict[date, int] = {}
        self.max_batch_rows = 0  # the most rows parsed at once
        self.max_held_rows = 0  # the most rows held at once, parsed or waiting
        self._day: int | None = None
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def write(self, batch: pa.Table) -> None:
        """Append ``batch``'s rows, which follow the rows written before in ``key`` order."""
        if batch.num_rows == 0:
            return
        self.max_batch_rows = max(self.max_batch_rows, batch.num_rows)
        self.max_held_rows = max(self.max_held_rows, self._pending_rows + batch.num_rows)
        days = batch.column(self.key).cast(pa.int64()).to_numpy() // _MICROS_PER_DAY
        steps = np.diff(days)
        if (steps < 0).any() or (self._day is not None and days[0] < self._day):
            raise OutOfOrder(f"{self.table}: rows are not in {self.key} order")
        cuts = [0, *(np.flatnonzero(steps) + 1).tolist(), len(days)]
        for start, stop in zip(cuts, cuts[1:]):
            self._switch(int(days[start]))
            self._pending.append(batch.slice(start, stop - start))
            self._pending_rows += stop - start
            day = _EPOCH + timedelta(days=int(days[start]))
            self.rows[day] = self.rows.get(day, 0) + stop - start
            if self._pending_rows >= self.row_group_rows:
                self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.concat_tables(self._pending))
            self._pending, self._pending_rows = [], 0

    def _switch(self, day: int) -> None:
        if day == self._day:
            return
        self.close()
        directory = partition(self.root, self.table, _EPOCH + timedelta(days=day))
        directory.mkdir(parents=True)
        self._writer = pq.ParquetWriter(
            directory / (PART + STAGED_SUFFIX), self.schema, compression=COMPRESSION
        )
        self._day = day

    def close(self) -> None:
        """Write the rows still held and finish the file being written."""
        if self._writer is not None:
            self._flush()
            self._writer.close()
            self._writer = None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def swap(stage: Path, out: Path, table: str, days: list[date]) -> tuple[int, list[str]]:
    """Replace ``table``'s partitions of ``days`` in ``out`` with the staged ones.

    A day with a staged file gets it (one atomic rename over the old file); a
    day without one (no rows now) loses its old file and, if then empty, its
    directory. Returns the bytes moved into place and the partitions removed.
    """
    moved, removed = 0, []
    for day in days:
        target = partition(out, table, day)
        staged = partition(stage, table, day) / (PART + STAGED_SUFFIX)
        if staged.exists():
            _fsync(staged)
            target.mkdir(parents=True, exist_ok=True)
            moved += staged.stat().st_size
            os.replace(staged, target / PART)
            _fsync(target)
        elif (target / PART).exists():
            (target / PART).unlink()
            removed.append(str(target.relative_to(out)))
            if not any(target.iterdir()):
                target.rmdir()
    return moved, removed
