"""The worker: Postgres rows, learned parameters, default rewards, redelivery."""

import numpy as np
import pytest
import redis

from app import keys
from app.event_stream import GROUP
from app.events import decode
from app.lease import LeaseLost, Leases
from app.model_store import ModelStore
from bandits import arm_prior, update
from tests.conftest import TEST_REDIS_URL, choose, reward, rows


def model_id(app) -> str:
    return app.extensions["banditd"].config.current().get("home_feed").model_id


def test_worker_logs_decisions_impressions_rewards_and_config(client, worker, engine):
    decision = choose(
        client, context={"hour": 14, "city": "berlin"}, k=2, request_id="r-1"
    ).get_json()
    first, second = (a["arm"] for a in decision["arms"])
    reward(client, decision["decision_id"], first, 1.0)
    # the config version announced by the API and by the worker, a decision, a reward,
    # and the worker's announcement of push_copy's version
    assert worker.run(until_idle=True) == 5

    [d] = rows(engine, "SELECT * FROM decisions")
    assert d["decision_id"] == decision["decision_id"]
    assert d["context"] == {"hour": 14, "city": "berlin"}
    assert d["features"] == [1.0, 14.0, 1.0, 0.0]
    assert d["request_id"] == "r-1"
    assert d["config_version"] == decision["config_version"]
    impressions = rows(
        engine, "SELECT arm, position, score, propensity FROM impressions ORDER BY position"
    )
    assert [(i["arm"], i["position"]) for i in impressions] == [(first, 0), (second, 1)]
    assert [i["propensity"] for i in impressions] == [a["propensity"] for a in decision["arms"]]
    assert rows(engine, "SELECT arm, reward, kind FROM rewards") == [
        {"arm": first, "reward": 1.0, "kind": "explicit"}
    ]
    [c] = rows(engine, "SELECT * FROM config_versions WHERE experiment = 'home_feed'")
    assert c["config_version"] == decision["config_version"]
    assert c["settings"]["policy"] == "linucb"


def test_every_config_version_is_logged_even_without_decisions(worker, engine, config_file):
    from tests.test_config import rewrite
    from tests.conftest import EXPERIMENTS_TOML

    worker.run(until_idle=True)
    rewrite(config_file, EXPERIMENTS_TOML.replace("window_seconds = 60", "window_seconds = 30"))
    worker.run(until_idle=True)
    logged = rows(engine, "SELECT settings FROM config_versions WHERE experiment = 'push_copy'")
    windows = sorted(r["settings"]["reward"]["window_seconds"] for r in logged)
    assert windows == [30.0, 60.0]


def test_worker_learns_exactly_what_a_direct_update_gives(app, client, worker, redis_client):
    sent = []
    for hour in range(6):
        decision = choose(client, context={"hour": hour}).get_json()
        arm = decision["arms"][0]["arm"]
        value = float(hour % 2)
        reward(client, decision["decision_id"], arm, value)
        sent.append((arm, [1.0, float(hour), 0.0, 0.0], value))
    worker.run(until_idle=True)

    expected = {}
    for arm, x, value in sent:
        state = expected.setdefault(arm, arm_prior(4, 1.0))
        update(state, 0, np.array(x), value)
    store = ModelStore(redis_client)
    for arm, state in expected.items():
        learned, version = store.load_learning("home_feed", model_id(app), arm, 4, 1.0)
        assert version == sum(1 for a, _, _ in sent if a == arm)
        np.testing.assert_allclose(learned.A, state.A)
        np.testing.assert_allclose(learned.A_inv, np.linalg.inv(state.A), rtol=1e-9)
        np.testing.assert_allclose(learned.theta, state.theta, rtol=1e-9, atol=1e-12)
        assert learned.n[0] == state.n[0]


def test_choose_uses_learned_parameters(client, worker):
    for _ in range(30):
        decision = choose(client, context={"city": "berlin"}, k=3).get_json()
        for slot in decision["arms"]:
            value = 1.0 if slot["arm"] == "job_kitchen" else 0.0
            reward(client, decision["decision_id"], slot["arm"], value)
    worker.run(until_idle=True)
    picks = [
        choose(client, context={"city": "berlin"}).get_json()["arms"][0]["arm"] for _ in range(20)
    ]
    assert picks.count("job_kitchen") == 20


def test_default_reward_applied_when_window_closes(client, worker, clock, engine):
    decision = choose(client, context={"hour": 1}, k=2).get_json()
    rewarded, silent = (a["arm"] for a in decision["arms"])
    reward(client, decision["decision_id"], rewarded, 1.0)
    worker.run(until_idle=True)
    assert rows(engine, "SELECT count(*) AS n FROM rewards WHERE kind = 'default'") == [{"n": 0}]

    clock.advance(900.5)
    worker.run(until_idle=True)
    logged = rows(engine, "SELECT arm, reward, kind FROM rewards ORDER BY kind")
    assert logged == [
        {"arm": silent, "reward": 0.0, "kind": "default"},
        {"arm": rewarded, "reward": 1.0, "kind": "explicit"},
    ]


def test_redelivered_entries_change_nothing(app, client, worker, redis_client, engine):
    decision = choose(client, context={"hour": 2}).get_json()
    arm = decision["arms"][0]["arm"]
    reward(client, decision["decision_id"], arm, 1.0)
    stream = keys.stream("home_feed")
    entries = redis_client.xrange(stream)
    worker.run(until_idle=True)
    store = ModelStore(redis_client)
    before, version = store.load_learning("home_feed", model_id(app), arm, 4, 1.0)

    # The same entries again, as after a crash between learning and acknowledging.
    events = [
        (entry_id, decode("home_feed", fields, worker.versions)) for entry_id, fields in entries
    ]
    worker.event_log.write(events)
    worker.learner.forget("home_feed")
    worker.learner.learn("home_feed", events)

    after, version_after = store.load_learning("home_feed", model_id(app), arm, 4, 1.0)
    assert version_after == version == 1
    np.testing.assert_array_equal(after.A, before.A)
    assert rows(engine, "SELECT count(*) AS n FROM rewards") == [{"n": 1}]
    assert rows(engine, "SELECT count(*) AS n FROM impressions") == [{"n": 1}]


def test_unacknowledged_entries_of_a_dead_worker_are_processed(
    settings, client, worker, redis_client, engine
):
    worker.step()  # creates the consumer groups
    choose(client, context={"hour": 5})
    # A worker that read the entry and died before acknowledging it:
    redis_client.xreadgroup(GROUP, "dead-worker", {keys.stream("home_feed"): ">"}, count=10)
    worker.release()
    worker.owned.clear()
    worker.run(until_idle=True)
    assert rows(engine, "SELECT count(*) AS n FROM decisions") == [{"n": 1}]
    assert redis_client.xpending(keys.stream("home_feed"), GROUP)["pending"] == 0


def test_only_the_lease_holder_processes_a_stream(client, worker, redis_client, engine):
    other = Leases(redis_client, "another-worker", ttl_ms=60_000)
    assert other.hold("home_feed")
    choose(client, context={"hour": 5})
    worker.run(until_idle=True)
    assert "home_feed" not in worker.owned
    assert rows(engine, "SELECT count(*) AS n FROM decisions") == [{"n": 0}]
    other.release("home_feed")
    worker.run(until_idle=True)
    assert rows(engine, "SELECT count(*) AS n FROM decisions") == [{"n": 1}]


def test_leases_are_renewed_together_as_one_at_a_time(redis_client):
    mine, theirs = Leases(redis_client, "me"), Leases(redis_client, "another-worker")
    assert theirs.hold("push_copy")
    assert mine.take_many(["home_feed", "push_copy", "other"]) == {
        "home_feed": "acquired",
        "push_copy": None,
        "other": "acquired",
    }
    redis_client.pexpire(keys.owner("home_feed"), 100)
    assert mine.take_many(["home_feed", "other"]) == {"home_feed": "renewed", "other": "renewed"}
    assert redis_client.pttl(keys.owner("home_feed")) > 4_000  # extended to the full 5 s again
    assert redis_client.get(keys.owner("push_copy")) == b"another-worker"
    redis_client.delete(keys.owner("other"))  # lapsed: taken again, as "acquired"
    assert mine.take_many(["other"]) == {"other": "acquired"}
    assert mine.take_many([]) == {}


def test_worker_stops_after_max_events(client, worker):
    for _ in range(5):
        choose(client, context={})
    worker.batch_size = 2
    assert worker.run(max_events=2) == 2


def test_worker_recovers_when_its_stream_is_deleted(client, worker, redis_client, engine):
    choose(client, context={"hour": 1})
    worker.run(until_idle=True)
    redis_client.delete(keys.stream("home_feed"))  # as after a flush or a restart without AOF
    choose(client, context={"hour": 2})
    worker.run(until_idle=True)
    assert rows(engine, "SELECT count(*) AS n FROM decisions") == [{"n": 2}]


def test_worker_that_lost_its_lease_saves_no_parameters(app, client, worker, redis_client):
    worker.run(until_idle=True)  # takes the leases
    decision = choose(client, context={"hour": 3}).get_json()
    reward(client, decision["decision_id"], decision["arms"][0]["arm"], 1.0)
    entries = redis_client.xrange(keys.stream("home_feed"))
    events = [
        (entry_id, decode("home_feed", fields, worker.versions)) for entry_id, fields in entries
    ]

    # The lease expired while this worker stalled, and another worker took the stream.
    redis_client.delete(keys.owner("home_feed"))
    assert Leases(redis_client, "another-worker").hold("home_feed")
    with pytest.raises(LeaseLost):
        worker.learner.learn("home_feed", events)
    assert ModelStore(redis_client).versions("home_feed", model_id(app)) == {}


@pytest.mark.parametrize("read", ["read_new", "read_new_few"])
def test_a_worker_without_the_lease_is_delivered_nothing(client, worker, redis_client, read):
    """Both reads of new entries check the lease in the same step as they read."""
    worker.run(until_idle=True)  # takes the leases and creates the group
    choose(client, context={"hour": 3})
    redis_client.delete(keys.owner("home_feed"))
    assert Leases(redis_client, "another-worker").hold("home_feed")
    with pytest.raises(LeaseLost):
        getattr(worker.stream, read)("home_feed", worker.consumer, 10)
    assert redis_client.xpending(keys.stream("home_feed"), GROUP)["pending"] == 0
    assert Leases(redis_client, "another-worker").hold("home_feed")
    delivered = getattr(worker.stream, read)("home_feed", "another-worker", 10)
    entries = delivered if read == "read_new" else delivered.entries
    assert [fields[b"t"] for _, fields in entries] == [b"config", b"decision"]


def _backlog(client, decisions: int) -> int:
    """Decisions with a reward for every other one; returns how many rewards."""
    rewarded = 0
    for i in range(decisions):
        decision = choose(client, context={"hour": i % 24}).get_json()
        if i % 2 == 0:
            reward(client, decision["decision_id"], decision["arms"][0]["arm"], 1.0)
            rewarded += 1
    return rewarded


def _assert_processed_once(app, engine, redis_client, decisions: int, rewards: int):
    assert rows(engine, "SELECT count(*) AS n FROM decisions") == [{"n": decisions}]
    assert rows(engine, "SELECT count(*) AS n FROM rewards") == [{"n": rewards}]
    versions = ModelStore(redis_client).versions("home_feed", model_id(app))
    assert sum(versions.values()) == rewards  # every reward learned once
    assert redis_client.xpending(keys.stream("home_feed"), GROUP)["pending"] == 0


def _stop_after_one_batch(worker):
    """Run until one full batch is processed (the next one is read ahead), then stop."""
    prepare = worker.learner.prepare

    def stop_after_this_batch(*args):
        worker.request_stop()
        return prepare(*args)

    worker.learner.prepare = stop_after_this_batch
    worker.run()
    worker.learner.prepare = prepare
    worker.stop_requested = False


def test_a_backlog_is_read_ahead_batch_by_batch_and_processed_once(
    app, client, worker, redis_client, engine
):
    rewards = _backlog(client, 60)
    worker.batch_size = 7  # full batches, so each one reads the next ahead
    worker.run(until_idle=True)
    _assert_processed_once(app, engine, redis_client, 60, rewards)


def test_a_batch_read_ahead_when_the_worker_stopped_is_processed_by_its_next_run(
    app, client, worker, redis_client, engine
):
    rewards = _backlog(client, 40)
    worker.batch_size = 7
    _stop_after_one_batch(worker)
    # the batch read ahead was delivered to this worker and left unprocessed
    assert redis_client.xpending(keys.stream("home_feed"), GROUP)["pending"] == 7
    worker.run(until_idle=True)
    _assert_processed_once(app, engine, redis_client, 40, rewards)


def test_entries_delivered_by_a_read_whose_reply_was_lost_are_processed_once(
    app, client, worker, redis_client, engine
):
    rewards = _backlog(client, 10)
    calls = []

    def reply_lost_once(read):
        def reading(*args):
            entries = read(*args)  # Redis delivered them to this worker...
            calls.append(len(getattr(entries, "entries", entries)))  # read_new_few: a Delivery
            if len(calls) == 1:  # ...and the connection dropped before the reply arrived
                raise redis.ConnectionError("Connection closed by server.")
            return entries

        return reading

    # both ways of reading new entries: a backlog's (a transaction) and a trickle's (a script)
    worker.stream.read_new = reply_lost_once(worker.stream.read_new)
    worker.stream.read_new_few = reply_lost_once(worker.stream.read_new_few)
    worker.max_backoff = 0.01
    worker.run(until_idle=True)
    assert calls[0] > 0
    _assert_processed_once(app, engine, redis_client, 10, rewards)


def test_recovering_a_stream_with_a_backlog_reads_no_entry_twice(
    app, client, worker, redis_client, engine
):
    rewards = _backlog(client, 10)
    worker.batch_size = 7
    _stop_after_one_batch(worker)  # leaves the batch read ahead pending: recovered next run
    rewards += _backlog(client, 30)  # and a backlog of several batches behind it
    read = []
    prepare = worker.learner.prepare

    def record(experiment, events):
        read.extend(entry_id for entry_id, _ in events if experiment == "home_feed")
        return prepare(experiment, events)

    worker.learner.prepare = record
    worker.run(until_idle=True)
    assert len(read) == len(set(read)), "an entry was read and logged twice"
    _assert_processed_once(app, engine, redis_client, 40, rewards)


def test_a_batch_whose_learning_failed_is_read_again_not_left_pending(
    app, client, worker, redis_client, engine
):
    worker.run(until_idle=True)  # nothing in flight from here on
    rewards = _backlog(client, 6)
    prepare = worker.learner.prepare
    calls = []

    def redis_lost_once(experiment, events):
        calls.append(experiment)
        if len(calls) == 1:
            raise redis.ConnectionError("Connection closed by server.")
        return prepare(experiment, events)

    worker.learner.prepare = redis_lost_once
    worker.max_backoff = 0.01
    worker.run(until_idle=True)
    assert len(calls) > 1
    _assert_processed_once(app, engine, redis_client, 6, rewards)


def test_taking_a_stream_over_removes_the_names_of_dead_workers(
    client, worker, redis_client, engine
):
    stream = keys.stream("home_feed")
    choose(client, context={"hour": 1})
    worker.run(until_idle=True)
    # two workers died: one holding nothing, one with an entry read and not acknowledged
    redis_client.xgroup_createconsumer(stream, GROUP, "dead-1")
    choose(client, context={"hour": 2})
    assert redis_client.xreadgroup(GROUP, "dead-2", {stream: ">"}, count=1)
    redis_client.delete(keys.owner("home_feed"))  # and this worker's lease lapsed meanwhile
    worker.run(until_idle=True)  # takes the stream over again
    names = {c["name"] for c in redis_client.xinfo_consumers(stream, GROUP)}
    assert names == {worker.consumer.encode()}
    assert rows(engine, "SELECT count(*) AS n FROM decisions") == [{"n": 2}]  # dead-2's claimed


def test_a_connection_lost_while_fencing_is_an_outage_not_a_crash(redis_client):
    """redis-py reports a connection lost during WATCH as WatchError; the worker must retry."""
    from app.lease import fence
    from app.poison import RETRYABLE

    client = redis.Redis.from_url(TEST_REDIS_URL)
    Leases(client, "me").hold("home_feed")
    with client.pipeline(transaction=True) as pipe:
        pipe.watch(keys.owner("home_feed"))
        redis_client.client_kill_filter(_id=pipe.client_id())
        with pytest.raises(RETRYABLE) as raised:
            fence(pipe, "home_feed", "me")
    assert not isinstance(raised.value, redis.WatchError)
    client.close()
