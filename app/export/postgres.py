"""A query's rows streamed from Postgres as JSON lines, a bounded chunk at a time.

``COPY (SELECT row_to_json(r) FROM (query) r) TO STDOUT`` sends one JSON object
per row; Postgres does the formatting, Arrow's JSON reader (C++, on every
core) the parsing, and no row ever becomes a Python object. COPY's CSV format
with a quote and a delimiter that JSON text never holds raw (``\\x01``,
``\\x02``: JSON escapes control characters) passes each object through
unchanged, where the text format would double every backslash.

A thread runs the COPY and hands chunks of about ``chunk_bytes`` over a
queue of ``depth`` chunks, so Postgres keeps sending while the caller parses
and writes the previous chunk; when the queue is full, the COPY waits (and
Postgres with it). At most ``depth + 2`` chunks exist at once: the queued
ones, the one being filled and the one the caller holds.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator

COPY = (
    "COPY (SELECT row_to_json(r) FROM ({query}) AS r) TO STDOUT "
    "WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"
)

_DONE = object()


class Cancelled(Exception):
    """The consumer stopped reading; the COPY is abandoned."""


class _Chunks:
    """COPY's output file: psycopg2 writes one row per call; rows leave in chunks."""

    def __init__(self, out: queue.Queue, chunk_bytes: int, cancelled: threading.Event) -> None:
        self.out = out
        self.chunk_bytes = chunk_bytes
        self.cancelled = cancelled
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)
        if self.size >= self.chunk_bytes:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            chunk = b"".join(self.parts)
            self.parts, self.size = [], 0
            self.put(chunk)

    def put(self, item: object) -> None:
        while True:
            if self.cancelled.is_set():
                raise Cancelled
            try:
                self.out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue


def json_lines(connection, query: str, *, chunk_bytes: int, depth: int = 2) -> Iterator[bytes]:
    """The rows of ``query`` as newline-terminated JSON objects, in chunks of ~``chunk_bytes``.

    Parameters
    ----------
    connection
        A psycopg2 connection, used by one thread at a time (a thread of this
        function's while it runs); the COPY runs in its current transaction.
    query : str
        A complete SELECT (parameters already bound, e.g. by ``cursor.mogrify``).
    chunk_bytes : int
        A chunk ends with the first row that brings it to this size.
    depth : int
        Chunks read ahead of the consumer.

    Raises whatever the COPY raised. Closing the generator early cancels the
    COPY; the connection is then unusable and should be closed.
    """
    chunks: queue.Queue = queue.Queue(maxsize=depth)
    cancelled = threading.Event()
    sink = _Chunks(chunks, chunk_bytes, cancelled)

    def produce() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.copy_expert(COPY.format(query=query), sink)
            sink.flush()
            sink.put(_DONE)
        except Cancelled:
            return
        except BaseException as exc:  # handed to the consumer, which raises it
            try:
                sink.put(exc)
            except Cancelled:
                return

    thread = threading.Thread(target=produce, name="export-copy", daemon=True)
    thread.start()
    finished = False
    try:
        while True:
            item = chunks.get()
            if item is _DONE or isinstance(item, BaseException):
                finished = True
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancelled.set()
        if not finished:  # the server may still be sorting: stop it rather than wait
            connection.cancel()
        thread.join()
