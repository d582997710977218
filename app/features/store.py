"""Item and entity features in Redis: writes, deletes, and the one-round-trip lookup.

Each item or entity is one string key holding its features as JSON, with a TTL.
Item keys carry the experiment's hash tag (``bd:{exp}:item:<id>``, as every key
of app/keys.py), so all items of one experiment sit in one Redis Cluster slot and
one MGET reads any number of them.

Entity keys belong to no experiment: ``bd:{ent:<kind>:<id>}`` carries a hash tag
of its own, so entities spread over a cluster's slots rather than piling onto
one. The /choose lookup sends the item MGET and the entity GETs as one pipeline:
one round trip to a single Redis; a Redis Cluster client (redis-py's
RedisCluster) splits that pipeline by slot and sends one batch per node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import orjson

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
    """Reads and writes item and entity features through one Redis client."""

    def __init__(self, client) -> None:
        self.client = client

    def put_item(self, experiment: str, item: StoredItem) -> None:
        """Store (replace) one item's features for ``experiment``."""
        self.client.set(
            item_key(experiment, item.id), orjson.dumps(item.features), ex=item.ttl_seconds
        )

    def put_items(self, experiment: str, items: Iterable[StoredItem]) -> int:
        """Store many items, in pipelined batches; the number written."""
        written = 0
        pipe = self.client.pipeline(transaction=False)
        for item in items:
            pipe.set(
                item_key(experiment, item.id), orjson.dumps(item.features), ex=item.ttl_seconds
            )
            written += 1
            if written % BULK_CHUNK == 0:
                pipe.execute()
        pipe.execute()
        return written

    def delete_item(self, experiment: str, item_id: str) -> bool:
        """Forget one item; whether it was stored."""
        return bool(self.client.delete(item_key(experiment, item_id)))

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
        if item_ids:
            prefix = item_key(experiment, "")
            # bytes: redis-py passes them through, where it would encode 1,000 str one by one
            # execute_command: a cluster pipeline blocks .mget(), though one slot's MGET is fine
            pipe.execute_command("MGET", *[(prefix + i).encode() for i in item_ids])
        for kind, entity_id in entities.items():
            pipe.get(entity_key(kind, entity_id))
        replies = pipe.execute()
        items = tuple(replies[0]) if item_ids else ()
        found = replies[1:] if item_ids else replies
        return Lookup(items, {kind: _decode(v) for kind, v in zip(entities, found)})


def _decode(value: bytes | None) -> dict[str, Any] | None:
    return None if value is None else orjson.loads(value)
