"""POST /choose: what it returns and what it records."""

from app import keys
from app.events import DecisionEvent, decode
from app.learning_settings import LearningSettings
from tests.conftest import AUTH, choose


def stream_events(redis_client, experiment="home_feed"):
    return [
        decode(experiment, fields, LearningSettings(redis_client))
        for _, fields in redis_client.xrange(keys.stream(experiment))
    ]


def test_choose_returns_one_arm_with_score_and_propensity(client):
    response = choose(client, context={"hour": 14, "city": "berlin"})
    assert response.status_code == 200
    body = response.get_json()
    assert body["decision_id"].startswith("home_feed:")
    assert len(body["arms"]) == 1
    arm = body["arms"][0]
    assert arm["arm"] in ("job_cleaning", "job_kitchen", "job_warehouse")
    assert 0 < arm["propensity"] <= 1
    assert isinstance(arm["score"], float)
    assert body["config_version"]


def test_choose_k_returns_ranked_slate_of_distinct_arms(client):
    body = choose(client, context={"hour": 1}, k=3).get_json()
    arms = [a["arm"] for a in body["arms"]]
    assert sorted(arms) == ["job_cleaning", "job_kitchen", "job_warehouse"]
    # the last slot has one arm left to take
    assert body["arms"][-1]["propensity"] == 1.0


def test_candidates_restrict_the_choice(client):
    for _ in range(20):
        body = choose(client, context={}, candidates=["job_kitchen", "job_warehouse"]).get_json()
        assert body["arms"][0]["arm"] in ("job_kitchen", "job_warehouse")


def test_same_request_id_returns_the_same_decision(client, redis_client):
    first = choose(client, context={"hour": 3}, request_id="page-view-1").get_json()
    again = choose(client, context={"hour": 3}, request_id="page-view-1").get_json()
    assert again == first
    decisions = [e for e in stream_events(redis_client) if isinstance(e, DecisionEvent)]
    assert len(decisions) == 1


def test_a_request_id_reused_for_another_body_is_refused(client, redis_client):
    first = choose(client, context={"hour": 3, "city": "berlin"}, request_id="page-view-2")
    assert first.status_code == 200
    # the same body written otherwise (key order) is a retry
    again = client.post(
        "/choose",
        data=b'{"context": {"city": "berlin", "hour": 3}, "request_id": "page-view-2", '
        b'"experiment": "home_feed"}',
        headers=AUTH,
        content_type="application/json",
    )
    assert again.get_json() == first.get_json()
    # and so is a number written another way
    again = choose(client, context={"hour": 3.0, "city": "berlin"}, request_id="page-view-2")
    assert again.get_json() == first.get_json()
    for changed in (
        {"context": {"hour": 4, "city": "berlin"}},
        {"context": {"hour": 3, "city": "berlin"}, "k": 2},
        {"context": {"hour": 3, "city": "berlin"}, "candidates": ["job_cleaning"]},
    ):
        answer = choose(client, request_id="page-view-2", **changed)
        assert answer.status_code == 422
        error = answer.get_json()["error"]
        assert (error["code"], error["field"]) == ("request_id_reused", "request_id")
    decisions = [e for e in stream_events(redis_client) if isinstance(e, DecisionEvent)]
    assert len(decisions) == 1


def test_a_request_id_stored_without_its_fingerprint_still_replays(client, redis_client):
    # stored by the previous release, which kept no fingerprint: a retry gets the answer
    first = choose(client, context={"hour": 3}, request_id="page-view-3").get_json()
    redis_client.delete(keys.request_fingerprint("home_feed", "page-view-3"))
    again = choose(client, context={"hour": 5}, request_id="page-view-3")
    assert again.status_code == 200 and again.get_json() == first


def test_decision_is_queued_with_context_features_and_config_version(client, redis_client):
    body = choose(client, context={"hour": 14, "city": "hamburg"}, k=2).get_json()
    events = stream_events(redis_client)
    assert events[0].config_version == body["config_version"]  # config first, then decisions
    decision = events[1]
    assert isinstance(decision, DecisionEvent)
    assert decision.decision_id == body["decision_id"]
    assert decision.context == {"hour": 14, "city": "hamburg"}
    assert decision.features.tolist() == [1.0, 14.0, 0.0, 1.0]  # intercept, hour, city one-hot
    assert [i.arm for i in decision.impressions] == [a["arm"] for a in body["arms"]]
    assert [i.position for i in decision.impressions] == [0, 1]


def test_missing_features_are_allowed(client):
    assert choose(client, context={}).status_code == 200


def test_experiments_lists_settings_and_version(client):
    body = client.get("/experiments", headers=AUTH).get_json()
    by_name = {e["name"]: e for e in body["experiments"]}
    assert set(by_name) == {"home_feed", "push_copy"}
    home = by_name["home_feed"]
    assert home["policy"] == "linucb"
    assert home["alpha"] == 1.0
    assert home["arms"] == ["job_cleaning", "job_kitchen", "job_warehouse"]
    assert home["reward"]["window_seconds"] == 900
    assert home["config_version"] == choose(client, context={}).get_json()["config_version"]


def test_context_free_policy_chooses(client):
    body = choose(client, experiment="push_copy").get_json()
    assert body["arms"][0]["arm"] in ("short", "friendly")
