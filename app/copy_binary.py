"""Rows in PostgreSQL's binary COPY format.

``COPY ... FROM STDIN WITH (FORMAT binary)`` takes each value in the type's
wire form, so Postgres parses no text: no float or timestamp parsing, and a
``float8[]`` of features is copied almost as is. Each function below returns
one field, length prefix included; a row is its field count followed by its
fields (``row``), and a stream is ``HEADER``, the rows and ``TRAILER``. See
https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4
"""

from __future__ import annotations

import struct
from typing import Sequence

import numpy as np

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
NULL = struct.pack(">i", -1)

_PG_EPOCH_MS = 946_684_800_000  # 2000-01-01T00:00:00Z, where Postgres timestamps count from
_FLOAT8_OID = 701
_TEXT_OID = 25
_INT4 = struct.Struct(">ii")
_INT8 = struct.Struct(">iq")
_FLOAT8 = struct.Struct(">id")
_ARRAY_HEAD = struct.Struct(">iiiiii")
_ELEMENT = np.dtype([("length", ">i4"), ("value", ">f8")])
_TRUE = struct.pack(">ib", 1, 1)
_FALSE = struct.pack(">ib", 1, 0)


def row(*fields: bytes) -> bytes:
    """One row from its encoded fields."""
    return struct.pack(">h", len(fields)) + b"".join(fields)


def text(value: str | None) -> bytes:
    """A ``text`` field (or NULL)."""
    if value is None:
        return NULL
    data = value.encode()
    return struct.pack(">i", len(data)) + data


def int4(value: int) -> bytes:
    """An ``integer`` field."""
    return _INT4.pack(4, value)


def int8(value: int) -> bytes:
    """A ``bigint`` field."""
    return _INT8.pack(8, value)


def float8(value: float) -> bytes:
    """A ``double precision`` field."""
    return _FLOAT8.pack(8, value)


def boolean(value: bool) -> bytes:
    """A ``boolean`` field."""
    return _TRUE if value else _FALSE


def timestamptz(epoch_ms: int) -> bytes:
    """A ``timestamp with time zone`` field from milliseconds since the Unix epoch."""
    return _INT8.pack(8, (epoch_ms - _PG_EPOCH_MS) * 1000)


def jsonb(document: bytes) -> bytes:
    """A ``jsonb`` field from JSON text (UTF-8)."""
    return struct.pack(">ib", len(document) + 1, 1) + document


def float8_array(values: np.ndarray) -> bytes:
    """A one-dimensional ``double precision[]`` field (no NULL elements)."""
    n = values.shape[0]
    elements = np.empty(n, dtype=_ELEMENT)
    elements["length"] = 8
    elements["value"] = values
    body = elements.tobytes()
    head = _ARRAY_HEAD.pack(20 + len(body), 1, 0, _FLOAT8_OID, n, 1)
    return head + body


def text_array(values: Sequence[str] | None) -> bytes:
    """A one-dimensional ``text[]`` field (or NULL) of non-NULL elements."""
    if values is None:
        return NULL
    if not values:  # Postgres writes an empty array with no dimensions
        return struct.pack(">iiii", 12, 0, 0, _TEXT_OID)
    body = b"".join(text(v) for v in values)
    head = _ARRAY_HEAD.pack(20 + len(body), 1, 0, _TEXT_OID, len(values), 1)
    return head + body
