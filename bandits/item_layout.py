"""The shared vector ``phi`` of a (context, item) pair, and its size ``D``.

:class:`ItemLayout` builds the shared vector of a (context, item) pair::

    phi(x, z) = [x_i * z_j for (i, j) in pairs,  z,  x]

``pairs`` are the declared interactions, columns of the encoded context
crossed with columns of the encoded item features. The default is all pairs
of the context's feature columns (not its intercept) with every item column;
``z`` alone is the intercept's crossing (an item's appeal whatever the
context) and ``x`` alone (with the intercept) absorbs how rewarding the
context is whatever the item, as Vowpal Wabbit's linear terms and constant do
next to ``-q UA``. With ``d`` context columns including the intercept and
``q`` item columns, all pairs give ``D = (d - 1) q + q + d = d (q + 1)``.
All pairs cost ``O(d q)`` features, so ``O(d^2 q^2)`` for the matrices and
per update: for 16 context features (``d = 17`` with the intercept) and 16
item features, ``D = 289``; the shared model's ``A`` and ``A^{-1}`` take
``2 * 289^2 * 8`` bytes = 1.34 MB per experiment (plus ``b`` and ``theta``,
4.6 kB), and an update is four ``O(D^2)`` passes (``D^2`` = 84k
multiply-adds). Declaring only the pairs that matter shrinks ``D`` to
``len(pairs) + q + d``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .features import FeatureSpec

__all__ = ["ItemLayout"]


@dataclass(frozen=True)
class ItemLayout:
    """How a context and an item's features become the shared vector ``phi``.

    Parameters
    ----------
    context_dim : int
        ``d``, length of the encoded context (with its intercept, if any).
    item_dim : int
        ``q``, length of the encoded item features.
    pairs : tuple of (int, int)
        The crossed columns ``(context column, item column)``, in vector order.
    context_alone : bool, default True
        Whether ``x`` itself ends the vector.

    Raises
    ------
    ValueError
        If a dimension is below 1 or a pair is out of range or repeated.

    Examples
    --------
    >>> layout = ItemLayout.all_pairs(3, 2)  # intercept + 2 context features, 2 item features
    >>> layout.dim, layout.pairs
    (9, ((1, 0), (1, 1), (2, 0), (2, 1)))
    >>> layout.features(np.array([1.0, 2.0, 3.0]), np.array([[10.0, 20.0]])).tolist()
    [[20.0, 40.0, 30.0, 60.0, 10.0, 20.0, 1.0, 2.0, 3.0]]
    """

    context_dim: int
    item_dim: int
    pairs: tuple[tuple[int, int], ...]
    context_alone: bool = True

    def __post_init__(self) -> None:
        if self.context_dim < 1 or self.item_dim < 1:
            raise ValueError(
                f"context_dim and item_dim must be >= 1, got {self.context_dim}, {self.item_dim}"
            )
        for i, j in self.pairs:
            if not (0 <= i < self.context_dim and 0 <= j < self.item_dim):
                raise ValueError(f"pair ({i}, {j}) is out of range")
        if len(set(self.pairs)) != len(self.pairs):
            raise ValueError("pairs must not repeat")

    @classmethod
    def all_pairs(
        cls, context_dim: int, item_dim: int, *, intercept: bool = True, context_alone: bool = True
    ) -> ItemLayout:
        """Every context column × every item column.

        The intercept (column 0) is left out when ``intercept``: its crossing is ``z`` alone.
        """
        first = 1 if intercept else 0
        pairs = tuple((i, j) for i in range(first, context_dim) for j in range(item_dim))
        return cls(context_dim, item_dim, pairs, context_alone)

    @classmethod
    def from_specs(
        cls,
        context: FeatureSpec,
        items: FeatureSpec,
        interactions: Mapping[str, Sequence[str]] | None = None,
        *,
        context_alone: bool = True,
    ) -> ItemLayout:
        """The layout of an experiment's declared context and item features.

        Parameters
        ----------
        context : FeatureSpec
            The context's features (its intercept, if any, is column 0).
        items : FeatureSpec
            The item features, declared without an intercept.
        interactions : mapping of str to sequence of str, optional
            Context feature name -> the item feature names it crosses with
            (a categorical feature crosses with all of its columns). None
            means all pairs.
        context_alone : bool, default True

        Raises
        ------
        ValueError
            If ``items`` has an intercept or an interaction names an
            undeclared feature.

        Examples
        --------
        >>> ctx = FeatureSpec.from_mapping(["hour"], {"city": ["berlin", "munich"]})
        >>> job = FeatureSpec.from_mapping(["pay"], {"category": ["kitchen"]}, intercept=False)
        >>> ItemLayout.from_specs(ctx, job).dim
        12
        >>> ItemLayout.from_specs(ctx, job, {"city": ["pay"]}).pairs
        ((2, 0), (3, 0))
        """
        if items.intercept:
            raise ValueError("item features are declared without an intercept")
        if interactions is None:
            return cls.all_pairs(
                context.dim, items.dim, intercept=context.intercept, context_alone=context_alone
            )
        ctx_cols, item_cols = _feature_columns(context), _feature_columns(items)
        pairs = []
        for name, crossed in interactions.items():
            for other in crossed:
                for where, cols, key in (("context", ctx_cols, name), ("item", item_cols, other)):
                    if key not in cols:
                        raise ValueError(
                            f"interactions name {key!r}, not a declared {where} feature"
                        )
                pairs += [(i, j) for i in ctx_cols[name] for j in item_cols[other]]
        return cls(context.dim, items.dim, tuple(pairs), context_alone)

    @property
    def dim(self) -> int:
        """``D``: ``len(pairs) + q`` (``+ d`` with ``context_alone``)."""
        return len(self.pairs) + self.item_dim + (self.context_dim if self.context_alone else 0)

    @property
    def level_column(self) -> int | None:
        """The column of ``phi`` that holds ``x``'s column 0 alone: 1 in every vector when the
        context has its intercept there, so ``b / A`` of that column is a shared model's mean
        reward (what ``forgetting = "auto"`` watches). None without ``context_alone``.

        >>> ItemLayout.all_pairs(3, 2).level_column  # after 4 pairs and the 2 item columns
        6
        """
        return len(self.pairs) + self.item_dim if self.context_alone else None

    @cached_property
    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Where each entry of ``phi`` sits in the outer product ``[1, x] ⊗ [z, 1]``.

        ``phi_k = [1, x]_{a_k} * [z, 1]_{b_k}``: a pair ``(i, j)`` is ``(i + 1, j)``,
        ``z_j`` alone ``(0, j)`` and ``x_i`` alone ``(i + 1, q)``. Two ``(D,)`` index arrays.
        """
        q = self.item_dim
        cells = [(i + 1, j) for i, j in self.pairs] + [(0, j) for j in range(q)]
        if self.context_alone:
            cells += [(i + 1, q) for i in range(self.context_dim)]
        a, b = np.array(cells, dtype=np.intp).T
        return a, b

    def features(self, x: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The ``(C, D)`` shared vectors of context ``x`` with each row of ``items``.

        ``x`` is ``(d,)``, ``items`` is ``(C, q)``; ValueError if a shape is wrong or a value
        is not finite.
        """
        x = np.asarray(x, dtype=np.float64)
        items = np.asarray(items, dtype=np.float64)
        if x.shape != (self.context_dim,):
            raise ValueError(f"x must have shape ({self.context_dim},), got {x.shape}")
        if items.ndim != 2 or items.shape[1] != self.item_dim:
            raise ValueError(f"items must have shape (C, {self.item_dim}), got {items.shape}")
        if not (np.isfinite(x).all() and np.isfinite(items).all()):
            raise ValueError("x and items must be finite")
        c = items.shape[0]
        out = np.empty((c, self.dim))
        p = len(self.pairs)
        if p:
            ci, ij = np.array(self.pairs, dtype=np.intp).T
            np.multiply(x[ci], items[:, ij], out=out[:, :p])
        out[:, p : p + self.item_dim] = items
        if self.context_alone:
            out[:, p + self.item_dim :] = x
        return out


def _feature_columns(spec: FeatureSpec) -> dict[str, list[int]]:
    """Each declared feature's column indices in ``spec``'s vector."""
    start = 1 if spec.intercept else 0
    out = {name: [start + i] for i, name in enumerate(spec.numeric)}
    start += len(spec.numeric)
    for name, values in spec.categorical:
        out[name] = list(range(start, start + len(values)))
        start += len(values)
    return out
