"""The API process' item cache: held items are not read again, and never served stale.

Each test plays two processes: ``api`` (a FeatureStore with an ItemCache, as
/choose uses) and ``writer`` (a FeatureStore without one, as the item routes of
any API process write through).
"""

import orjson
import pytest

from app.features.item_cache import (
    CHANGES_KEPT,
    CHANGES_READ,
    ItemCache,
    _after,
    changes_key,
    log_changes,
)
from app.features.store import FeatureStore, StoredItem, item_key
from tests.conftest import FakeClock, poll, round_trips


def features(lookup) -> list:
    return [None if raw is None else orjson.loads(raw) for raw in lookup.raw_items]


def put(writer: FeatureStore, count: int, pay: float = 0.0, ttl: int = 3600) -> list[str]:
    ids = [f"job_{n}" for n in range(count)]
    writer.put_items("jobs", (StoredItem(i, {"pay": pay + n}, ttl) for n, i in enumerate(ids)))
    return ids


@pytest.fixture
def writer(redis_client) -> FeatureStore:
    return FeatureStore(redis_client)


def test_held_items_cost_one_round_trip_and_no_item_read(counted, writer):
    ids = put(writer, 200)
    api = FeatureStore(counted, ItemCache())
    assert features(api.lookup("jobs", ids, {})) == [{"pay": float(n)} for n in range(200)]
    first = counted.info("commandstats")["cmdstat_mget"]["calls"]
    round_trips(counted, reset=True)
    again = api.lookup("jobs", ids[::-1], {"user": "u1"})
    assert round_trips(counted) == 1  # the change read and the entity, one pipeline
    assert features(again) == [{"pay": float(n)} for n in range(199, -1, -1)]
    assert counted.info("commandstats")["cmdstat_mget"]["calls"] == first  # no item read


def test_a_rewritten_item_is_read_again_at_the_next_lookup(counted, writer):
    ids = put(writer, 3)
    api = FeatureStore(counted, ItemCache())
    api.lookup("jobs", ids, {})
    writer.put_item("jobs", StoredItem("job_1", {"pay": 99.0}))
    round_trips(counted, reset=True)
    assert features(api.lookup("jobs", ids, {})) == [{"pay": 0.0}, {"pay": 99.0}, {"pay": 2.0}]
    assert round_trips(counted) == 2  # a held candidate changed: read again
    round_trips(counted, reset=True)
    assert features(api.lookup("jobs", ids, {}))[1] == {"pay": 99.0}  # and held again
    assert round_trips(counted) == 1


def test_a_deleted_item_is_unknown_at_the_next_lookup(redis_client, writer):
    ids = put(writer, 3)
    api = FeatureStore(redis_client, ItemCache())
    api.lookup("jobs", ids, {})
    assert writer.delete_item("jobs", "job_2") is True
    assert features(api.lookup("jobs", ids, {})) == [{"pay": 0.0}, {"pay": 1.0}, None]
    writer.put_item("jobs", StoredItem("job_2", {"pay": 7.0}))  # and known again once written
    assert features(api.lookup("jobs", ids, {}))[2] == {"pay": 7.0}


def test_an_item_is_never_served_past_its_expiry(redis_client, writer):
    put(writer, 1, ttl=1)
    api = FeatureStore(redis_client, ItemCache())
    assert features(api.lookup("jobs", ["job_0"], {})) == [{"pay": 0.0}]

    def forgotten_by_redis() -> bool:
        # until Redis forgets it the cache may serve it (or drop it a moment early); not after
        assert features(api.lookup("jobs", ["job_0"], {})) in ([{"pay": 0.0}], [None])
        return not redis_client.exists(item_key("jobs", "job_0"))

    poll(forgotten_by_redis, timeout=10.0, interval=0.01)
    assert features(api.lookup("jobs", ["job_0"], {})) == [None]


def test_a_flushed_store_drops_what_is_held(redis_client, writer):
    ids = put(writer, 3)
    api = FeatureStore(redis_client, ItemCache())
    api.lookup("jobs", ids, {})
    redis_client.flushdb()  # or a Redis restarted without its data
    assert features(api.lookup("jobs", ids, {})) == [None, None, None]


def test_a_change_stream_trimmed_past_the_process_drops_what_is_held(redis_client, writer):
    ids = put(writer, 3)
    api = FeatureStore(redis_client, ItemCache())
    api.lookup("jobs", ids, {})
    writer.put_item("jobs", StoredItem("job_0", {"pay": 5.0}))
    writer.put_item("jobs", StoredItem("job_9", {"pay": 9.0}))
    redis_client.xtrim(changes_key("jobs"), maxlen=1)  # the change to job_0 is lost
    assert features(api.lookup("jobs", ids, {}))[0] == {"pay": 5.0}


def test_an_item_written_without_a_change_is_read_again_after_max_age(redis_client, writer):
    """What a previous release's API process writes (it logs no change) reaches the cache late."""
    ids = put(writer, 2)
    clock = FakeClock(start=1000.0)
    api = FeatureStore(redis_client, ItemCache(max_age=5.0, clock=clock))
    api.lookup("jobs", ids, {})
    redis_client.set(item_key("jobs", "job_0"), orjson.dumps({"pay": 42.0}), ex=3600)
    assert features(api.lookup("jobs", ids, {}))[0] == {"pay": 0.0}  # held: not read
    clock.advance(5.0)
    assert features(api.lookup("jobs", ids, {}))[0] == {"pay": 42.0}


def test_a_read_that_raced_a_change_is_used_but_not_held(redis_client, writer):
    ids = put(writer, 2)
    cache = ItemCache()
    api = FeatureStore(redis_client, cache)
    api.lookup("jobs", ["job_0"], {})  # in step
    pipe = redis_client.pipeline(transaction=False)
    slow = cache.queue(pipe, "jobs", ids, item_key)  # job_1 to read
    replies = pipe.execute()
    writer.put_item("jobs", StoredItem("job_1", {"pay": 11.0}))
    api.lookup("jobs", ["job_0"], {})  # another request applies that change first
    values, stale = cache.apply(slow, replies)
    assert orjson.loads(values["job_1"]) == {"pay": 1.0} and stale == []
    # what the slow read saw may be older than a change already applied: not kept
    assert features(api.lookup("jobs", ["job_1"], {})) == [{"pay": 11.0}]


def test_the_cache_holds_at_most_max_items(redis_client, writer):
    ids = put(writer, 150)
    cache = ItemCache(max_items=100)
    api = FeatureStore(redis_client, cache)
    for start in range(0, 150, 50):
        assert features(api.lookup("jobs", ids[start : start + 50], {}))[0] == {"pay": float(start)}
    assert 0 < sum(len(h.items) for h in cache._experiments.values()) <= 100


def test_a_process_too_far_behind_the_changes_drops_what_is_held(redis_client, writer):
    ids = put(writer, 2)
    api = FeatureStore(redis_client, ItemCache())
    api.lookup("jobs", ids, {})
    redis_client.set(item_key("jobs", "job_0"), orjson.dumps({"pay": 42.0}), ex=3600)  # unlogged
    for n in range(CHANGES_READ):
        writer.put_item("jobs", StoredItem(f"other_{n}", {"pay": 1.0}))
    assert features(api.lookup("jobs", ids, {}))[0] == {"pay": 42.0}  # read again: all dropped


def test_writes_keep_the_change_stream_short(redis_client, writer):
    with redis_client.pipeline(transaction=False) as pipe:
        for n in range(CHANGES_KEPT + 300):
            log_changes(pipe, "jobs", [f"job_{n}"])
        pipe.execute()
    put(writer, 10)
    entries = redis_client.xrange(changes_key("jobs"))
    assert entries[-1][1][b"ids"].split(b"\0") == [f"job_{n}".encode() for n in range(10)]
    # trimmed by whole stream nodes (100 entries each), so about CHANGES_KEPT are left
    assert CHANGES_KEPT <= len(entries) <= CHANGES_KEPT + 100


def test_stream_ids_compare_by_time_then_sequence():
    assert _after(b"2-0", b"1-9") and _after(b"1-10", b"1-9") and _after(b"1-0", None)
    assert not _after(b"1-9", b"1-10") and not _after(b"1-1", b"1-1")


def test_the_item_cache_on_a_redis_cluster(cluster_client):
    writer = FeatureStore(cluster_client)
    ids = put(writer, 50)
    api = FeatureStore(cluster_client, ItemCache())
    entities = {f"kind{n}": f"e{n}" for n in range(4)}
    for kind, entity_id in entities.items():
        writer.put_entity(kind, entity_id, {"age": 1}, 60)
    first = api.lookup("jobs", ids, entities)
    assert features(first)[49] == {"pay": 49.0} and first.entities["kind3"] == {"age": 1}
    writer.put_item("jobs", StoredItem("job_49", {"pay": -1.0}))
    assert features(api.lookup("jobs", ids, entities))[49] == {"pay": -1.0}
    writer.delete_item("jobs", "job_0")
    assert features(api.lookup("jobs", ids, {}))[0] is None
