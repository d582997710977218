"""Candidates resolved for /choose: ids, item features from the request or the store, context."""

import numpy as np
import pytest

from app.config import config_from_text
from app.errors import ApiError
from app.features.candidates import resolve, resolve_parsed
from app.features.store import FeatureStore, StoredItem, entity_key, item_key
from tests.conftest import round_trips

TOML = """
[experiments.jobs]
policy = "linucb"
arms = "dynamic"
model = "shared"
{missing}

[experiments.jobs.features]
numeric = ["hour", "age"]
categorical = {{ city = ["berlin", "hamburg"] }}

[experiments.jobs.item_features]
numeric = ["pay"]
categorical = {{ category = ["kitchen", "driver"] }}

[experiments.push]
policy = "linucb"
arms = ["short", "friendly"]

[experiments.push.features]
numeric = ["age"]
"""


def experiments(missing_item: str | None = None):
    """The jobs (shared model) and push (per-arm) experiments."""
    missing = "" if missing_item is None else f'missing_item = "{missing_item}"'
    return config_from_text(TOML.format(missing=missing), "test")


def test_ids_take_their_features_from_the_store(redis_client):
    jobs = experiments().get("jobs")
    store = FeatureStore(redis_client)
    store.put_item("jobs", StoredItem("job_1", {"pay": 14.5, "category": "kitchen"}))
    store.put_item("jobs", StoredItem("job_2", {"pay": 11, "category": "driver", "colour": "red"}))
    got = resolve(redis_client, jobs, ["job_2", "job_1"], {"hour": 9}, None)
    assert got.ids == ("job_2", "job_1")
    # a stored feature the experiment does not declare is left out
    assert tuple(got.item_features) == (
        {"pay": 11, "category": "driver"},
        {"pay": 14.5, "category": "kitchen"},
    )
    # encoded once here, as /choose scores them
    assert np.array_equal(got.item_vectors, jobs.item_features.encode_many(got.item_features))
    assert got.context == {"hour": 9}


def test_inline_features_win_and_skip_the_store(redis_client):
    jobs = experiments().get("jobs")
    FeatureStore(redis_client).put_item("jobs", StoredItem("job_1", {"pay": 99.0}))
    got = resolve(
        redis_client,
        jobs,
        [{"id": "job_1", "features": {"pay": 12.0}}, {"id": "job_3", "features": {}}],
        {},
        None,
    )
    assert got.ids == ("job_1", "job_3")
    assert tuple(got.item_features) == ({"pay": 12.0}, {})


def test_an_object_without_features_is_looked_up(redis_client):
    jobs = experiments().get("jobs")
    FeatureStore(redis_client).put_item("jobs", StoredItem("job_1", {"pay": 13.0}))
    got = resolve(redis_client, jobs, [{"id": "job_1"}], {}, None)
    assert tuple(got.item_features) == ({"pay": 13.0},)


def test_unknown_item_is_a_400_naming_it(redis_client):
    jobs = experiments().get("jobs")
    FeatureStore(redis_client).put_item("jobs", StoredItem("job_1", {"pay": 13.0}))
    with pytest.raises(ApiError) as caught:
        resolve(redis_client, jobs, ["job_1", "job_404", "job_405"], {}, None)
    error = caught.value
    assert (error.status, error.code, error.field) == (400, "unknown_item", "candidates")
    assert "'job_404'" in error.message and "1 more" in error.message
    assert "'job_1'" not in error.message


def test_unknown_item_has_no_features_when_missing_item_is_empty(redis_client):
    jobs = experiments("empty").get("jobs")
    FeatureStore(redis_client).put_item("jobs", StoredItem("job_1", {"pay": 13.0}))
    got = resolve(redis_client, jobs, ["job_404", "job_1"], {}, None)
    assert tuple(got.item_features) == ({}, {"pay": 13.0})


def test_items_are_per_experiment(redis_client):
    jobs = experiments().get("jobs")
    FeatureStore(redis_client).put_item("other", StoredItem("job_1", {"pay": 13.0}))
    with pytest.raises(ApiError):
        resolve(redis_client, jobs, ["job_1"], {}, None)


def test_entities_merge_under_the_request_context(redis_client):
    jobs = experiments().get("jobs")
    store = FeatureStore(redis_client)
    store.put_entity("user", "u42", {"age": 31, "city": "hamburg", "shoe_size": 44}, 60)
    store.put_item("jobs", StoredItem("job_1", {"pay": 13.0}))
    got = resolve(
        redis_client, jobs, ["job_1"], {"city": "berlin", "hour": 9}, {"user": "u42", "shop": "s1"}
    )
    # the request's city wins; shoe_size is no feature of jobs; the unknown shop adds nothing
    assert got.context == {"age": 31, "city": "berlin", "hour": 9}


def test_a_per_arm_experiment_merges_entities_without_item_lookups(redis_client, counted):
    push = experiments().get("push")
    FeatureStore(redis_client).put_entity("user", "u42", {"age": 31}, 60)
    got = resolve(counted, push, None, {}, {"user": "u42"})
    assert got == type(got)(("short", "friendly"), None, {"age": 31})
    assert round_trips(counted) == 1
    got = resolve(counted, push, ["short"], {}, None)
    assert got.item_features is None and got.ids == ("short",)
    assert round_trips(counted) == 1  # nothing to look up: no call at all


def test_items_and_entities_cost_one_round_trip(redis_client, counted):
    jobs = experiments().get("jobs")
    store = FeatureStore(redis_client)
    store.put_items("jobs", (StoredItem(f"job_{n}", {"pay": float(n)}) for n in range(1000)))
    store.put_entity("user", "u42", {"age": 31}, 60)
    store.put_entity("region", "north", {"hour": 3}, 60)
    ids = [f"job_{n}" for n in range(1000)]
    got = resolve(counted, jobs, ids, {}, {"user": "u42", "region": "north"})
    assert round_trips(counted) == 1
    assert got.item_features[999] == {"pay": 999.0}
    assert got.context == {"age": 31, "hour": 3}


def test_resolve_parsed_takes_ids_and_inline_features(redis_client):
    jobs = experiments().get("jobs")
    FeatureStore(redis_client).put_item("jobs", StoredItem("job_1", {"pay": 13.0}))
    got = resolve_parsed(redis_client, jobs, ("job_1", "job_2"), (None, {"pay": 1.0}), {}, None)
    assert tuple(got.item_features) == ({"pay": 13.0}, {"pay": 1.0})


def test_a_redis_cluster_serves_items_and_entities_from_different_slots(cluster_client):
    from redis.cluster import RedisCluster

    assert isinstance(cluster_client, RedisCluster)
    jobs = experiments().get("jobs")
    store = FeatureStore(cluster_client)
    store.put_items("jobs", (StoredItem(f"job_{n}", {"pay": float(n)}) for n in range(50)))
    entities = {f"kind{n}": f"e{n}" for n in range(6)}
    for n, (kind, entity_id) in enumerate(entities.items()):
        store.put_entity(kind, entity_id, {"age": n, "hour": 10 + n}, 60)
    slots = {cluster_client.keyslot(entity_key(k, e)) for k, e in entities.items()}
    assert len(slots) > 1 and cluster_client.keyslot(item_key("jobs", "job_1")) not in slots
    got = resolve(cluster_client, jobs, [f"job_{n}" for n in range(50)], {"hour": 1}, entities)
    assert got.item_features[49] == {"pay": 49.0}
    assert got.context == {"age": 5, "hour": 1}  # the last entity named wins among entities


def test_an_entity_storing_a_feature_of_the_wrong_type_is_a_400_naming_it(redis_client):
    jobs = experiments().get("jobs")
    FeatureStore(redis_client).put_entity("user", "u42", {"age": "old", "city": "berlin"}, 60)
    with pytest.raises(ApiError) as caught:
        resolve(redis_client, jobs, [{"id": "a", "features": {}}], {}, {"user": "u42"})
    error = caught.value
    assert (error.code, error.field) == ("invalid_feature", "entities.user")
    assert "'u42'" in error.message and "'age'" in error.message
    # a value the request overrides is not used, so it does not matter
    got = resolve(redis_client, jobs, [{"id": "a", "features": {}}], {"age": 3}, {"user": "u42"})
    assert got.context == {"age": 3, "city": "berlin"}
