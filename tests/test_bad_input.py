"""Bad input is refused at the edge, and what is accepted is logged as it was answered.

Each case checks the log, not only the answer: what a refused request sent never
reaches the Redis stream, and after the worker drains, Postgres holds exactly
what was acknowledged (issue 17).
"""

from __future__ import annotations

import json
import math

import pytest

from app import create_app, keys
from app.events import RewardEvent, decode
from app.learning_settings import LearningSettings
from app.validation import MAX_DEPTH
from tests.conftest import AUTH, FakeClock, choose, reward, rows

ARM = "job_kitchen"


def post_text(client, route: str, text: str):
    """POST a body given as JSON text (escapes such as \\u0000 stay as written)."""
    return client.post(
        route, data=text.encode(), headers={**AUTH, "Content-Type": "application/json"}
    )


def post_json(client, route: str, body) -> object:
    # the standard library writes U+0000 and lone surrogates as \u escapes
    return post_text(client, route, json.dumps(body))


def error_of(response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code, error
    if field is not None:
        assert error.get("field") == field, error
    return error


def stream_entries(redis_client, experiment: str = "home_feed") -> list:
    return [
        decode(experiment, f, LearningSettings(redis_client))
        for _, f in redis_client.xrange(keys.stream(experiment))
    ]


def nested(levels: int, inner="x"):
    """``inner`` inside ``levels`` lists: nested(2) == [["x"]]."""
    value = inner
    for _ in range(levels):
        value = [value]
    return value


# -- text Postgres cannot store ----------------------------------------------------

CHOOSE, REWARD = (
    {"experiment": "home_feed"},
    {"decision_id": "home_feed:0", "arm": ARM, "reward": 1},
)
UNSTORABLE = [
    ("/choose", {"experiment": "home\0feed"}, "invalid_field", "experiment"),
    ("/choose", {**CHOOSE, "request_id": "nul\0id"}, "invalid_field", "request_id"),
    ("/choose", {**CHOOSE, "context": {"city": "ber\0lin"}}, "invalid_feature", "context.city"),
    ("/choose", {**CHOOSE, "context": {"ci\0ty": "berlin"}}, "invalid_field", "context"),
    ("/choose", {**CHOOSE, "candidates": [ARM + "\0"]}, "invalid_field", "candidates"),
    ("/reward", {**REWARD, "decision_id": "home_feed:\0"}, "invalid_field", "decision_id"),
    ("/reward", {**REWARD, "arm": "\0"}, "invalid_field", "arm"),
]


@pytest.mark.parametrize("route, body, code, field", UNSTORABLE)
def test_nul_in_any_string_is_refused_naming_the_field(
    client, redis_client, route, body, code, field
):
    error_of(post_json(client, route, body), 400, code, field)
    assert stream_entries(redis_client) == []


@pytest.mark.parametrize(
    "route, text",
    [
        ("/choose", '{"experiment": "home_feed", "request_id": "a\\ud800"}'),
        ("/choose", '{"experiment": "home_feed", "context": {"city": "\\udc00"}}'),
        ("/choose", '{"experiment": "home_feed", "context": {"\\ud83d": "berlin"}}'),
        ("/reward", '{"decision_id": "home_feed:\\udfff", "arm": "a", "reward": 1}'),
    ],
)
def test_unpaired_surrogate_is_refused_as_invalid_json(client, redis_client, route, text):
    # orjson refuses them while parsing: they never reach a schema check
    error_of(post_text(client, route, text), 400, "invalid_json")
    assert stream_entries(redis_client) == []


def test_arm_ids_with_a_comma_are_refused(client, redis_client):
    # the Redis scripts keep a decision's shown arms joined by ","
    both = "job_kitchen,job_cleaning"
    error_of(choose(client, candidates=[both]), 400, "invalid_field", "candidates")
    error_of(reward(client, "home_feed:0", both, 1), 400, "invalid_field", "arm")
    assert stream_entries(redis_client) == []


def test_any_other_unicode_reaches_the_log_as_sent(client, worker, engine):
    request_id = "emoji 😀, RTL \u202e, tab \t, newline \n, BOM \ufeff, 中文, \U0010fffd"
    context = {"city": "ber\u200blin \U0001f600 \\u0000 (escaped, not a NUL)", "hour": -0.0}
    response = post_json(
        client,
        "/choose",
        {
            "experiment": "home_feed",
            "request_id": request_id,
            "context": context,
        },
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    worker.run(until_idle=True)
    [logged] = rows(engine, "SELECT decision_id, request_id, context FROM decisions")
    assert logged == {
        "decision_id": response.get_json()["decision_id"],
        "request_id": request_id,
        "context": context,
    }


def test_refused_text_does_not_stop_the_log(client, worker, engine):
    for route, body, _, _ in UNSTORABLE:
        assert post_json(client, route, body).status_code == 400
    decision = choose(client, context={"hour": 9, "city": "berlin"}).get_json()
    arm = decision["arms"][0]["arm"]
    assert reward(client, decision["decision_id"], arm, 1.0).status_code == 202
    worker.run(until_idle=True)
    assert rows(engine, "SELECT decision_id FROM decisions") == [
        {"decision_id": decision["decision_id"]}
    ]
    assert rows(engine, "SELECT decision_id, arm, reward, kind FROM rewards") == [
        {"decision_id": decision["decision_id"], "arm": arm, "reward": 1.0, "kind": "explicit"}
    ]


# -- nesting ----------------------------------------------------------------------


DEEP = [
    ("/choose", {**CHOOSE, "candidates": nested(500)}, "invalid_field", "candidates"),
    ("/choose", {**CHOOSE, "candidates": nested(MAX_DEPTH)}, "invalid_field", "candidates"),
    ("/choose", {**CHOOSE, "context": {"city": nested(500)}}, "invalid_field", "context"),
    ("/choose", {**CHOOSE, "extra": nested(500)}, "invalid_field", "extra"),
    ("/choose", nested(500, CHOOSE), "invalid_body", None),
    ("/reward", {**REWARD, "arm": nested(500)}, "invalid_field", "arm"),
    ("/reward", {**REWARD, "reward": nested(500, 1)}, "invalid_field", "reward"),
]


@pytest.mark.parametrize("route, body, code, field", DEEP)
def test_body_nested_too_deep_returns_400_not_500(client, redis_client, route, body, code, field):
    error = error_of(post_json(client, route, body), 400, code, field)
    assert f"more than {MAX_DEPTH} levels" in error["message"]
    assert stream_entries(redis_client) == []


def test_body_at_the_depth_limit_gets_the_schema_answer(client):
    # candidates nested MAX_DEPTH - 1 deep: the body is MAX_DEPTH levels, and the schema,
    # not the depth bound, answers
    body = {"experiment": "home_feed", "candidates": nested(MAX_DEPTH - 1)}
    error = error_of(post_json(client, "/choose", body), 400, "invalid_field", "candidates")
    assert "levels" not in error["message"]


def test_body_deeper_than_the_json_parser_allows_is_invalid_json(client):
    body = '{"experiment": "home_feed", "candidates": ' + "[" * 2000 + "]" * 2000 + "}"
    error_of(post_text(client, "/choose", body), 400, "invalid_json")


def test_brackets_inside_strings_are_not_nesting(client):
    request_id = "[{" * 64
    response = choose(client, request_id=request_id, context={"city": "[" * 200})
    assert response.status_code == 200, response.get_data(as_text=True)


# -- rewards: -0.0 and late repeats -------------------------------------------------


@pytest.mark.parametrize("first, second", [("-0.0", "0"), ("0.0", "-0"), ("-0", "-0.0")])
def test_negative_zero_and_zero_are_one_reward(client, redis_client, worker, engine, first, second):
    decision = choose(client, context={"hour": 9}).get_json()
    decision_id, arm = decision["decision_id"], decision["arms"][0]["arm"]
    answers = []
    for text in (first, second):
        body = f'{{"decision_id": "{decision_id}", "arm": "{arm}", "reward": {text}}}'
        response = post_text(client, "/reward", body)
        assert response.status_code == 202, response.get_data(as_text=True)
        answers.append(response.get_json())
    assert [a["status"] for a in answers] == ["accepted", "already_recorded"]
    assert all(math.copysign(1.0, a["reward"]) == 1.0 for a in answers)  # 0, never -0
    worker.run(until_idle=True)
    assert rows(engine, "SELECT reward::text AS reward, kind FROM rewards") == [
        {"reward": "0", "kind": "explicit"}
    ]


@pytest.fixture
def timed_client(settings):
    clock = FakeClock()
    return create_app(settings, clock=clock).test_client(), clock


def test_repeated_late_reward_is_answered_already_logged_and_logged_once(
    timed_client, redis_client, worker, engine
):
    client, clock = timed_client
    decision = choose(client, context={"hour": 9}).get_json()
    decision_id, arm = decision["decision_id"], decision["arms"][0]["arm"]
    clock.advance(901)

    first = error_of(reward(client, decision_id, arm, 1.0), 409, "reward_window_closed")
    assert "logged as late" in first["message"]
    for again in (1, 1.0):
        repeat = error_of(reward(client, decision_id, arm, again), 409, "reward_window_closed")
        assert "already logged" in repeat["message"]
    other = error_of(reward(client, decision_id, arm, 0.0), 409, "reward_conflict", "reward")
    assert "late reward 1.0 is already logged" in other["message"]

    late = [e for e in stream_entries(redis_client) if isinstance(e, RewardEvent)]
    assert [(e.kind, e.reward) for e in late] == [("late", 1.0)]
    worker.clock.advance(901)
    worker.run(until_idle=True)
    assert rows(engine, "SELECT kind, reward FROM rewards ORDER BY kind") == [
        {"kind": "default", "reward": 0.0},
        {"kind": "late", "reward": 1.0},
    ]


def test_late_negative_zero_repeats_a_late_zero(timed_client, redis_client):
    client, clock = timed_client
    decision = choose(client, context={"hour": 9}).get_json()
    decision_id, arm = decision["decision_id"], decision["arms"][0]["arm"]
    clock.advance(901)
    error_of(reward(client, decision_id, arm, 0), 409, "reward_window_closed")
    repeat = error_of(reward(client, decision_id, arm, -0.0), 409, "reward_window_closed")
    assert "already logged" in repeat["message"]
    late = [e for e in stream_entries(redis_client) if isinstance(e, RewardEvent)]
    assert len(late) == 1
