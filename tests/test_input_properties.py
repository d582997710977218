"""Property: whatever text and numbers the fields of /choose and /reward carry, the API
answers without a 5xx, and after the worker drains, the log holds exactly what was
acknowledged: each 200 decision in ``decisions`` (with its request_id and context as
sent), each accepted reward in ``rewards``, and nothing else.

Bodies are written with the standard library's JSON encoder, which writes U+0000,
unpaired surrogates and NaN/Infinity as the API's clients could (escapes and bare
tokens). Seeded (``derandomize``), about 300 examples, a few seconds.
"""

from __future__ import annotations

import json
import math

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import AUTH, rows

ARMS = ["job_cleaning", "job_kitchen", "job_warehouse", "short", "friendly"]
CHOOSE_STATUSES = {200, 400, 404, 409, 422}  # 422: a request id reused for another body
REWARD_STATUSES = {202, 400, 404, 409}

# any code point, unpaired surrogates included, with the troublesome ones made common
any_char = st.characters(exclude_categories=())
text = st.one_of(
    st.text(any_char, max_size=12),
    st.sampled_from(["", "\0", "a\0b", "\ud800", "\udfff", "\ud83d\ude00", "a,b", "x" * 129]),
)
numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1e15, 1e15),
    st.sampled_from([0, -0.0, 0.5, 1, 1e15, -1e15, 1.0000001e15, 5e-324, 2]),
)


def mostly(valid: st.SearchStrategy, anything: st.SearchStrategy) -> st.SearchStrategy:
    """``valid`` three times in four: enough requests get through to fill the log."""
    return st.integers(0, 3).flatmap(lambda pick: valid if pick else anything)


experiments = mostly(st.sampled_from(["home_feed", "push_copy"]), text)
known_features = st.fixed_dictionaries(
    {},
    optional={
        "hour": mostly(st.floats(-1e15, 1e15) | st.integers(-(10**15), 10**15), numbers),
        "city": mostly(text, numbers),  # any text is a category (an unknown one counts as none)
    },
)
other_features = mostly(st.just({}), st.dictionaries(text, text | numbers, max_size=2))
contexts = st.tuples(other_features, known_features).map(lambda pair: {**pair[0], **pair[1]})
choose_bodies = st.fixed_dictionaries(
    {"experiment": experiments},
    optional={
        "context": contexts,
        "candidates": mostly(
            st.lists(st.sampled_from(ARMS), min_size=1, max_size=3, unique=True),
            st.lists(st.one_of(st.sampled_from(ARMS), text), max_size=4),
        ),
        "k": mostly(st.sampled_from([1, 2]), numbers),
        "request_id": mostly(st.one_of(st.none(), st.sampled_from(["r1", "r2"]), text), numbers),
    },
)


def post(client, route: str, body: dict):
    """POST ``body`` as the standard library writes it; returns (status, parsed answer)."""
    response = client.post(
        route,
        data=json.dumps(body).encode(),
        headers={**AUTH, "Content-Type": "application/json"},
    )
    return response.status_code, response.get_json()


def as_the_server_parses(body: dict) -> dict:
    """``body`` as the API read it (orjson joins an escaped surrogate pair, for one)."""
    return orjson.loads(json.dumps(body))


def test_any_text_or_number_gets_no_5xx_and_the_log_holds_what_was_acknowledged(
    client, worker, engine
):
    decisions: dict[str, tuple] = {}  # decision_id -> (request_id, context) of its first 200
    rewards: dict[tuple[str, str], float] = {}  # (decision_id, arm) -> reward accepted

    @settings(
        max_examples=300,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        body=choose_bodies,
        reward_value=mostly(st.sampled_from([0, 1, 0.5, -0.0]) | st.floats(0, 1), numbers),
        decision_id=mostly(st.none(), text),  # None: the id /choose returned
        arm=mostly(st.none(), st.sampled_from(ARMS) | text),  # None: the arm it showed first
        repeat_value=st.none() | st.sampled_from([0, -0.0, 1]) | numbers,  # a second reward
    )
    def send(body, reward_value, decision_id, arm, repeat_value):
        status, answer = post(client, "/choose", body)
        assert status in CHOOSE_STATUSES, (status, answer, body)
        if status == 200:
            sent = as_the_server_parses(body)
            decisions.setdefault(
                answer["decision_id"], (sent.get("request_id"), sent.get("context", {}))
            )
        returned, shown = (
            (answer["decision_id"], answer["arms"][0]["arm"])
            if status == 200
            else ("home_feed:0", "job_kitchen")
        )
        reward_body = {
            "decision_id": returned if decision_id is None else decision_id,
            "arm": shown if arm is None else arm,
        }
        for value in (reward_value, repeat_value):
            if value is None:
                continue
            status, answer = post(client, "/reward", {**reward_body, "reward": value})
            assert status in REWARD_STATUSES, (status, answer, reward_body, value)
            if status == 202:
                key = answer["decision_id"], answer["arm"]
                assert answer["reward"] != 0 or math.copysign(1.0, answer["reward"]) == 1.0
                if answer["status"] == "accepted":
                    assert key not in rewards
                    rewards[key] = answer["reward"]
                else:  # already_recorded: the same value (-0.0 is 0), counted once
                    assert rewards[key] == answer["reward"]
            elif status == 409 and answer["error"]["code"] == "reward_conflict":
                sent = as_the_server_parses(reward_body)
                assert rewards[(sent["decision_id"], sent["arm"])] != value

    send()
    assert decisions and rewards, "the strategies never got a request through"
    worker.run(until_idle=True)

    logged = rows(engine, "SELECT decision_id, request_id, context FROM decisions")
    assert {r["decision_id"]: (r["request_id"], r["context"]) for r in logged} == decisions
    logged = rows(engine, "SELECT decision_id, arm, reward, kind FROM rewards")
    assert {r["kind"] for r in logged} <= {"explicit"}
    assert {(r["decision_id"], r["arm"]): r["reward"] for r in logged} == rewards
    assert len(logged) == len(rewards)
