"""What a reward of an item model learns: the shared vector of its context and item.

A decision of an item model records the encoded item features ``z`` of each
impression (``k`` rows of ``q`` floats, in slot order) next to its context
``x``; a reward copies both and names its slot. The config version's learning
settings carry the layout (``app.config.layout_record``), so the worker and a
rebuild turn ``(x, z[slot])`` into the same ``phi`` bit for bit.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import numpy as np
import orjson

from bandits.item_models import ItemLayout


def layout_of(record: Mapping[str, Any]) -> ItemLayout:
    """The layout an item model's stored record describes."""
    return _layout(orjson.dumps(record, option=orjson.OPT_SORT_KEYS))


@functools.lru_cache(maxsize=256)
def _layout(key: bytes) -> ItemLayout:
    record = orjson.loads(key)
    return ItemLayout(
        int(record["d"]),
        int(record["q"]),
        tuple((int(i), int(j)) for i, j in record["p"]),
        bool(record["a"]),
    )


def level_column(record: Mapping[str, Any]) -> int:
    """The column of a shared model's ``phi`` that is 1 in every vector: where
    ``forgetting = "auto"`` reads the model's mean reward."""
    column = layout_of(record).level_column
    return 0 if column is None else column


def item_rows(raw: bytes | None, item_dim: int) -> np.ndarray:
    """The ``(k, q)`` item vectors of a decision's impressions, from their stored bytes.

    Raises ValueError if there are none or their length is not a whole number of rows.
    """
    if not raw:
        raise ValueError("the decision recorded no item features")
    rows = np.frombuffer(raw, dtype=np.float64)
    if rows.size % item_dim:
        raise ValueError(f"item features of {rows.size} floats are not rows of {item_dim}")
    return rows.reshape(-1, item_dim)


def shared_vector(record: Mapping[str, Any], x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``phi(x, z)``: what a reward of the item shown with features ``z`` at context ``x`` learns.

    ValueError if a shape disagrees with the layout or a value is not finite.
    """
    layout = layout_of(record)
    return layout.features(x, np.asarray(z, dtype=np.float64).reshape(1, -1))[0]
