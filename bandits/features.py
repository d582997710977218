"""Feature encoding: a request's context mapping to the vector ``x``.

A :class:`FeatureSpec` declares an experiment's features. The vector is laid
out as: the intercept (1.0) if enabled, then the numeric features in declared
order, then one one-hot block per categorical feature in declared order.

A missing feature encodes as 0 (numeric) or all zeros (categorical); a
categorical value that was not declared also encodes as all zeros, an implicit
"other" category. Anything else the spec cannot encode raises
:class:`FeatureError`.
"""

from __future__ import annotations

import math
from itertools import chain
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["FeatureError", "FeatureSpec"]

_NUMBER_TYPES = (int, float, np.integer, np.floating)
_BOOL_TYPES = (bool, np.bool_)


class FeatureError(ValueError):
    """A context that cannot be encoded.

    Parameters
    ----------
    field : str
        The offending key, as ``context.<name>``.
    message : str
        What is wrong with it, for the caller.
    """

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class FeatureSpec:
    """The features of one experiment and how they become a vector.

    Parameters
    ----------
    numeric : tuple of str
        Names of numeric features, in vector order.
    categorical : tuple of (str, tuple of str)
        ``((name, (value, ...)), ...)``: each categorical feature and its
        declared values, in vector order.
    intercept : bool, default True
        Whether the vector starts with a constant 1.0.

    Raises
    ------
    ValueError
        If a feature name is declared twice (across numeric and categorical
        too), a category lists a value twice, or two columns would share a
        name (e.g. a feature called ``"intercept"`` with the intercept on).

    Examples
    --------
    >>> spec = FeatureSpec.from_mapping(["hour"], {"city": ["berlin", "munich"]})
    >>> spec.dim, spec.columns
    (4, ['intercept', 'hour', 'city=berlin', 'city=munich'])
    >>> spec.encode({"hour": 14, "city": "munich"}).tolist()
    [1.0, 14.0, 0.0, 1.0]
    >>> spec.encode({"city": "paris"}).tolist()
    [1.0, 0.0, 0.0, 0.0]
    """

    numeric: tuple[str, ...] = ()
    categorical: tuple[tuple[str, tuple[str, ...]], ...] = ()
    intercept: bool = True

    def __post_init__(self) -> None:
        numeric = tuple(self.numeric)
        categorical = tuple((name, tuple(values)) for name, values in self.categorical)
        object.__setattr__(self, "numeric", numeric)
        object.__setattr__(self, "categorical", categorical)

        names = list(numeric) + [name for name, _ in categorical]
        _reject_duplicates(names, "feature name")
        columns = ["intercept"] if self.intercept else []
        columns += numeric
        # name -> column (numeric) or name -> {value: column} (categorical)
        index: dict[str, int | dict[str, int]] = {}
        offset = int(self.intercept)
        for i, name in enumerate(numeric):
            index[name] = offset + i
        offset += len(numeric)
        for name, values in categorical:
            _reject_duplicates(values, f"value of categorical feature {name!r}")
            index[name] = {value: offset + i for i, value in enumerate(values)}
            columns += [f"{name}={value}" for value in values]
            offset += len(values)
        _reject_duplicates(columns, "column name")
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_columns", tuple(columns))

    @classmethod
    def from_mapping(
        cls,
        numeric: Iterable[str] = (),
        categorical: Mapping[str, Iterable[str]] | None = None,
        intercept: bool = True,
    ) -> FeatureSpec:
        """Build a spec from config-shaped values.

        Parameters
        ----------
        numeric : iterable of str
            Numeric feature names, in vector order.
        categorical : mapping of str to iterable of str, optional
            Each categorical feature's declared values, in vector order.
        intercept : bool, default True
            Whether the vector starts with a constant 1.0.

        Returns
        -------
        FeatureSpec
            The equivalent spec, with lists turned into tuples.
        """
        pairs = tuple((name, tuple(values)) for name, values in (categorical or {}).items())
        return cls(numeric=tuple(numeric), categorical=pairs, intercept=bool(intercept))

    @property
    def dim(self) -> int:
        """Length of the encoded vector."""
        return len(self._columns)

    @property
    def columns(self) -> list[str]:
        """Name of each vector entry, in order, e.g. ``["intercept", "hour", "city=berlin"]``."""
        return list(self._columns)

    def encode(self, context: Mapping[str, object]) -> np.ndarray:
        """Encode one context.

        Parameters
        ----------
        context : mapping of str to object
            Feature name to value, as sent by the caller. Numeric values must
            be finite ints or floats (not bools); categorical values must be
            strings.

        Returns
        -------
        np.ndarray
            ``(dim,)`` float64 vector in :attr:`columns` order.

        Raises
        ------
        FeatureError
            If ``context`` is not a mapping, names an undeclared feature, or
            holds a value of the wrong type or a non-finite number.
        """
        if not isinstance(context, Mapping):
            raise FeatureError("context", "must be an object of feature values")
        x = np.zeros(len(self._columns))
        if self.intercept:
            x[0] = 1.0
        index = self._index
        for key, value in context.items():
            entry = index.get(key)
            if entry is None:
                raise FeatureError(f"context.{key}", f"unknown feature {key!r}")
            if isinstance(entry, int):
                x[entry] = _number(key, value)
            elif isinstance(value, str):
                column = entry.get(value)
                if column is not None:
                    x[column] = 1.0
            else:
                raise FeatureError(
                    f"context.{key}", f"expected a string, got {type(value).__name__}"
                )
        return x

    def encode_many(self, rows: Sequence[Mapping[str, object]]) -> np.ndarray:
        """Encode many contexts (or items) at once: ``(n, dim)``, row ``i`` as ``encode(rows[i])``.

        A fast path for well-formed rows; any row it cannot take as it is
        (an unknown feature, a value of the wrong type, a non-finite number)
        is encoded by :meth:`encode`, which raises its FeatureError.
        """
        out = np.zeros((len(rows), len(self._columns)))
        if self.intercept:
            out[:, 0] = 1.0
        known = self._index.keys()
        numeric = self.numeric
        start = int(self.intercept)
        try:
            if not set(map(type, rows)) <= {dict} or not all(row.keys() <= known for row in rows):
                raise _SlowPath
            if numeric:
                values = [[row.get(name, 0.0) for name in numeric] for row in rows]
                if not set(map(type, chain.from_iterable(values))) <= _FAST_NUMBERS:
                    raise _SlowPath
                block = np.array(values, dtype=np.float64).reshape(len(rows), len(numeric))
                if not np.isfinite(block).all():
                    raise _SlowPath
                out[:, start : start + len(numeric)] = block
            for name, _ in self.categorical:
                columns = self._index[name]
                for i, row in enumerate(rows):
                    value = row.get(name, _ABSENT)
                    if value is _ABSENT:
                        continue
                    if type(value) is not str:
                        raise _SlowPath
                    column = columns.get(value)
                    if column is not None:
                        out[i, column] = 1.0
        except (_SlowPath, OverflowError, TypeError, ValueError):
            for i, row in enumerate(rows):
                out[i] = self.encode(row)
        return out


class _SlowPath(Exception):
    """A row the fast path of ``encode_many`` leaves to ``encode``."""


_FAST_NUMBERS = frozenset({int, float})
_ABSENT = object()


def _number(key: str, value: object) -> float:
    """Return ``value`` as a finite float, or raise FeatureError naming ``key``."""
    if isinstance(value, _BOOL_TYPES) or not isinstance(value, _NUMBER_TYPES):
        raise FeatureError(f"context.{key}", f"expected a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise FeatureError(f"context.{key}", "number is too large") from None
    if not math.isfinite(number):
        raise FeatureError(f"context.{key}", f"expected a finite number, got {number!r}")
    return number


def _reject_duplicates(items: Iterable[str], what: str) -> None:
    """Raise ValueError if ``items`` holds the same string twice."""
    seen: set[str] = set()
    for item in items:
        if item in seen:
            raise ValueError(f"duplicate {what}: {item!r}")
        seen.add(item)
