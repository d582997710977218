"""The running worker under steady traffic: entries arriving close together share one batch."""

from __future__ import annotations

import threading
import time

import pytest

from app import keys
from app.learner import entry_order
from app.services import build_services
from app.worker import Worker
from tests.conftest import choose, poll, reward, rows


def _running(settings, clock, **options):
    worker = Worker.from_services(build_services(settings), clock=clock, block_ms=50, **options)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return worker, thread


@pytest.fixture
def decisions(client):
    """Ten decisions whose entries the worker drains before the rewards arrive."""
    return [choose(client, context={"city": "berlin"}).get_json() for _ in range(10)]


def _saves_for_rewards(client, redis_client, settings, clock, decisions, linger_ms) -> int:
    """Start a running worker, send ten rewards a few ms apart; saves it needed to learn them."""
    worker, thread = _running(settings, clock, linger_ms=linger_ms, housekeeping_seconds=0.5)
    try:
        poll(lambda: redis_client.xlen(keys.stream("home_feed")) == 0)
        before = int(redis_client.get(keys.generation("home_feed")) or 0)
        for d in decisions:
            reward(client, d["decision_id"], d["arms"][0]["arm"], 1.0)
        poll(lambda: redis_client.xlen(keys.stream("home_feed")) == 0)
        return int(redis_client.get(keys.generation("home_feed"))) - before
    finally:
        worker.request_stop()
        thread.join(10)
        worker.close()


def test_rewards_arriving_within_the_linger_are_learned_in_one_save(
    client, redis_client, settings, clock, decisions
):
    saves = _saves_for_rewards(client, redis_client, settings, clock, decisions, linger_ms=500)
    assert saves == 1


def test_without_linger_the_same_rewards_take_several_saves(
    client, redis_client, settings, clock, decisions
):
    """The control: read at once, the worker saves every few rewards."""
    saves = _saves_for_rewards(client, redis_client, settings, clock, decisions, linger_ms=0)
    assert saves > 1


def test_a_running_worker_renews_its_lease_between_housekeeping_passes(
    client, redis_client, settings, clock
):
    """Leases last 5 s and are no longer renewed on every pass: the idle worker still renews."""
    worker, thread = _running(settings, clock, linger_ms=10, housekeeping_seconds=0.2)
    try:
        holder = poll(lambda: redis_client.get(keys.owner("home_feed")))
        taken = time.monotonic()

        # Without a renewal the 5 s lease has at most 3.5 s left 1.5 s after it was
        # taken; renewed every 0.2 s, it always has more than 4.5 s.
        def renewed_after_a_while() -> bool:
            left_ms = redis_client.pttl(keys.owner("home_feed"))
            return time.monotonic() - taken > 1.5 and left_ms > 4500

        poll(renewed_after_a_while, timeout=5.0)
        assert thread.is_alive()
        choose(client, context={"city": "berlin"})
        poll(lambda: redis_client.xlen(keys.stream("home_feed")) == 0)
        assert redis_client.get(keys.owner("home_feed")) == holder
    finally:
        worker.request_stop()
        thread.join(10)
        worker.close()


def test_an_entry_older_than_the_linger_is_read_at_once(
    client, redis_client, settings, clock, decisions
):
    """The linger counts from when the entry was appended, not from when the worker saw it.

    The worker's clock is a minute ahead of the entries' ids, as if each had
    waited a minute already: with a 30 s linger counted from the wake-up, the
    reward would wait 30 s; counted from its append time, it is read at once.
    """
    clock.advance(60.0)
    worker, thread = _running(settings, clock, linger_ms=30_000, housekeeping_seconds=0.5)
    try:
        poll(lambda: redis_client.xlen(keys.stream("home_feed")) == 0, timeout=10.0)
        before = int(redis_client.get(keys.generation("home_feed")) or 0)
        d = decisions[0]
        reward(client, d["decision_id"], d["arms"][0]["arm"], 1.0)
        poll(
            lambda: int(redis_client.get(keys.generation("home_feed")) or 0) > before, timeout=10.0
        )
    finally:
        worker.request_stop()
        thread.join(10)
        worker.close()


def test_waiting_for_entries_names_the_streams_with_news_and_their_append_times(
    redis_client, settings
):
    stream = build_services(settings).stream
    names = ("home_feed", "push_copy", "idle")
    last = {e: redis_client.xadd(keys.stream(e), {"k": "old"}) for e in names}
    assert stream.wait_for_any(last, 50) == {}
    later = redis_client.xadd(keys.stream("push_copy"), {"k": "1"})
    later_ms = int(later.split(b"-")[0])
    redis_client.xadd(keys.stream("home_feed"), {"k": "0"}, id=f"{later_ms + 5}-0")
    assert stream.wait_for_any(last, 50) == {"push_copy": later_ms, "home_feed": later_ms + 5}


def test_a_running_worker_reads_only_the_streams_that_got_entries(
    client, redis_client, settings, clock, engine
):
    """After a wait, only a stream the wait saw news in is read; an idle one costs no read.

    Housekeeping passes (which read every stream) are a minute apart here, so
    only the wait can bring the idle stream's first entry: it must not be missed.
    """
    worker = Worker.from_services(
        build_services(settings), clock=clock, block_ms=50, linger_ms=10, housekeeping_seconds=60
    )
    read = []
    new_entries = worker.new_entries.read

    def recorded(experiment, *args, **kwargs):
        read.append(experiment)
        return new_entries(experiment, *args, **kwargs)

    worker.new_entries.read = recorded
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        poll(lambda: {"home_feed", "push_copy"} <= set(read))  # the first pass reads both
        poll(lambda: redis_client.xlen(keys.stream("home_feed")) == 0)
        read.clear()
        for hour in range(5):
            choose(client, context={"hour": hour})
            poll(lambda: redis_client.xlen(keys.stream("home_feed")) == 0)
        assert "home_feed" in read
        assert "push_copy" not in read
        choose(client, experiment="push_copy")
        poll(lambda: redis_client.xlen(keys.stream("push_copy")) == 0, timeout=5.0)
        assert "push_copy" in read
        logged = "SELECT experiment, count(*) AS n FROM decisions GROUP BY 1 ORDER BY 1"
        assert rows(engine, logged) == [
            {"experiment": "home_feed", "n": 5},
            {"experiment": "push_copy", "n": 1},
        ]
    finally:
        worker.request_stop()
        thread.join(10)
        worker.close()


def test_a_read_that_finds_nothing_new_says_where_the_deliveries_stand(
    client, redis_client, settings, worker
):
    worker.run(until_idle=True)  # takes the leases, creates the groups, reads what is there
    stream = worker.stream
    nothing = stream.read_new_few("home_feed", worker.consumer, 10)
    assert nothing.entries == []
    last = redis_client.xinfo_groups(keys.stream("home_feed"))[0]["last-delivered-id"]
    assert nothing.last_delivered == last
    choose(client, context={"hour": 1})
    assert stream.wait_for_any({"home_feed": nothing.last_delivered}, 1000).keys() == {"home_feed"}
    delivered = stream.read_new_few("home_feed", worker.consumer, 10)
    assert delivered.entries[-1][1][b"t"] == b"decision"
    assert all(
        entry_order(entry_id) > entry_order(nothing.last_delivered)
        for entry_id, _ in delivered.entries
    )
    assert delivered.last_delivered is None


def test_windows_of_several_experiments_close_in_one_call(client, redis_client, settings):
    """The due decisions of every experiment are looked up together; each gets its default."""
    stream = build_services(settings).stream
    choose(client, context={"hour": 1})
    choose(client, experiment="push_copy")
    lengths = {e: redis_client.xlen(keys.stream(e)) for e in ("home_feed", "push_copy")}
    later_ms = int(time.time() * 1000) + 3_600_000  # both windows (15 and 1 min) closed
    assert stream.close_windows_of(["home_feed", "push_copy"], later_ms) == {
        "home_feed": 1,
        "push_copy": 1,
    }
    for experiment, length in lengths.items():
        assert redis_client.xlen(keys.stream(experiment)) == length + 1
        assert reward_kinds(redis_client, experiment) == ["default"]
    assert stream.close_windows_of(["home_feed", "push_copy"], later_ms) == {}


def reward_kinds(redis_client, experiment: str) -> list[str]:
    return [
        fields[b"kind"].decode()
        for _, fields in redis_client.xrange(keys.stream(experiment))
        if fields[b"t"] == b"reward"
    ]


def test_a_running_worker_learns_the_default_rewards_its_housekeeping_appends(
    client, redis_client, settings, clock, engine
):
    """A housekeeping pass closes windows and reads the streams it appended to, though no
    wait saw those entries come."""
    worker, thread = _running(settings, clock, linger_ms=10, housekeeping_seconds=0.1)
    try:
        decision = choose(client, context={"hour": 2}).get_json()
        poll(lambda: redis_client.xlen(keys.stream("home_feed")) == 0)
        clock.advance(901.0)  # past home_feed's 900 s window
        poll(lambda: rows(engine, "SELECT kind, decision_id FROM rewards"), timeout=5.0)
        poll(lambda: redis_client.xlen(keys.stream("home_feed")) == 0)
        assert rows(engine, "SELECT kind, decision_id FROM rewards") == [
            {"kind": "default", "decision_id": decision["decision_id"]}
        ]
    finally:
        worker.request_stop()
        thread.join(10)
        worker.close()
