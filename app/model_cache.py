"""The API's in-process copy of arm parameters, refreshed by version.

Fetching every arm's matrices from Redis on each request would cost more than
all the scoring. Instead each API process keeps stacked arrays per experiment
and, at most every ``refresh_seconds``, asks Redis whether the experiment's
parameters changed at all (one GET of a counter every save bumps) and, if they
did, which arms have a newer version, and fetches only those.

A configured catalogue has one row per configured arm, in config order; a
shared model over item features has one row whatever the items, and a hybrid
one a table of its arms (with their ``B``) and a one-row table of its shared
part. A
dynamic catalogue starts empty and gains a row the first time this process
sees a candidate; an arm that never learned anything has the prior. Requests
may name any number of new candidates, refused ones too (a full catalogue), so
rows of arms that learned nothing are dropped once they outnumber the arms
that did (and ``SPARE_PRIOR_ROWS``): the table stays within twice the learned
arms plus a few thousand rows.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from app.config import HYBRID, SHARED, SHARED_ARM, Experiment
from app.model_store import ModelStore
from bandits import ScoringState

# Arms fetched per Redis pipeline: bounds the raw replies held at once (256 arms
# at d = 32 is 2 MiB), so loading 10,000 arms does not leave the process
# holding about twice its arrays (glibc keeps the freed reply memory).
LOAD_CHUNK = 256
# What the tables may hold in one process (their A^-1 and B) before the least recently used
# go: a table dropped is loaded again from Redis when next asked for (segments, many models).
MAX_CACHE_BYTES = 512 * 2**20
# Rows of never-learned arms a dynamic table keeps before dropping them (beyond as
# many as it has learned arms): twice the candidates one request may name.
SPARE_PRIOR_ROWS = 2000


@dataclass
class ArmTable:
    """Stacked choosing parameters of an experiment's arms, and which arm each row is.

    ``state`` may have spare rows past ``len(arms)`` (room to grow); they hold the prior.
    """

    arms: list[str]
    index: dict[str, int]
    state: ScoringState
    # a hybrid model's arms: the (d, D) B of each arm that learned (0 for every other row)
    extras: dict[str, np.ndarray] | None = None
    versions: dict[str, int] = field(default_factory=dict)
    latest: dict[str, int] = field(default_factory=dict)  # versions in Redis at the last look
    checked_at: float = float("-inf")
    generation: bytes | None = None  # the experiment's save counter when ``latest`` was read

    def rows(self, arm_ids: Iterable[str]) -> np.ndarray:
        """Row numbers of ``arm_ids`` (all of them must be in the table)."""
        index = self.index
        return np.fromiter((index[a] for a in arm_ids), dtype=np.intp)


def prior_scoring_state(n_arms: int, dim: int, ridge: float) -> ScoringState:
    """Choosing parameters of arms that have learned nothing yet."""
    return ScoringState(
        A_inv=np.broadcast_to(np.eye(dim) / ridge, (n_arms, dim, dim)).copy(),
        theta=np.zeros((n_arms, dim)),
        n=np.zeros(n_arms),
        successes=np.zeros(n_arms),
        failures=np.zeros(n_arms),
    )


@dataclass(frozen=True)
class TableShape:
    """What one table of an experiment holds: its fixed rows, their dimension, their ``B``."""

    arms: tuple[str, ...]
    dim: int
    grows: bool  # a dynamic catalogue's arms: rows are added as candidates come
    extra: tuple[int, int] | None = None  # the (d, D) shape of a hybrid arm's B


SHARED_PART = "shared"  # a hybrid model's shared part; its arms are the default part


def table_shape(experiment: Experiment, part: str | None = None) -> TableShape:
    """The shape of ``experiment``'s table (``part``: a hybrid model's ``"shared"`` one)."""
    if experiment.model == SHARED or part == SHARED_PART:
        return TableShape((SHARED_ARM,), experiment.layout.dim, False)
    extra = None
    if experiment.model == HYBRID:
        extra = (experiment.features.dim, experiment.layout.dim)
    return TableShape(experiment.arms, experiment.features.dim, experiment.dynamic, extra)


class ModelCache:
    """Stacked, recent-enough choosing parameters of each experiment."""

    def __init__(
        self,
        store: ModelStore,
        *,
        refresh_seconds: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        max_bytes: int = MAX_CACHE_BYTES,
    ) -> None:
        self.store = store
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.max_bytes = max_bytes
        # least recently used first: a process serving many segments keeps the busy ones
        self._tables: OrderedDict[tuple[str, str, str | None], ArmTable] = OrderedDict()
        self._bytes: dict[tuple[str, str, str | None], int] = {}
        self._total_bytes = 0
        self._latest: dict[str, Experiment] = {}  # by name: the config last asked for
        self._lock = threading.Lock()

    def table(
        self, experiment: Experiment, candidates: Iterable[str] = (), part: str | None = None
    ) -> ArmTable:
        """The experiment's arm table, at most ``refresh_seconds`` old.

        For a dynamic catalogue, ``candidates`` not seen before get rows first (for a
        hybrid model's arms, only those with saved parameters: the others score from
        the shared part). ``part`` ``"shared"`` is a hybrid model's shared part.
        """
        key = (experiment.name, experiment.model_id, part)
        shape = table_shape(experiment, part)
        grows = shape.grows
        with self._lock:
            table = self._tables.get(key)
            if table is None or (not grows and table.arms != list(shape.arms)):
                table = self._new_table(shape, experiment.ridge)
                self._tables[key] = table
            self._latest[experiment.name] = experiment
            now = self.clock()
            if now - table.checked_at >= self.refresh_seconds:
                table.checked_at = now
                generation = self.store.generation(experiment.name)
                if generation is None or generation != table.generation:
                    table.latest = self.store.versions(experiment.name, experiment.model_id)
                    table.generation = generation
                    self._load(experiment, shape, table, table.arms)
            if grows:
                named = list(dict.fromkeys(candidates))
                if shape.extra is not None:
                    # a hybrid arm with nothing saved is scored from the shared part
                    # alone (app/item_models/scoring.py): it needs no row
                    named = [a for a in named if a in table.latest]
                unseen = [a for a in named if a not in table.index]
                if unseen and _too_many_prior_rows(table, len(unseen)):
                    table = self._tables[key] = _compacted(shape, experiment.ridge, table, named)
                    unseen = [a for a in named if a not in table.index]
                if unseen:
                    self._grow(shape, experiment.ridge, table, unseen)
                    self._load(experiment, shape, table, unseen)
            self._account(key, table)
            return table

    def _account(self, key: tuple[str, str, str | None], table: ArmTable) -> None:
        """Mark ``table`` most recently used; drop the least recently used over the budget."""
        size = table.state.A_inv.nbytes
        if table.extras:
            size += len(table.extras) * next(iter(table.extras.values())).nbytes
        self._total_bytes += size - self._bytes.get(key, 0)
        self._bytes[key] = size
        self._tables.move_to_end(key)
        while self._total_bytes > self.max_bytes and len(self._tables) > 1:
            old, _ = self._tables.popitem(last=False)
            self._total_bytes -= self._bytes.pop(old)

    def invalidate(self, experiment: str) -> None:
        """Have the next ``table`` of ``experiment`` look for newer parameters at once."""
        with self._lock:
            for (name, _, _), table in self._tables.items():
                if name == experiment:
                    table.checked_at = float("-inf")

    def refresh(self, experiment: str) -> None:
        """Look for newer parameters of ``experiment`` now, ahead of the next /choose."""
        self.invalidate(experiment)
        latest = self._latest.get(experiment)
        if latest is not None:  # else no /choose asked for it yet: nothing to keep fresh
            self.table(latest)
            if latest.model == HYBRID:
                self.table(latest, part=SHARED_PART)

    def invalidate_all(self) -> None:
        """``invalidate`` every experiment."""
        with self._lock:
            for table in self._tables.values():
                table.checked_at = float("-inf")

    def rows_held(self) -> int:
        """Rows (allocated, spare ones included) of every table held: what the cache costs."""
        with self._lock:
            return sum(len(t.state.n) for t in self._tables.values())

    def scoring_state(self, experiment: Experiment) -> ScoringState:
        """Parameters of ``experiment.arms``, in that order (configured catalogues)."""
        return self.table(experiment).state

    def _new_table(self, shape: TableShape, ridge: float) -> ArmTable:
        arms = list(shape.arms)
        capacity = len(arms) or 64
        return ArmTable(
            arms=arms,
            index={a: i for i, a in enumerate(arms)},
            state=prior_scoring_state(capacity, shape.dim, ridge),
            extras=None if shape.extra is None else {},
        )

    def _grow(self, shape: TableShape, ridge: float, table: ArmTable, new_arms: list[str]) -> None:
        needed = len(table.arms) + len(new_arms)
        capacity = len(table.state.n)
        if needed > capacity:
            added = max(needed, 2 * capacity) - capacity
            extra = prior_scoring_state(added, shape.dim, ridge)
            old = table.state
            table.state = ScoringState(
                A_inv=np.concatenate([old.A_inv, extra.A_inv]),
                theta=np.concatenate([old.theta, extra.theta]),
                n=np.concatenate([old.n, extra.n]),
                successes=np.concatenate([old.successes, extra.successes]),
                failures=np.concatenate([old.failures, extra.failures]),
            )
        for arm in new_arms:
            table.index[arm] = len(table.arms)
            table.arms.append(arm)

    def _load(
        self, experiment: Experiment, shape: TableShape, table: ArmTable, arms: Iterable[str]
    ) -> None:
        """Fetch the arms whose version in Redis differs from the one held."""
        changed = [a for a in arms if table.latest.get(a, 0) != table.versions.get(a, 0)]
        if not changed:
            return
        state = table.state
        for start in range(0, len(changed), LOAD_CHUNK):
            loaded = self.store.load_scoring(
                experiment.name,
                experiment.model_id,
                changed[start : start + LOAD_CHUNK],
                shape.dim,
                shape.extra,
            )
            for arm, params in loaded.items():
                i = table.index[arm]
                state.A_inv[i] = params.A_inv
                state.theta[i] = params.theta
                state.n[i] = params.n
                state.successes[i] = params.successes
                state.failures[i] = params.failures
                if table.extras is not None:
                    table.extras[arm] = params.extra
                table.versions[arm] = params.version


def _too_many_prior_rows(table: ArmTable, adding: int) -> bool:
    """Whether adding rows would leave too many rows of arms that learned nothing.

    ``latest`` (the arms with parameters in Redis) may name arms this table never
    saw, so this undercounts such rows: the bound holds, it just acts later.
    """
    learned = len(table.latest)
    return len(table.arms) + adding - learned > max(SPARE_PRIOR_ROWS, learned)


def _compacted(shape: TableShape, ridge: float, table: ArmTable, keep: Iterable[str]) -> ArmTable:
    """A new table of ``table``'s arms that learned something, and of those in ``keep``.

    A new object, not ``table`` changed: a request of another thread may still be
    scoring with ``table``'s rows.
    """
    wanted = set(keep)
    arms = [a for a in table.arms if a in table.latest or a in table.versions or a in wanted]
    rows = table.rows(arms)
    old = table.state
    capacity = max(len(arms), 64)
    state = prior_scoring_state(capacity, shape.dim, ridge)
    state.A_inv[: len(arms)] = old.A_inv[rows]
    state.theta[: len(arms)] = old.theta[rows]
    state.n[: len(arms)] = old.n[rows]
    state.successes[: len(arms)] = old.successes[rows]
    state.failures[: len(arms)] = old.failures[rows]
    return ArmTable(
        arms=arms,
        index={a: i for i, a in enumerate(arms)},
        state=state,
        extras=(
            None
            if table.extras is None
            else {a: table.extras[a] for a in arms if a in table.extras}
        ),
        versions={a: table.versions[a] for a in arms if a in table.versions},
        latest=table.latest,
        checked_at=table.checked_at,
        generation=table.generation,
    )
