"""The feature store routes: items and entities put and deleted, their errors, keys, parsing."""

from dataclasses import replace

import orjson
import pytest

from app import create_app, openapi
from app.errors import ApiError
from app.features.store import DEFAULT_TTL_SECONDS, entity_key, item_key
from app.validation import parse_choose
from tests.conftest import AUTH, choose, rows


def put(client, path, body, headers=AUTH):
    return client.put(path, json=body, headers=headers)


def error_of(response):
    return response.status_code, response.get_json()["error"]["code"]


def stored(redis_client, key):
    value = redis_client.get(key)
    return None if value is None else orjson.loads(value)


def test_put_item_stores_its_features_with_a_ttl(client, redis_client):
    body = {"features": {"pay": 14.5, "category": "kitchen"}, "ttl_seconds": 3600}
    response = put(client, "/items/home_feed/job_81", body)
    assert response.status_code == 200
    assert response.get_json() == {"experiment": "home_feed", "id": "job_81", "ttl_seconds": 3600}
    key = item_key("home_feed", "job_81")
    assert key == "bd:{home_feed}:item:job_81"  # the experiment's hash tag: its cluster slot
    assert stored(redis_client, key) == body["features"]
    assert 3590 < redis_client.ttl(key) <= 3600


def test_put_item_again_replaces_it_and_the_default_ttl_is_a_week(client, redis_client):
    put(client, "/items/home_feed/job_81", {"features": {"pay": 1, "old": "x"}})
    put(client, "/items/home_feed/job_81", {"features": {"pay": 2}})
    key = item_key("home_feed", "job_81")
    assert stored(redis_client, key) == {"pay": 2}
    assert DEFAULT_TTL_SECONDS - 10 < redis_client.ttl(key) <= DEFAULT_TTL_SECONDS


def test_documented_default_ttl_is_the_one_applied():
    schemas = openapi.document()["components"]["schemas"]
    assert schemas["TtlSeconds"]["default"] == DEFAULT_TTL_SECONDS


def test_delete_item_says_whether_it_was_there(client, redis_client):
    put(client, "/items/home_feed/job_81", {"features": {"pay": 1}})
    assert client.delete("/items/home_feed/job_81", headers=AUTH).get_json() == {"deleted": True}
    assert redis_client.exists(item_key("home_feed", "job_81")) == 0
    assert client.delete("/items/home_feed/job_81", headers=AUTH).get_json() == {"deleted": False}


def test_items_of_an_unknown_experiment_are_a_404(client):
    response = put(client, "/items/nope/job_81", {"features": {}})
    assert error_of(response) == (404, "unknown_experiment")
    assert error_of(client.delete("/items/nope/job_81", headers=AUTH)) == (
        404,
        "unknown_experiment",
    )
    items = {"items": [{"id": "a", "features": {}}]}
    assert error_of(client.post("/items/nope", json=items, headers=AUTH)) == (
        404,
        "unknown_experiment",
    )


@pytest.mark.parametrize(
    "body, code, field",
    [
        ({}, "missing_field", "features"),
        ({"features": {"pay": 1}, "colour": 1}, "unknown_field", "colour"),
        ({"features": []}, "invalid_field", "features"),
        ({"features": {"pay": [1]}}, "invalid_field", "features"),
        ({"features": {"pay": 1e16}}, "invalid_field", "features"),
        ({"features": {"": 1}}, "invalid_field", "features"),
        ({"features": {"pay": 1}, "ttl_seconds": 0}, "invalid_field", "ttl_seconds"),
        ({"features": {"pay": 1}, "ttl_seconds": 1.5}, "invalid_field", "ttl_seconds"),
        ({"features": {"pay": 1}, "ttl_seconds": 10**9}, "invalid_field", "ttl_seconds"),
        ([], "invalid_body", None),
    ],
)
def test_bad_item_bodies_are_400_naming_the_field(client, redis_client, body, code, field):
    response = put(client, "/items/home_feed/job_81", body)
    assert error_of(response) == (400, code)
    assert response.get_json()["error"].get("field") == field
    assert redis_client.exists(item_key("home_feed", "job_81")) == 0


def test_bad_ids_in_the_path_are_400(client):
    response = put(client, "/items/home_feed/job%2081", {"features": {}})
    assert error_of(response) == (400, "invalid_field")
    assert response.get_json()["error"]["field"] == "item_id"
    response = put(client, "/items/home%20feed/job_81", {"features": {}})
    assert response.get_json()["error"]["field"] == "experiment"
    response = put(client, "/entities/us%20er/u42", {"features": {}})
    assert response.get_json()["error"]["field"] == "kind"
    response = put(client, "/entities/user/u%2042", {"features": {}})
    assert response.get_json()["error"]["field"] == "entity_id"


def test_a_body_that_is_not_json_is_refused(client):
    response = client.put(
        "/items/home_feed/a", data="{", headers=AUTH, content_type="application/json"
    )
    assert error_of(response) == (400, "invalid_json")
    response = client.put("/items/home_feed/a", data="x", headers=AUTH, content_type="text/plain")
    assert error_of(response) == (415, "unsupported_media_type")


def test_bulk_load_of_10000_items_beyond_the_usual_body_limit(client, redis_client):
    items = [
        {"id": f"job_{n}", "features": {"pay": n, "category": "kitchen"}} for n in range(10_000)
    ]
    items[7]["ttl_seconds"] = 60
    body = orjson.dumps({"items": items, "ttl_seconds": 3600})
    assert len(body) > 64 * 1024
    response = client.post(
        "/items/home_feed", data=body, headers=AUTH, content_type="application/json"
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"experiment": "home_feed", "stored": 10_000}
    assert stored(redis_client, item_key("home_feed", "job_9999")) == {
        "pay": 9999,
        "category": "kitchen",
    }
    assert 3590 < redis_client.ttl(item_key("home_feed", "job_0")) <= 3600
    assert 50 < redis_client.ttl(item_key("home_feed", "job_7")) <= 60


def test_bulk_load_counts_an_id_given_twice_once_and_keeps_its_last_features(
    client, redis_client
):
    items = [
        {"id": "job_1", "features": {"pay": 1}},
        {"id": "job_2", "features": {"pay": 2}},
        {"id": "job_1", "features": {"pay": 3}},
    ]
    response = client.post("/items/home_feed", json={"items": items}, headers=AUTH)
    assert response.get_json() == {"experiment": "home_feed", "stored": 2}
    assert stored(redis_client, item_key("home_feed", "job_1")) == {"pay": 3}


def test_bulk_load_limits(client, redis_client):
    one = {"id": "a", "features": {}}
    response = client.post("/items/home_feed", json={"items": [one] * 10_001}, headers=AUTH)
    assert error_of(response) == (400, "invalid_field")
    assert response.get_json()["error"]["field"] == "items"
    response = client.post("/items/home_feed", json={"items": []}, headers=AUTH)
    assert error_of(response) == (400, "invalid_field")
    response = client.post("/items/home_feed", json={"items": [{"id": "a"}]}, headers=AUTH)
    assert error_of(response) == (400, "invalid_field")
    assert redis_client.keys("bd:{home_feed}:item:*") == []
    huge = b'{"items": [' + b'{"id": "a", "features": {"x": "' + b"y" * (17 * 2**20) + b'"}}]}'
    response = client.post(
        "/items/home_feed", data=huge, headers=AUTH, content_type="application/json"
    )
    assert error_of(response) == (413, "request_entity_too_large")
    assert response.get_json()["error"]["message"] == (
        f"request body is larger than {16 * 2**20} bytes"  # the bulk route's own limit
    )
    # the larger limit is the bulk route's only
    response = put(client, "/items/home_feed/a", {"features": {"x": "y" * 70_000}})
    assert response.status_code == 413
    assert response.get_json()["error"]["message"] == "request body is larger than 65536 bytes"


def test_put_and_delete_an_entity(client, redis_client):
    response = put(client, "/entities/user/u42@example.com", {"features": {"age": 31}})
    assert response.get_json() == {
        "kind": "user",
        "id": "u42@example.com",
        "ttl_seconds": DEFAULT_TTL_SECONDS,
    }
    key = entity_key("user", "u42@example.com")
    assert key == "bd:{ent:user:u42@example.com}"  # its own hash tag, in no experiment's slot
    assert stored(redis_client, key) == {"age": 31}
    assert client.delete("/entities/user/u42@example.com", headers=AUTH).get_json() == {
        "deleted": True
    }
    assert redis_client.exists(key) == 0


def scoped(settings, *entries):
    return create_app(replace(settings, api_keys=frozenset(entries))).test_client()


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def test_item_writes_need_the_items_action_on_that_experiment(settings):
    client = scoped(settings, "writer=home_feed:items", "chooser=home_feed:choose|reward|read")
    body = {"features": {"pay": 1}}
    assert put(client, "/items/home_feed/a", body, bearer("writer")).status_code == 200
    assert client.delete("/items/home_feed/a", headers=bearer("writer")).status_code == 200
    items = {"items": [{"id": "a", "features": {}}]}
    assert client.post("/items/home_feed", json=items, headers=bearer("writer")).status_code == 200
    assert error_of(put(client, "/items/push_copy/a", body, bearer("writer"))) == (403, "forbidden")
    assert error_of(put(client, "/items/home_feed/a", body, bearer("chooser"))) == (
        403,
        "forbidden",
    )
    # the writer may not choose; the other actions keep working for their keys
    choose = {"experiment": "home_feed", "context": {"hour": 9}}
    assert client.post("/choose", json=choose, headers=bearer("writer")).status_code == 403
    assert client.post("/choose", json=choose, headers=bearer("chooser")).status_code == 200


def test_entity_writes_need_items_on_every_experiment(settings):
    client = scoped(settings, "one=home_feed:items", "all=*:items")
    body = {"features": {"age": 31}}
    response = put(client, "/entities/user/u42", body, bearer("one"))
    assert error_of(response) == (403, "forbidden")
    assert "every experiment" in response.get_json()["error"]["message"]
    assert put(client, "/entities/user/u42", body, bearer("all")).status_code == 200
    assert client.delete("/entities/user/u42", headers=bearer("all")).status_code == 200


def test_items_writes_need_a_key(client):
    assert error_of(client.put("/items/home_feed/a", json={"features": {}})) == (
        401,
        "unauthorized",
    )
    assert error_of(client.delete("/entities/user/u42")) == (401, "unauthorized")


def test_choose_parses_candidate_objects_and_entities():
    req = parse_choose(
        {
            "experiment": "jobs",
            "candidates": ["job_1", {"id": "job_2", "features": {"pay": 3}}, {"id": "job_3"}],
            "entities": {"user": "u42"},
        }
    )
    assert req.candidates == ("job_1", "job_2", "job_3")
    assert req.inline_features == (None, {"pay": 3}, None)
    assert req.entities == {"user": "u42"}
    plain = parse_choose({"experiment": "jobs", "candidates": ["a", {"id": "b"}]})
    assert (plain.candidates, plain.inline_features, plain.entities) == (("a", "b"), None, None)


@pytest.mark.parametrize(
    "candidates, code, field",
    [
        (["a", {"id": "a"}], "invalid_field", "candidates"),
        ([{"features": {}}], "invalid_field", "candidates"),
        ([{"id": "a", "score": 1}], "invalid_field", "candidates"),
        ([{"id": "a b"}], "invalid_field", "candidates"),
        ([7], "invalid_field", "candidates"),
        ([{"id": "a", "features": {"pay": [1]}}], "invalid_feature", "candidates[0].features.pay"),
    ],
)
def test_bad_candidate_objects_are_400_naming_them(candidates, code, field):
    with pytest.raises(ApiError) as caught:
        parse_choose({"experiment": "jobs", "candidates": candidates})
    assert (caught.value.status, caught.value.code, caught.value.field) == (400, code, field)


@pytest.mark.parametrize(
    "entities", [{"user": 42}, {"us er": "u42"}, {"user": ""}, {f"k{n}": "x" for n in range(17)}]
)
def test_bad_entities_are_400(entities):
    with pytest.raises(ApiError) as caught:
        parse_choose({"experiment": "jobs", "entities": entities})
    assert (caught.value.code, caught.value.field) == ("invalid_field", "entities")


def test_choose_merges_stored_entities_into_the_logged_context(client, worker, engine):
    features = {"city": "hamburg", "hour": 3, "shoe_size": 44}
    assert put(client, "/entities/user/u42", {"features": features}).status_code == 200
    body = {"experiment": "home_feed", "context": {"hour": 9}, "entities": {"user": "u42"}}
    answer = client.post("/choose", json=body, headers=AUTH)
    assert answer.status_code == 200, answer.get_json()
    unknown = {**body, "entities": {"user": "nobody"}}
    assert client.post("/choose", json=unknown, headers=AUTH).status_code == 200
    worker.run(until_idle=True)
    logged = rows(
        engine,
        "SELECT context FROM decisions WHERE decision_id = :d",
        d=answer.get_json()["decision_id"],
    )
    # the request's hour wins; shoe_size is no feature of home_feed and is left out
    assert logged == [{"context": {"city": "hamburg", "hour": 9}}]


JOBS_TOML = """
[experiments.jobs]
policy = "linucb"
arms = "dynamic"
model = "shared"

[experiments.jobs.features]
numeric = ["hour"]

[experiments.jobs.item_features]
numeric = ["pay"]
categorical = { category = ["kitchen", "driver"] }
"""


@pytest.mark.parametrize(
    "features, field",
    [({"pay": "high"}, "features.pay"), ({"category": 3}, "features.category")],
)
def test_item_writes_check_the_declared_item_features(
    settings, tmp_path, redis_client, features, field
):
    path = tmp_path / "jobs.toml"
    path.write_text(JOBS_TOML)
    client = create_app(replace(settings, config_path=str(path))).test_client()
    # a name the experiment does not declare is stored as it is (the store may hold more)
    ok = {"pay": 12.5, "category": "chef", "colour": 1}
    assert put(client, "/items/jobs/job_1", {"features": ok}).status_code == 200
    response = put(client, "/items/jobs/job_2", {"features": features})
    assert error_of(response) == (400, "invalid_feature")
    assert response.get_json()["error"]["field"] == field
    bulk = {"items": [{"id": "job_3", "features": ok}, {"id": "job_4", "features": features}]}
    response = client.post("/items/jobs", json=bulk, headers=AUTH)
    assert error_of(response) == (400, "invalid_feature")
    assert response.get_json()["error"]["field"] == f"items[1].{field}"
    assert redis_client.keys("bd:{jobs}:item:*") == [b"bd:{jobs}:item:job_1"]


def test_schema_errors_say_what_is_allowed_in_plain_words(client):
    # an entity kind with a space: the name's characters are at fault, not its length
    response = choose(client, context={"hour": 3}, entities={"us er": "u42"})
    assert error_of(response) == (400, "invalid_field")
    assert "made of letters, digits, '_', '.' or '-'" in response.get_json()["error"]["message"]
    response = put(client, "/items/home_feed/a", {"features": {}, "ttl_seconds": 31_622_401})
    assert error_of(response) == (400, "invalid_field")
    assert "at most 31622400" in response.get_json()["error"]["message"]  # not 3.16224e+07
