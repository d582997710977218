"""Stream contexts in and scored rows out: JSON lines or Parquet, a chunk at a time.

JSON lines are read a few MiB of whole lines at a time and parsed by Arrow
(only the feature fields; the rest of each line is copied to the output as
it was); each output line is the input line with ``arms``, ``scores`` and
``propensities`` added. Parquet is read a row batch at a time and written a
row group per batch, with the same three list columns added. Memory is
bounded by one chunk, whatever the file's size.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from app.score.columns import CONTEXT
from bandits import FeatureSpec

JSON_BLOCK_BYTES = 4 << 20  # whole lines per JSON chunk, about 10,000 contexts at d = 32
PARQUET_BATCH_ROWS = 16_384
ADDED = ("arms", "scores", "propensities")
FORMATS = ("jsonl", "parquet")


class InputError(ValueError):
    """The input cannot be read as contexts; the message says where and why."""


@dataclass
class Chunk:
    """Some consecutive rows of the input: their columns and, for JSON lines, the raw lines."""

    batch: pa.RecordBatch | pa.Table
    lines: list[bytes] | None
    first_row: int
    read: int  # progress: bytes (JSON lines) or rows (Parquet) of the input read so far


def format_of(path: Path) -> str:
    """``parquet`` for a .parquet / .pq file, else ``jsonl``."""
    return "parquet" if path.suffix.lower() in (".parquet", ".pq") else "jsonl"


def _open_parquet(path: Path, **options) -> pq.ParquetFile:
    """The Parquet file at ``path``; InputError if it is not one."""
    try:
        return pq.ParquetFile(path, **options)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a Parquet file: {exc}") from exc


def parquet_schema(path: Path) -> pa.Schema:
    """The Arrow schema of a Parquet file; InputError if it is not one."""
    return _open_parquet(path).schema_arrow


def input_size(path: Path, fmt: str) -> int:
    """What :attr:`Chunk.read` counts up to: the file's bytes, or a Parquet file's rows."""
    if fmt == "parquet":
        return _open_parquet(path).metadata.num_rows
    return os.path.getsize(path)


def read_chunks(path: Path, fmt: str, spec: FeatureSpec) -> Iterator[Chunk]:
    """The input's rows, a chunk at a time."""
    return _parquet_chunks(path) if fmt == "parquet" else _json_chunks(path, spec)


def _parquet_chunks(path: Path) -> Iterator[Chunk]:
    # read as needed, a MiB at a time: pre-buffering keeps what it read (the whole file)
    source = _open_parquet(path, pre_buffer=False, buffer_size=1 << 20)
    for name in ADDED + ("decision_id",):
        if name in source.schema_arrow.names:
            raise InputError(f"{path}: has a column {name!r}, which the output adds")
    done = 0
    for batch in source.iter_batches(batch_size=PARQUET_BATCH_ROWS):
        yield Chunk(batch, None, done, done + batch.num_rows)
        done += batch.num_rows


def json_schema(spec: FeatureSpec) -> pa.Schema:
    """The fields JSON lines are parsed for: each feature at the top level and in ``context``."""
    fields = [pa.field(name, pa.float64()) for name in spec.numeric]
    fields += [pa.field(name, pa.string()) for name, _ in spec.categorical]
    return pa.schema(fields + [pa.field(CONTEXT, pa.struct(fields))])


def _json_chunks(path: Path, spec: FeatureSpec) -> Iterator[Chunk]:
    parse = pa_json.ParseOptions(
        explicit_schema=json_schema(spec), unexpected_field_behavior="ignore"
    )
    first = 1  # line number of the chunk's first line
    row = 0
    with open(path, "rb") as f:
        while True:
            raw = f.readlines(JSON_BLOCK_BYTES)
            if not raw:
                return
            kept = [line for line in raw if not line.isspace()]  # blank lines are skipped
            if kept:
                text = b"".join(kept)
                if not text.endswith(b"\n"):
                    text += b"\n"
                block = max(1 << 20, 2 * max(map(len, kept)))
                try:
                    table = pa_json.read_json(
                        io.BytesIO(text),
                        read_options=pa_json.ReadOptions(block_size=block),
                        parse_options=parse,
                    )
                except pa.ArrowInvalid as exc:
                    last = first + len(raw) - 1
                    raise InputError(f"{path}, lines {first}-{last}: {exc}") from exc
                yield Chunk(table, kept, row, f.tell())
                row += len(kept)
            first += len(raw)


def json_rows(values: np.ndarray) -> list[bytes]:
    """The rows of an ``(n, k)`` float array as JSON array bodies (``b"0.5,1.0"``), one call."""
    if values.shape[0] == 0:
        return []
    text = orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)
    return text[2:-2].split(b"],[")


class ScoredWriter:
    """Writes scored chunks to ``path`` in ``fmt``; close it (or use ``with``) to finish."""

    def __init__(
        self, path: Path, fmt: str, arm_names: tuple[str, ...], schema: pa.Schema | None = None
    ) -> None:
        self.path = path
        self.schema = schema  # the input's, for a Parquet output of no rows
        self.fmt = fmt
        self.names = pa.array(arm_names, pa.string())
        self.json_names = [orjson.dumps(a) for a in arm_names]
        self._file = open(path, "wb") if fmt == "jsonl" else None
        self._parquet: pq.ParquetWriter | None = None

    def write(
        self,
        chunk: Chunk,
        arms: np.ndarray,
        scores: np.ndarray,
        propensities: np.ndarray,
        decision_ids: list[str] | None = None,
    ) -> None:
        """Write ``chunk``'s rows with their ``(n, k)`` arm indices, scores and propensities
        (and, when recorded, their decision ids)."""
        if self.fmt == "jsonl":
            self._write_json(chunk.lines or [], arms, scores, propensities, decision_ids)
        else:
            self._write_parquet(chunk.batch, arms, scores, propensities, decision_ids)

    def _write_json(self, lines, arms, scores, propensities, decision_ids) -> None:
        names = self.json_names
        if arms.shape[1] == 1:
            shown = [names[a] for a in arms[:, 0].tolist()]
        else:
            shown = [b",".join([names[a] for a in row]) for row in arms.tolist()]
        ids = [b""] * len(lines)
        if decision_ids is not None:
            ids = [b'"decision_id":' + orjson.dumps(d) + b"," for d in decision_ids]
        line_format = b'%b%b%b"arms":[%b],"scores":[%b],"propensities":[%b]}\n'
        out = []
        for line, d, a, s, p in zip(lines, ids, shown, json_rows(scores), json_rows(propensities)):
            body = line.rstrip()[:-1].rstrip()  # the object without its closing brace
            out.append(line_format % (body, b"" if body.endswith(b"{") else b",", d, a, s, p))
        self._file.write(b"".join(out))

    def _write_parquet(self, batch, arms, scores, propensities, decision_ids) -> None:
        n, k = arms.shape
        offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
        added = [
            pa.ListArray.from_arrays(offsets, self.names.take(pa.array(arms.ravel()))),
            pa.ListArray.from_arrays(offsets, pa.array(scores.ravel())),
            pa.ListArray.from_arrays(offsets, pa.array(propensities.ravel())),
        ]
        names = list(ADDED)
        if decision_ids is not None:
            added.insert(0, pa.array(decision_ids, pa.string()))
            names.insert(0, "decision_id")
        if isinstance(batch, pa.Table):
            batch = batch.combine_chunks().to_batches()[0]
        out = pa.RecordBatch.from_arrays(batch.columns + added, names=batch.schema.names + names)
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.path, out.schema)
        self._parquet.write_batch(out)

    def close(self) -> None:
        """Finish the file (a Parquet file with no rows gets no row group but a schema)."""
        if self._file is not None:
            self._file.close()
        if self._parquet is None and self.fmt == "parquet" and self.schema is not None:
            lists = [pa.list_(pa.string()), pa.list_(pa.float64()), pa.list_(pa.float64())]
            empty = self.schema
            for name, kind in zip(ADDED, lists):
                empty = empty.append(pa.field(name, kind))
            self._parquet = pq.ParquetWriter(self.path, empty)
        if self._parquet is not None:
            self._parquet.close()

    def __enter__(self) -> "ScoredWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
