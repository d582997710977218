"""Every error the API can return is JSON with a code, a message and, where it applies, a field."""

import orjson
import pytest

from app import openapi
from tests.conftest import AUTH, choose, reward


def error_of(response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["code"] == code
    assert error["message"]
    if field is not None:
        assert error["field"] == field
    return error


def test_unknown_experiment_returns_404(client):
    error_of(choose(client, experiment="nope", context={}), 404, "unknown_experiment", "experiment")


def test_missing_experiment_returns_400(client):
    response = client.post("/choose", json={"context": {}}, headers=AUTH)
    error_of(response, 400, "missing_field", "experiment")


@pytest.mark.parametrize(
    "body, field",
    [
        ({"experiment": 7}, "experiment"),
        ({"experiment": "home_feed", "context": [1]}, "context"),
        ({"experiment": "home_feed", "k": "2"}, "k"),
        ({"experiment": "home_feed", "k": 0}, "k"),
        ({"experiment": "home_feed", "k": True}, "k"),
        ({"experiment": "home_feed", "candidates": "job_kitchen"}, "candidates"),
        ({"experiment": "home_feed", "candidates": []}, "candidates"),
        ({"experiment": "home_feed", "candidates": ["job_kitchen", "job_kitchen"]}, "candidates"),
        ({"experiment": "home_feed", "request_id": ""}, "request_id"),
        ({"experiment": "home_feed", "request_id": "x" * 129}, "request_id"),
    ],
)
def test_ill_typed_choose_field_returns_400_naming_it(client, body, field):
    error_of(client.post("/choose", json=body, headers=AUTH), 400, "invalid_field", field)


def test_unknown_top_level_field_returns_400(client):
    error_of(choose(client, context={}, contxt={}), 400, "unknown_field", "contxt")


def test_unknown_feature_returns_400_naming_it(client):
    error_of(choose(client, context={"weather": "rain"}), 400, "invalid_feature", "context.weather")


@pytest.mark.parametrize("value", ["14", True, None, [1]])
def test_ill_typed_numeric_feature_returns_400(client, value):
    error_of(choose(client, context={"hour": value}), 400, "invalid_feature", "context.hour")


def test_numeric_feature_out_of_float_range_returns_400(client):
    response = client.post(
        "/choose",
        data='{"experiment": "home_feed", "context": {"hour": 1e999}}',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] in ("invalid_json", "invalid_feature")


def test_nan_in_body_returns_400(client):
    response = client.post(
        "/choose",
        data='{"experiment": "home_feed", "context": {"hour": NaN}}',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    error_of(response, 400, "invalid_json")


def test_unknown_candidate_returns_400(client):
    error_of(
        choose(client, candidates=["job_kitchen", "job_astronaut"]),
        400,
        "unknown_arm",
        "candidates",
    )


def test_k_above_candidate_count_returns_400(client):
    error_of(choose(client, candidates=["job_kitchen"], k=2), 400, "invalid_field", "k")


def test_malformed_json_returns_400(client):
    response = client.post(
        "/choose", data="{not json", headers={**AUTH, "Content-Type": "application/json"}
    )
    error_of(response, 400, "invalid_json")


def test_json_that_is_not_an_object_returns_400(client):
    error_of(client.post("/choose", json=[1, 2], headers=AUTH), 400, "invalid_body")


def test_wrong_content_type_returns_415(client):
    response = client.post(
        "/choose",
        data="experiment=home_feed",
        headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
    )
    error_of(response, 415, "unsupported_media_type")


def test_body_over_64_kib_returns_413(client):
    body = {"experiment": "home_feed", "context": {"hour": 1}, "request_id": "x" * (70 * 1024)}
    error_of(client.post("/choose", json=body, headers=AUTH), 413, "request_entity_too_large")


def test_unknown_route_returns_json_404(client):
    error_of(client.get("/nope", headers=AUTH), 404, "not_found")


def test_wrong_method_returns_json_405(client):
    response = client.get("/choose", headers=AUTH)
    error_of(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize(
    "body, code, field",
    [
        ({"arm": "a", "reward": 1}, "missing_field", "decision_id"),
        ({"decision_id": "home_feed:x", "reward": 1}, "missing_field", "arm"),
        ({"decision_id": "home_feed:x", "arm": "a"}, "missing_field", "reward"),
        ({"decision_id": "home_feed:x", "arm": "a", "reward": "1"}, "invalid_field", "reward"),
        ({"decision_id": "home_feed:x", "arm": "a", "reward": True}, "invalid_field", "reward"),
        ({"decision_id": 5, "arm": "a", "reward": 1}, "invalid_field", "decision_id"),
    ],
)
def test_bad_reward_field_returns_400_naming_it(client, body, code, field):
    error_of(client.post("/reward", json=body, headers=AUTH), 400, code, field)


@pytest.mark.parametrize("raw", ["1e999", "-1e999", "1" + "0" * 400, "NaN", "Infinity"])
def test_huge_or_non_finite_reward_returns_400(client, raw):
    response = client.post(
        "/reward",
        data='{"decision_id": "home_feed:x", "arm": "a", "reward": %s}' % raw,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] in ("invalid_json", "invalid_field")


def test_reward_for_unknown_decision_returns_404(client):
    error_of(
        reward(client, "home_feed:0000deadbeef", "job_kitchen", 1.0),
        404,
        "unknown_decision",
        "decision_id",
    )


def test_reward_for_foreign_decision_id_returns_404(client):
    error_of(
        reward(client, "not-one-of-ours", "job_kitchen", 1.0),
        404,
        "unknown_decision",
        "decision_id",
    )


def test_reward_for_arm_not_shown_returns_404(client):
    decision = choose(client, context={"hour": 9}, candidates=["job_kitchen"]).get_json()
    error_of(
        reward(client, decision["decision_id"], "job_cleaning", 1.0), 404, "arm_not_shown", "arm"
    )


def test_reward_outside_range_returns_400(client):
    decision = choose(client, context={"hour": 9}).get_json()
    arm = decision["arms"][0]["arm"]
    error_of(
        reward(client, decision["decision_id"], arm, 1.5), 400, "reward_out_of_range", "reward"
    )
    error_of(
        reward(client, decision["decision_id"], arm, -0.1), 400, "reward_out_of_range", "reward"
    )


def test_different_reward_for_rewarded_impression_returns_409(client):
    decision = choose(client, context={"hour": 9}).get_json()
    arm = decision["arms"][0]["arm"]
    assert reward(client, decision["decision_id"], arm, 1.0).status_code == 202
    error_of(reward(client, decision["decision_id"], arm, 0.0), 409, "reward_conflict", "reward")


def test_unexpected_error_returns_500_without_stack_trace(app, client):
    def explode(_req):
        raise RuntimeError("secret internals")

    app.extensions["banditd"].chooser.choose = explode
    response = choose(client, context={})
    error = error_of(response, 500, "internal_error")
    assert "secret" not in response.get_data(as_text=True)
    assert "Traceback" not in error["message"]


def test_redis_down_returns_503_json(settings):
    from dataclasses import replace

    from app import create_app

    down = create_app(replace(settings, redis_url="redis://127.0.0.1:1/0")).test_client()
    error_of(choose(down, context={}), 503, "storage_unavailable")
    error_of(reward(down, "home_feed:abc", "job_kitchen", 1.0), 503, "storage_unavailable")
    assert down.get("/readyz").status_code == 503


def test_an_outage_is_logged_once_per_interval_not_once_per_request(settings, caplog):
    from dataclasses import replace

    from app import create_app

    down = create_app(replace(settings, redis_url="redis://127.0.0.1:1/0")).test_client()
    with caplog.at_level("ERROR", logger="app.errors"):
        for _ in range(5):
            error_of(choose(down, context={}), 503, "storage_unavailable")
    # (app creation logged too: the accepted config could not be kept in Redis)
    outage = [r for r in caplog.records if r.name == "app.errors"]
    assert [r.getMessage().startswith("redis unavailable") for r in outage] == [True]


def test_a_throttled_log_says_how_many_lines_it_held_back(caplog):
    from app.errors import ThrottledLog

    now = [0.0]
    throttled = ThrottledLog(10.0, clock=lambda: now[0])
    with caplog.at_level("ERROR", logger="app.errors"):
        for t in (0.0, 1.0, 2.0, 9.9, 10.0, 25.0):
            now[0] = t
            throttled.error("down: %s", "x")
    assert [r.getMessage() for r in caplog.records] == [
        "down: x",
        "down: x (3 more like it since the last one)",
        "down: x",
    ]


# Limits: each is read from the published OpenAPI document, so these tests pin the
# document and the behaviour together.


def _schemas() -> dict:
    return openapi.document()["components"]["schemas"]


def _raw(client, path: str, body: dict):
    """POST a body rendered compactly (so a body near a limit stays under 64 KiB)."""
    return client.post(
        path, data=orjson.dumps(body), headers={**AUTH, "Content-Type": "application/json"}
    )


def test_context_with_too_many_features_returns_400(client):
    limit = _schemas()["ChooseRequest"]["properties"]["context"]["maxProperties"]
    at_limit = {f"f{i}": 1 for i in range(limit)}
    # At the limit the schema lets it through and the encoder names an unknown feature.
    error_of(choose(client, context=at_limit), 400, "invalid_feature")
    over = {**at_limit, "hour": 1}
    error = error_of(choose(client, context=over), 400, "invalid_field", "context")
    assert str(limit) in error["message"]


def test_too_many_candidates_returns_400(client):
    limit = _schemas()["ChooseRequest"]["properties"]["candidates"]["maxItems"]
    arms = [f"a{i}" for i in range(limit + 1)]
    at_limit = _raw(client, "/choose", {"experiment": "home_feed", "candidates": arms[:limit]})
    error_of(at_limit, 400, "unknown_arm", "candidates")
    over = _raw(client, "/choose", {"experiment": "home_feed", "candidates": arms})
    error = error_of(over, 400, "invalid_field", "candidates")
    assert str(limit) in error["message"]


def test_k_above_its_limit_returns_400(client):
    limit = _schemas()["ChooseRequest"]["properties"]["k"]["maximum"]
    error = error_of(choose(client, k=limit + 1), 400, "invalid_field", "k")
    assert str(limit) in error["message"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"experiment": "e" * 129}, "experiment"),
        ({"experiment": "home_feed", "candidates": ["c" * 129]}, "candidates"),
        ({"experiment": "home_feed", "context": {"f" * 129: 1}}, "context"),
        ({"experiment": "home feed"}, "experiment"),
    ],
)
def test_over_long_or_ill_formed_choose_id_returns_400(client, body, field):
    error_of(client.post("/choose", json=body, headers=AUTH), 400, "invalid_field", field)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"decision_id": "d" * 161, "arm": "a", "reward": 1}, "decision_id"),
        ({"decision_id": "home_feed:x", "arm": "a" * 129, "reward": 1}, "arm"),
    ],
)
def test_over_long_reward_id_returns_400(client, body, field):
    error_of(client.post("/reward", json=body, headers=AUTH), 400, "invalid_field", field)


def test_longest_ids_are_accepted(client):
    name_limit = _schemas()["ExperimentName"]["maxLength"]
    error_of(choose(client, experiment="e" * name_limit), 404, "unknown_experiment")
    assert choose(client, context={}, request_id="r" * 128).status_code == 200


@pytest.mark.parametrize("value", [1e16, -1e16, 10**20])
def test_huge_feature_value_returns_400_naming_the_feature(client, value):
    error_of(choose(client, context={"hour": value}), 400, "invalid_feature", "context.hour")


def test_feature_value_at_the_number_limit_is_accepted(client):
    limit = _schemas()["FeatureValue"]["maximum"]
    assert choose(client, context={"hour": limit}).status_code == 200
    assert choose(client, context={"hour": -limit}).status_code == 200


def test_over_long_string_feature_returns_400_naming_the_feature(client):
    limit = _schemas()["FeatureValue"]["maxLength"]
    assert choose(client, context={"city": "x" * limit}).status_code == 200
    error_of(
        choose(client, context={"city": "x" * (limit + 1)}), 400, "invalid_feature", "context.city"
    )


@pytest.mark.parametrize("value", [1e16, -1e16, 10**20])
def test_huge_reward_returns_400_naming_it(client, value):
    response = reward(client, "home_feed:x", "job_kitchen", value)
    error_of(response, 400, "invalid_field", "reward")


def test_bad_value_of_a_feature_with_dots_in_its_name_names_the_whole_feature(client):
    response = choose(client, context={"device.os": True})
    error_of(response, 400, "invalid_feature", "context.device.os")
