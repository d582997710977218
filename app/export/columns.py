"""A log table's columns, as ``information_schema`` lists them, and their Parquet types.

Each column is selected from Postgres in a form that ``row_to_json`` writes
and Arrow's JSON reader parses straight into the column's Arrow type
(``transport``); a few types travel as something simpler and are cast after
parsing (a ``date`` as days since 1970, then ``date32``). Types without a
mapping are exported as their Postgres text form, so a new column never stops
an export.

==============================  ==========================  ==========================
Postgres                        Arrow / Parquet             note
==============================  ==========================  ==========================
timestamp with time zone        timestamp[us, tz=UTC]       Postgres' precision
timestamp without time zone     timestamp[us]
date                            date32
double precision, real          float64, float32
smallint, integer, bigint       int16, int32, int64
numeric                         float64                     nearest double
boolean                         bool
text, varchar, char, uuid, ...  string
json, jsonb                     string                      the JSON text
array of any of the above       list<the element's type>    one-dimensional
anything else                   string                      Postgres' text output
==============================  ==========================  ==========================
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

UTC_MICROS = pa.timestamp("us", tz="UTC")

# information_schema's udt_name of a scalar type -> its Arrow type
SCALARS: dict[str, pa.DataType] = {
    "timestamptz": UTC_MICROS,
    "timestamp": pa.timestamp("us"),
    "date": pa.date32(),
    "float8": pa.float64(),
    "float4": pa.float32(),
    "numeric": pa.float64(),
    "int2": pa.int16(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "bool": pa.bool_(),
    "text": pa.string(),
    "varchar": pa.string(),
    "bpchar": pa.string(),
    "name": pa.string(),
    "json": pa.string(),
    "jsonb": pa.string(),
}

# Scalars that row_to_json would not write as Arrow parses them, and what to select instead
_AS_TEXT = frozenset({"json", "jsonb"})  # embedded JSON -> its text, a JSON string
_DAYS = "({column} - date '1970-01-01')"  # a date -> days since the epoch, then date32

COLUMNS_SQL = """
SELECT column_name, udt_name
FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = %(table)s
ORDER BY ordinal_position
"""


@dataclass(frozen=True)
class Column:
    """One exported column: its name, the SQL that selects it, and its Arrow types.

    ``transport`` is what Arrow's JSON reader parses the selected value as;
    ``arrow`` is the type written to Parquet (the same but for dates).
    """

    name: str
    udt_name: str
    select: str
    transport: pa.DataType
    arrow: pa.DataType


def quote(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def column(name: str, udt_name: str) -> Column:
    """The export of a column named ``name`` of the type ``udt_name`` (information_schema)."""
    ident = quote(name)
    array = udt_name.startswith("_")
    element = udt_name.removeprefix("_")
    scalar = SCALARS.get(element)
    if scalar is None or element in _AS_TEXT or (array and element == "date"):
        # JSON as its text; no mapping (or an array of dates): Postgres' text output
        return Column(name, udt_name, f"{ident}::text", pa.string(), pa.string())
    if element == "date":
        return Column(name, udt_name, _DAYS.format(column=ident), pa.int32(), scalar)
    arrow = pa.list_(scalar) if array else scalar
    select = f"{ident}::float8{'[]' if array else ''}" if element == "numeric" else ident
    return Column(name, udt_name, select, arrow, arrow)


def table_columns(cursor, table: str) -> list[Column]:
    """Every column of ``table`` in the current schema, in table order (a psycopg2 cursor)."""
    cursor.execute(COLUMNS_SQL, {"table": table})
    return [column(name, udt_name) for name, udt_name in cursor.fetchall()]


def transport_schema(columns: list[Column]) -> pa.Schema:
    """The schema Arrow's JSON reader parses the selected rows with."""
    return pa.schema([pa.field(c.name, c.transport) for c in columns])


def parquet_schema(columns: list[Column]) -> pa.Schema:
    """The schema of the Parquet files."""
    return pa.schema([pa.field(c.name, c.arrow) for c in columns])
