"""Stored item features held by an API process, exact as of each /choose that uses them.

Reading every candidate's features from Redis on every /choose cost, at 200
candidates on the bench box, about 270 µs of Redis' time (one MGET) and 360 µs
of the API process' (720 µs after an idle gap), for the same few thousand
live items again and again. So each API process keeps what it read, and asks
Redis only what changed since:

- every write or delete of an item (:class:`app.features.store.FeatureStore`)
  appends the ids it changed to the experiment's change stream
  (:func:`changes_key`) and records when the item expires
  (:func:`expiry_key`), in the transaction that writes it;
- a lookup sends, in its one round trip, a read of the changes after the
  last one this process applied, a read of the stream's oldest entry (a
  stream trimmed past that point, or gone with a flush or a Redis that lost
  its data, drops everything held), and the features and expiry times of the
  candidates not held;
- a held item serves until its expiry time and at most ``max_age`` seconds
  after it was read: that bounds how long an item written by a previous
  release (which logs no change) or evicted by Redis can be served;
- a candidate held and used by this request that the changes name is read
  again: a second round trip, only then.

The order inside the round trip is what makes it exact: the changes are read
before the items, and a write changes an item and logs it atomically, so any
write the item read misses was made after the change read and is applied at
the next lookup, before the item is used again.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

# Change entries the stream keeps (approximately): one per item write or delete, one per
# bulk load chunk of up to 1,000 ids (about 10 KB), so at most about 10 MB per experiment.
CHANGES_KEPT = 1_000
# Entries one lookup applies; a process further behind drops what it holds, which costs
# less than reading up to a megabyte of ids on a /choose.
CHANGES_READ = 100
MAX_AGE_SECONDS = 60.0
MAX_ITEMS = 50_000  # held per process, every experiment (about 0.4 KB each at 16 features)
ID_SEPARATOR = b"\0"  # no id holds a NUL (app/openapi.json)
NO_EXPIRY = float("inf")


def changes_key(experiment: str) -> str:
    """The stream of item ids written or deleted in ``experiment``'s feature store."""
    return f"bd:{{{experiment}}}:items:changes"


def expiry_key(experiment: str) -> str:
    """The sorted set of ``experiment``'s items by expiry time (Unix milliseconds)."""
    return f"bd:{{{experiment}}}:items:expiry"


def log_changes(pipe, experiment: str, item_ids: Sequence[str]) -> None:
    """Queue the change entry naming ``item_ids`` (in the writer's transaction)."""
    pipe.xadd(
        changes_key(experiment),
        {b"ids": ID_SEPARATOR.join(i.encode() for i in item_ids)},
        maxlen=CHANGES_KEPT,
        approximate=True,
    )


@dataclass
class _Held:
    """What one process holds of one experiment's items."""

    last_change: bytes | None = None  # the last change applied; None: not in step yet
    epoch: int = 0  # counts the times changes were applied: a read begun before is not kept
    items: dict[str, tuple[bytes, float]] = field(default_factory=dict)  # id -> (JSON, until)


@dataclass
class Pending:
    """One lookup between its round trip's sending and its replies."""

    experiment: str
    found: dict[str, bytes]  # held and valid when the lookup began
    fetched: list[str]  # ids whose features and expiry times were asked, in order
    last_change: bytes | None  # where the change read starts; None: the marker was appended
    epoch: int
    sent_at: float  # monotonic
    sent_wall: float  # Unix seconds


class ItemCache:
    """Item features held by one process, kept in step with the stores' change streams."""

    def __init__(
        self,
        max_items: int = MAX_ITEMS,
        max_age: float = MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_items = max_items
        self.max_age = max_age
        self.clock = clock
        self.wall_clock = wall_clock
        self._experiments: dict[str, _Held] = {}
        self._lock = threading.Lock()  # never held across a round trip

    def queue(self, pipe, experiment: str, item_ids: Sequence[str], item_key: Callable) -> Pending:
        """Take what is held of ``item_ids`` and queue on ``pipe`` the reads of the rest.

        Adds two replies for the changes, then two (the features, the expiry
        times) if anything is to be read: pass them, in order, to ``apply``.
        """
        now = self.clock()
        with self._lock:
            held = self._experiments.setdefault(experiment, _Held())
            last, epoch, items = held.last_change, held.epoch, held.items
            found: dict[str, bytes] = {}
            missing: dict[str, None] = {}
            for item_id in item_ids:
                entry = items.get(item_id)
                if entry is not None and entry[1] > now:
                    found[item_id] = entry[0]
                else:
                    missing[item_id] = None
        key = changes_key(experiment)
        if last is None:
            # in step from here on; the mark lets a flush be seen as the stream's loss
            log_changes(pipe, experiment, ())
        else:
            pipe.xrange(key, b"(" + last, "+", count=CHANGES_READ)
        pipe.xrange(key, "-", "+", count=1)
        fetched = list(missing)
        if fetched:
            queue_reads(pipe, experiment, fetched, item_key)
        return Pending(experiment, found, fetched, last, epoch, now, self.wall_clock())

    def apply(self, pending: Pending, replies: list) -> tuple[dict[str, bytes | None], list[str]]:
        """Bring what is held in step with ``replies`` (``queue``'s, in order).

        Returns every id's features this lookup may use (None: not stored), and
        the ids among those it found held that changed since: read them again
        (``queue_reads``) and use that.
        """
        first, oldest = replies[0], replies[1]
        read = dict(zip(pending.fetched, replies[2])) if pending.fetched else {}
        expiries = replies[3] if pending.fetched else []
        with self._lock:
            held = self._experiments.setdefault(pending.experiment, _Held())
            keep = held.epoch == pending.epoch  # nobody applied changes meanwhile
            if pending.last_change is None:  # ``first`` is the id of the mark appended
                stale = set(pending.found)
                if held.last_change is None:
                    held.items.clear()
                    held.last_change = first
                held.epoch += 1
            elif (
                not oldest
                or _after(oldest[0][0], pending.last_change)
                or len(first) == CHANGES_READ
            ):
                # gone (a flush, a Redis that lost its data), trimmed past what this
                # lookup knew, or too far behind: nothing held can be trusted
                stale = set(pending.found)
                held.items.clear()
                held.last_change = None
                held.epoch += 1
                keep = False
            else:
                changed = {
                    i.decode() for _, entry in first for i in entry[b"ids"].split(ID_SEPARATOR) if i
                }
                stale = changed & pending.found.keys()
                if first:
                    for item_id in changed:
                        held.items.pop(item_id, None)
                    if _after(first[-1][0], held.last_change):
                        held.last_change = first[-1][0]
                    held.epoch += 1
            if keep:
                self._keep(held, pending, read, expiries)
        values: dict[str, bytes | None] = {**pending.found, **read}
        return values, sorted(stale)

    def _keep(self, held: _Held, pending: Pending, read: dict, expiries: list) -> None:
        """Hold what was read, each until it expires or grows too old."""
        fresh = {}
        for item_id, expires_ms in zip(pending.fetched, expiries):
            value = read[item_id]
            if value is None:
                continue  # an unknown id is not remembered: it may be written any moment
            left = NO_EXPIRY if expires_ms is None else float(expires_ms) / 1000 - pending.sent_wall
            if left <= 0:
                continue  # the expiry recorded is older than the value: do not trust it
            fresh[item_id] = (value, pending.sent_at + min(left, self.max_age))
        if not fresh:
            return
        total = sum(len(h.items) for h in self._experiments.values())
        if total + len(fresh) > self.max_items:
            for other in self._experiments.values():  # drop the older half of every experiment
                entries = list(other.items.items())
                other.items = dict(entries[len(entries) // 2 :])
        held.items.update(fresh)


def queue_reads(pipe, experiment: str, item_ids: Sequence[str], item_key: Callable) -> None:
    """Queue the reads of ``item_ids``' features (MGET) and expiry times (ZMSCORE)."""
    encoded = [i.encode() for i in item_ids]
    prefix = item_key(experiment, "").encode()
    # bytes: redis-py passes them through, where it would encode 1,000 str one by one;
    # execute_command: a cluster pipeline blocks .mget(), though one slot's MGET is fine
    pipe.execute_command("MGET", *[prefix + i for i in encoded])
    pipe.execute_command("ZMSCORE", expiry_key(experiment), *encoded)


def _after(entry_id: bytes, other: bytes | None) -> bool:
    """Whether stream entry id ``entry_id`` comes after ``other`` (None: before everything)."""
    if other is None:
        return True
    ms, _, seq = entry_id.partition(b"-")
    other_ms, _, other_seq = other.partition(b"-")
    return (int(ms), int(seq or 0)) > (int(other_ms), int(other_seq or 0))
