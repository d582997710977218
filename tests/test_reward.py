"""POST /reward: accepted once, checked against its decision and its window."""

import pytest

from app import create_app, keys
from app.events import RewardEvent, decode
from app.learning_settings import LearningSettings
from tests.conftest import FakeClock, choose, reward, rows


def rewards_in_stream(redis_client, experiment="home_feed"):
    events = [
        decode(experiment, f, LearningSettings(redis_client))
        for _, f in redis_client.xrange(keys.stream(experiment))
    ]
    return [e for e in events if isinstance(e, RewardEvent)]


def test_reward_is_accepted_with_202(client, redis_client):
    decision = choose(client, context={"hour": 9}).get_json()
    arm = decision["arms"][0]["arm"]
    response = reward(client, decision["decision_id"], arm, 1.0)
    assert response.status_code == 202
    assert response.get_json()["status"] == "accepted"
    [event] = rewards_in_stream(redis_client)
    assert (event.decision_id, event.arm, event.reward, event.kind) == (
        decision["decision_id"],
        arm,
        1.0,
        "explicit",
    )


def test_same_reward_twice_is_counted_once(client, redis_client):
    decision = choose(client, context={"hour": 9}).get_json()
    arm = decision["arms"][0]["arm"]
    assert reward(client, decision["decision_id"], arm, 1).status_code == 202
    again = reward(client, decision["decision_id"], arm, 1.0)
    assert again.status_code == 202
    assert again.get_json()["status"] == "already_recorded"
    assert len(rewards_in_stream(redis_client)) == 1


def test_each_arm_of_a_slate_takes_its_own_reward(client, redis_client):
    decision = choose(client, context={}, k=2).get_json()
    for arm, value in zip(decision["arms"], (1.0, 0.0)):
        assert reward(client, decision["decision_id"], arm["arm"], value).status_code == 202
    assert len(rewards_in_stream(redis_client)) == 2


@pytest.fixture
def timed_client(settings):
    clock = FakeClock()
    return create_app(settings, clock=clock).test_client(), clock


def test_reward_after_window_returns_409_and_is_logged_late(
    timed_client, redis_client, worker, engine
):
    client, clock = timed_client
    decision = choose(client, context={"hour": 9}).get_json()
    arm = decision["arms"][0]["arm"]
    clock.advance(901)
    response = reward(client, decision["decision_id"], arm, 1.0)
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "reward_window_closed"
    [event] = rewards_in_stream(redis_client)
    assert event.kind == "late"

    worker.clock.advance(901)
    worker.run(until_idle=True)
    logged = rows(engine, "SELECT kind, reward FROM rewards ORDER BY kind")
    assert logged == [{"kind": "default", "reward": 0.0}, {"kind": "late", "reward": 1.0}]
    view = rows(engine, "SELECT reward, reward_kind FROM impression_rewards")
    assert view == [{"reward": 0.0, "reward_kind": "default"}]


def test_reward_after_worker_closed_window_returns_409(client, worker, clock):
    decision = choose(client, context={"hour": 9}).get_json()
    clock.advance(901)
    worker.run(until_idle=True)
    response = reward(client, decision["decision_id"], decision["arms"][0]["arm"], 1.0)
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "reward_window_closed"
