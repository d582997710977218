"""Item and entity features in Redis: writes, deletes, and the one-round-trip lookup.

Each item or entity is one string key holding its features as JSON, with a TTL.
Item keys carry the experiment's hash tag (``bd:{exp}:item:<id>``, as every key
of app/keys.py), so all items of one experiment sit in one Redis Cluster slot and
one MGET reads any number of them. Each write or delete of items also logs
their ids to the experiment's change stream and their expiry times to a sorted
set, in the same transaction, so that an API process can hold what it read
and stay exact (app/features/item_cache.py).

Entity keys belong to no experiment: ``bd:{ent:<kind>:<id>}`` carries a hash tag
of its own, so entities spread over a cluster's slots rather than piling onto
one. The /choose lookup sends the item MGET and the entity GETs as one pipeline:
one round trip to a single Redis; a Redis Cluster client (redis-py's
RedisCluster) splits that pipeline by slot and sends one batch per node.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import orjson

from app.features.item_cache import ItemCache, expiry_key, log_changes, queue_reads

DEFAULT_TTL_SECONDS = 7 * 24 * 3600  # a week: long enough for a job offer, short enough to lapse
MAX_TTL_SECONDS = 366 * 24 * 3600
BULK_CHUNK = 1000  # commands per pipeline batch of a bulk load


def item_key(experiment: str, item_id: str) -> str:
    """The key holding one item's features for ``experiment``."""
    return f"bd:{{{experiment}}}:item:{item_id}"


def entity_key(kind: str, entity_id: str) -> str:
    """The key holding one entity's features (shared by every experiment)."""
    return f"bd:{{ent:{kind}:{entity_id}}}"


@dataclass(frozen=True)
class StoredItem:
    """One item to write: its id, features and time to live."""

    id: str
    features: Mapping[str, Any]
    ttl_seconds: int = DEFAULT_TTL_SECONDS


@dataclass(frozen=True)
class Lookup:
    """What one lookup found: per item id its stored JSON or None, per entity kind its features."""

    raw_items: tuple[bytes | None, ...]
    entities: dict[str, dict[str, Any] | None]

    @property
    def items(self) -> tuple[dict[str, Any] | None, ...]:
        """Per item id its features, or None."""
        return tuple(_decode(v) for v in self.raw_items)


class FeatureStore:
    """Reads and writes item and entity features through one Redis client.

    With ``cache``, item lookups read only what the process does not hold (or
    what changed); without, every lookup reads every item.
    """

    def __init__(self, client, cache: ItemCache | None = None) -> None:
        self.client = client
        self.cache = cache

    def put_item(self, experiment: str, item: StoredItem) -> None:
        """Store (replace) one item's features for ``experiment``."""
        self.put_items(experiment, (item,))

    def put_items(self, experiment: str, items: Iterable[StoredItem]) -> int:
        """Store many items, a transaction per ``BULK_CHUNK``; the number written."""
        written = 0
        chunk: list[StoredItem] = []
        for item in items:
            chunk.append(item)
            if len(chunk) == BULK_CHUNK:
                written += self._write(experiment, chunk)
                chunk = []
        if chunk:
            written += self._write(experiment, chunk)
        return written

    def _write(self, experiment: str, items: list[StoredItem]) -> int:
        now_ms = int(time.time() * 1000)
        expiries = {item.id: now_ms + item.ttl_seconds * 1000 for item in items}
        with self.client.pipeline(transaction=True) as pipe:
            for item in items:
                pipe.set(
                    item_key(experiment, item.id),
                    orjson.dumps(item.features),
                    ex=item.ttl_seconds,
                )
            pipe.zadd(expiry_key(experiment), expiries)
            pipe.zremrangebyscore(expiry_key(experiment), "-inf", now_ms)  # the expired
            log_changes(pipe, experiment, list(expiries))
            pipe.execute()
        return len(items)

    def delete_item(self, experiment: str, item_id: str) -> bool:
        """Forget one item; whether it was stored."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(item_key(experiment, item_id))
            pipe.zrem(expiry_key(experiment), item_id)
            log_changes(pipe, experiment, (item_id,))
            deleted, _, _ = pipe.execute()
        return bool(deleted)

    def put_entity(self, kind: str, entity_id: str, features: Mapping[str, Any], ttl: int) -> None:
        """Store (replace) one entity's features."""
        self.client.set(entity_key(kind, entity_id), orjson.dumps(features), ex=ttl)

    def delete_entity(self, kind: str, entity_id: str) -> bool:
        """Forget one entity; whether it was stored."""
        return bool(self.client.delete(entity_key(kind, entity_id)))

    def lookup(
        self, experiment: str, item_ids: Sequence[str], entities: Mapping[str, str]
    ) -> Lookup:
        """The stored features of ``item_ids`` and of ``entities`` (kind -> id).

        One pipeline: an MGET of the items and a GET per entity; no call at all
        when there is nothing to look up.
        """
        if not item_ids and not entities:
            return Lookup((), {})
        pipe = self.client.pipeline(transaction=False)
        pending = None
        if item_ids and self.cache is not None:
            pending = self.cache.queue(pipe, experiment, item_ids, item_key)
        elif item_ids:
            prefix = item_key(experiment, "")
            # bytes: redis-py passes them through, where it would encode 1,000 str one by one
            # execute_command: a cluster pipeline blocks .mget(), though one slot's MGET is fine
            pipe.execute_command("MGET", *[(prefix + i).encode() for i in item_ids])
        for kind, entity_id in entities.items():
            pipe.get(entity_key(kind, entity_id))
        replies = pipe.execute()
        if pending is not None:
            used = 4 if pending.fetched else 2
            values, stale = self.cache.apply(pending, replies[:used])
            if stale:  # held items this lookup took that changed meanwhile: read them again
                values.update(self._read_items(experiment, stale))
            items = tuple(values[i] for i in item_ids)
        else:
            used = 1 if item_ids else 0
            items = tuple(replies[0]) if item_ids else ()
        found = replies[used:]
        return Lookup(items, {kind: _decode(v) for kind, v in zip(entities, found)})

    def _read_items(self, experiment: str, item_ids: list[str]) -> dict[str, bytes | None]:
        """The stored features of ``item_ids`` (one round trip)."""
        pipe = self.client.pipeline(transaction=False)
        queue_reads(pipe, experiment, item_ids, item_key)
        values, _ = pipe.execute()
        return dict(zip(item_ids, values))


def _decode(value: bytes | None) -> dict[str, Any] | None:
    return None if value is None else orjson.loads(value)
