"""The running worker under steady traffic: entries arriving close together share one batch."""

from __future__ import annotations

import threading
import time

import pytest

from app import keys
from app.services import build_services
from app.worker import Worker
from tests.conftest import choose, poll, reward


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


def test_waiting_for_entries_gives_the_oldest_append_time(redis_client, settings):
    stream = build_services(settings).stream
    last = {e: redis_client.xadd(keys.stream(e), {"k": "old"}) for e in ("home_feed", "push_copy")}
    assert stream.wait_for_any(last, 50) is None
    later = redis_client.xadd(keys.stream("push_copy"), {"k": "1"})
    redis_client.xadd(keys.stream("home_feed"), {"k": "0"}, id=f"{int(later.split(b'-')[0]) + 5}-0")
    assert stream.wait_for_any(last, 50) == int(later.split(b"-")[0])
