"""Encoded item features of stored items, remembered by what the store holds.

/choose over 1,000 stored candidates would otherwise parse 1,000 JSON values and
encode 1,000 feature dicts per request (about 3.5 ms on the bench box) for the
same few thousand live items again and again. A stored value's encoding depends
only on its bytes and on the experiment's item features, so this process keeps
``bytes -> encoded row`` per config version: an item rewritten in the store has
new bytes and is encoded afresh, and a config change starts a new map. Only the
shown items' features are parsed (they go into the decision record).
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import orjson

from app.config import Experiment
from bandits import FeatureError

# Encoded rows held per process (all experiments). At 16 item features one entry
# is about 0.6 KB (the stored JSON as key, the row), so this is about 30 MB.
MAX_ROWS = 50_000


class StoredItems(Sequence[dict[str, Any]]):
    """The declared item features of stored candidates, parsed only when read."""

    def __init__(self, raw: Sequence[bytes], names: frozenset[str]) -> None:
        self.raw = raw  # each candidate's stored JSON
        self._names = names

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, position):  # type: ignore[override]
        if isinstance(position, slice):
            return [self[i] for i in range(*position.indices(len(self)))]
        features = orjson.loads(self.raw[position])
        if features.keys() <= self._names:
            return features
        return {k: v for k, v in features.items() if k in self._names}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))


class StoredRows:
    """Stored JSON -> encoded row (as float64 bytes) of item features, per config version."""

    def __init__(self, max_rows: int = MAX_ROWS) -> None:
        self.max_rows = max_rows
        self._rows: dict[tuple[str, str, bytes], bytes] = {}

    def encode(self, experiment: Experiment, items: StoredItems) -> np.ndarray | None:
        """The ``(C, q)`` encoded features of ``items``; None if one cannot be encoded.

        None leaves the error to :func:`app.item_models.scoring.encode_items`, which
        names the candidate at fault.
        """
        name, version, raw = experiment.name, experiment.version, items.raw
        rows = self._rows
        found = [rows.get((name, version, value)) for value in raw]
        missing = [i for i, row in enumerate(found) if row is None]
        if missing:
            try:
                fresh = experiment.item_features.encode_many([items[i] for i in missing])
            except FeatureError:
                return None
            self._make_room(len(missing))
            rows = self._rows
            for i, row in zip(missing, fresh):
                found[i] = rows[(name, version, raw[i])] = row.tobytes()
        # rows kept as bytes: one join and one buffer, where stacking 1,000 arrays takes 1 ms
        matrix = np.frombuffer(b"".join(found), dtype=np.float64)
        return matrix.reshape(len(found), experiment.item_features.dim).copy()

    def __len__(self) -> int:
        return len(self._rows)

    def _make_room(self, adding: int) -> None:
        """Drop the oldest half when ``adding`` rows would pass the bound."""
        if len(self._rows) + adding <= self.max_rows:
            return
        keep = self.max_rows // 2
        self._rows = dict(list(self._rows.items())[-keep:]) if keep else {}
