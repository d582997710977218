"""A decision recorded in a transaction writes what the decision script writes."""

from __future__ import annotations

import time

import numpy as np

from app import keys
from app.event_stream import EventStream
from app.events import DecisionEvent, Impression

EXPERIMENT = "home_feed"


def _event(decision_id: str, now_ms: int, items: np.ndarray | None = None) -> DecisionEvent:
    return DecisionEvent(
        decision_id=decision_id,
        experiment=EXPERIMENT,
        decided_ms=now_ms,
        config_version="v1",
        policy="linucb",
        model_id="m1",
        request_id=None,
        context={"hour": 3},
        features=np.array([1.0, 0.5, -2.0]),
        impressions=(Impression("a", 0, 0.7, 0.9), Impression("b", 1, 0.2, 0.1)),
        propensity_estimated=False,
        segment="s1",
        item_vectors=items,
        candidate_vectors=None if items is None else items[::-1].copy(),
    )


def _recorded(redis_client, stream: EventStream, decision_id: str, now_ms: int, items) -> dict:
    """Record one decision through ``stream``; what Redis then holds for it."""
    deadline = now_ms + 60_000
    result = stream.record_decision(
        _event(decision_id, now_ms, items),
        deadline_ms=deadline,
        default_reward=0.0,
        reward_min=-1.0,
        reward_max=2.5,
        response=b"{}",
    )
    assert result is None
    key = keys.decision(EXPERIMENT, decision_id)
    [(_, fields)] = redis_client.xrevrange(keys.stream(EXPERIMENT), count=1)
    return {
        "hash": redis_client.hgetall(key),
        "ttl_s": round(redis_client.pttl(key) / 1000),
        "deadline": redis_client.zscore(keys.pending(EXPERIMENT), decision_id) - deadline,
        "entry": {k: v.replace(decision_id.encode(), b"ID") for k, v in fields.items()},
    }


def test_a_decision_in_a_transaction_writes_what_the_script_writes(redis_client):
    in_transaction = EventStream(redis_client)
    assert in_transaction._decisions_in_transactions  # one server, no replicas to wait for
    by_script = EventStream(redis_client)
    by_script._decisions_in_transactions = False
    now_ms = int(time.time() * 1000)
    items = np.arange(6, dtype=np.float64).reshape(2, 3)
    for shown in (None, items):
        written = _recorded(
            redis_client, in_transaction, f"{EXPERIMENT}:t{shown is None}", now_ms, shown
        )
        scripted = _recorded(
            redis_client, by_script, f"{EXPERIMENT}:s{shown is None}", now_ms, shown
        )
        assert written == scripted
        assert written["deadline"] == 0
        assert (b"z" in written["hash"]) == (shown is not None)
        assert written["entry"][b"t"] == b"decision"
