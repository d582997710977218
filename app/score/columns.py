"""Encode a batch of contexts held in Arrow columns, as FeatureSpec.encode does row by row.

A feature's value is taken from the row's ``context`` object (a struct
column) when it has one, else from a top-level column of the feature's name;
other columns are not features. A missing or null value encodes as 0
(numeric) or no category, an undeclared category as no category, as in
``/choose``. A numeric feature must be a number column (not bool) with
finite values, a categorical one a string column.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bandits import FeatureError, FeatureSpec

CONTEXT = "context"


def encode_batch(spec: FeatureSpec, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
    """``(n, spec.dim)`` encoded contexts of the rows of ``batch``; FeatureError if one is bad."""
    n = batch.num_rows
    X = np.zeros((n, spec.dim))
    column = 0
    if spec.intercept:
        X[:, 0] = 1.0
        column = 1
    for name in spec.numeric:
        values = _feature(batch, name)
        if values is not None:
            if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
                raise FeatureError(f"context.{name}", f"must be a number, got {values.type}")
            numbers = pc.fill_null(values.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False)
            bad = np.flatnonzero(~np.isfinite(numbers))
            if bad.size:
                raise FeatureError(f"context.{name}", f"must be finite (row {int(bad[0])})")
            X[:, column] = numbers
        column += 1
    for name, declared in spec.categorical:
        values = _feature(batch, name)
        if values is not None:
            if pa.types.is_dictionary(values.type):
                values = values.cast(values.type.value_type)
            if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
                raise FeatureError(f"context.{name}", f"must be a string, got {values.type}")
            index = pc.index_in(values, value_set=pa.array(declared, pa.string()))
            found = pc.fill_null(index, -1).to_numpy(zero_copy_only=False)
            rows = np.flatnonzero(found >= 0)
            X[rows, column + found[rows]] = 1.0
        column += len(declared)
    return X


def _feature(batch: pa.RecordBatch | pa.Table, name: str) -> pa.Array | None:
    """The feature's values (``context.name`` where given, else the column ``name``), or None."""
    flat = _combined(batch.column(name)) if name in batch.schema.names else None
    if CONTEXT not in batch.schema.names:
        return flat
    context = _combined(batch.column(CONTEXT))
    if not pa.types.is_struct(context.type):
        raise FeatureError(CONTEXT, f"must be an object of feature values, got {context.type}")
    if context.type.get_field_index(name) < 0:
        return flat
    nested = pc.struct_field(context, name)
    if flat is None:
        return nested
    if flat.type != nested.type:
        flat = flat.cast(nested.type)
    return pc.coalesce(nested, flat)


def _combined(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def contexts_of(spec: FeatureSpec, batch: pa.RecordBatch | pa.Table) -> list[dict]:
    """Each row's context as ``/choose`` would log it: its feature values, nulls left out."""
    names = list(spec.numeric) + [name for name, _ in spec.categorical]
    columns = {}
    for name in names:
        values = _feature(batch, name)
        if values is not None:
            columns[name] = values.to_pylist()
    return [
        {name: v[i] for name, v in columns.items() if v[i] is not None}
        for i in range(batch.num_rows)
    ]
