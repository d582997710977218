"""Freshness by push: a save the worker publishes makes an API process refresh at once."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import redis

from app import create_app, keys
from tests.conftest import choose, poll, reward


@pytest.fixture
def pushed_app(settings):
    """An app whose periodic model check is an hour away: only a push can refresh it."""
    app = create_app(
        dataclasses.replace(settings, model_refresh_seconds=3600.0),
        rng=np.random.default_rng(7),
    )
    listener = app.extensions["banditd"].saves.start()
    yield app
    listener.stop()


def _subscribed(client: redis.Redis) -> bool:
    return client.pubsub_numsub(keys.models_saved())[0][1] > 0


def _teach_kitchen(client, worker) -> None:
    for _ in range(30):
        decision = choose(client, context={"city": "berlin"}, k=3).get_json()
        for slot in decision["arms"]:
            reward(
                client, decision["decision_id"], slot["arm"], float(slot["arm"] == "job_kitchen")
            )
    worker.run(until_idle=True)


def test_a_published_save_refreshes_the_api_model_at_once(pushed_app, worker, redis_client):
    client = pushed_app.test_client()
    poll(lambda: _subscribed(redis_client))
    choose(client, context={"city": "berlin"})  # caches the prior; the next check is in an hour

    _teach_kitchen(client, worker)

    def picks_kitchen() -> bool:
        picks = [
            choose(client, context={"city": "berlin"}).get_json()["arms"][0]["arm"]
            for _ in range(20)
        ]
        return picks == ["job_kitchen"] * 20

    poll(picks_kitchen, timeout=5.0)


def test_a_published_save_is_loaded_before_any_choose_asks(pushed_app, worker, redis_client):
    """The listener fetches the new parameters itself: no /choose waits for them."""
    client = pushed_app.test_client()
    services = pushed_app.extensions["banditd"]
    poll(lambda: _subscribed(redis_client))
    choose(client, context={"city": "berlin"})
    store = services.chooser.cache.store
    loaded_by: list[str] = []  # the thread of each fetch of arm parameters
    fetch = store.load_scoring

    def recorded_fetch(*args, **kwargs):
        loaded_by.append(threading.current_thread().name)
        return fetch(*args, **kwargs)

    store.load_scoring = recorded_fetch  # the real store, its fetches noted
    saves_before = int(redis_client.get(keys.generation("home_feed")) or 0)

    _teach_kitchen(client, worker)

    # every save that changed arms was published once (and bumped the generation once)
    published = int(redis_client.get(keys.generation("home_feed"))) - saves_before
    assert published > 0
    poll(lambda: services.saves.heard >= published, timeout=5.0)
    assert "model-saves" in loaded_by, loaded_by  # the listener's thread fetched them
    table = services.chooser.cache.table(services.chooser.experiment("home_feed"))
    assert table.state.n[table.index["job_kitchen"]] > 0


def test_without_the_push_the_hour_long_check_keeps_the_old_model(settings, worker):
    """The control: the same app with no listener still scores with the prior."""
    app = create_app(
        dataclasses.replace(settings, model_refresh_seconds=3600.0),
        rng=np.random.default_rng(7),
    )
    client = app.test_client()
    choose(client, context={"city": "berlin"})
    _teach_kitchen(client, worker)
    picks = [
        choose(client, context={"city": "berlin"}).get_json()["arms"][0]["arm"] for _ in range(20)
    ]
    assert picks != ["job_kitchen"] * 20


def test_a_save_that_changes_no_arm_is_not_published(pushed_app, worker, redis_client):
    """Decisions alone move the watermark but change no arm: API processes are left alone."""
    client = pushed_app.test_client()
    poll(lambda: _subscribed(redis_client))
    choose(client, context={"city": "berlin"})
    generation = redis_client.get(keys.generation("home_feed"))
    for _ in range(5):
        choose(client, context={"city": "berlin"})
    assert worker.run(until_idle=True) >= 5
    # the publish and the generation's increment go together (ModelStore.save)
    assert redis_client.get(keys.applied("home_feed")) is not None
    assert redis_client.get(keys.generation("home_feed")) == generation


def test_the_listener_subscribes_again_after_its_connection_is_killed(
    pushed_app, worker, redis_client
):
    client = pushed_app.test_client()
    poll(lambda: _subscribed(redis_client))
    choose(client, context={"city": "berlin"})
    for subscriber in redis_client.client_list(_type="pubsub"):  # as when Redis restarts
        redis_client.client_kill_filter(_id=subscriber["id"])

    # a save now may be published before the listener is back; it then checks every table
    _teach_kitchen(client, worker)

    def picks_kitchen() -> bool:
        picks = [
            choose(client, context={"city": "berlin"}).get_json()["arms"][0]["arm"]
            for _ in range(20)
        ]
        return picks == ["job_kitchen"] * 20

    poll(picks_kitchen, timeout=5.0)
