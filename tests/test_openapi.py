"""The OpenAPI document is valid, served without a key, complete, and what validation runs on."""

import re

import pytest
from openapi_spec_validator import validate

from app import openapi
from app.errors import ApiError
from app.validation import RequestValidator

PUBLIC_PATHS = {"/healthz", "/readyz", "/metrics", "/openapi.json"}


def test_document_is_valid_openapi_3_1():
    doc = openapi.document()
    assert doc["openapi"].startswith("3.1.")
    validate(doc)


def test_document_is_served_without_a_key(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == openapi.document()


def test_every_route_is_documented_and_nothing_else(app):
    routes = {
        # Flask writes a path parameter <name> (or <path:name>), OpenAPI {name}
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {
        (path, method) for path, item in openapi.document()["paths"].items() for method in item
    }
    assert documented == routes


def test_public_routes_need_no_key_and_the_others_document_401_and_403():
    doc = openapi.document()
    assert doc["security"] == [{"bearerAuth": []}]
    scheme = doc["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, item in doc["paths"].items():
        for operation in item.values():
            if path in PUBLIC_PATHS:
                assert operation["security"] == []
            else:
                assert "security" not in operation
                assert {"401", "403"} <= set(operation["responses"])


def test_every_error_response_uses_the_error_schema():
    doc = openapi.document()
    shared = doc["components"]["responses"]
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if int(status) < 400 or path == "/readyz":
                    continue  # /readyz answers 503 with its readiness report
                response = shared[response["$ref"].rsplit("/", 1)[1]]
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)


def test_documented_body_limit_is_the_one_enforced(app):
    assert openapi.document()["x-banditd-max-body-bytes"] == app.config["MAX_CONTENT_LENGTH"]


def test_changing_a_limit_in_the_document_changes_validation():
    body = {"experiment": "home_feed", "k": 3, "candidates": ["a", "b", "c"]}
    RequestValidator(openapi.document()).choose(dict(body))

    doc = openapi.document()
    doc["components"]["schemas"]["ChooseRequest"]["properties"]["k"]["maximum"] = 2
    with pytest.raises(ApiError) as caught:
        RequestValidator(doc).choose(dict(body))
    assert (caught.value.code, caught.value.field) == ("invalid_field", "k")

    doc = openapi.document()
    doc["components"]["schemas"]["ArmId"]["maxLength"] = 1
    with pytest.raises(ApiError) as caught:
        RequestValidator(doc).choose({"experiment": "home_feed", "candidates": ["ab"]})
    assert (caught.value.code, caught.value.field) == ("invalid_field", "candidates")


def test_schema_defaults_fill_in_omitted_fields():
    req = RequestValidator(openapi.document()).choose({"experiment": "home_feed"})
    assert (req.context, req.k, req.candidates, req.request_id) == ({}, 1, None, None)


EVERY_OPTIONAL_KEY_TOML = """
[experiments.everything]
policy = "squarecb"
gamma_scale = 30.0
arms = ["a", "b", "c"]
max_arms = 10
reward = { default = 0.0, window_seconds = 60, min = 0.0, max = 1.0 }
forgetting = "auto"
position_weights = [1.0, 0.5]
holdout = 0.1
holdout_policy = "given_order"
segment_by = "city"
max_segments = 5
retention_days = 7

[experiments.everything.features]
numeric = ["hour"]
categorical = { city = ["berlin", "munich"] }

[experiments.items]
policy = "linucb"
arms = "dynamic"
model = "hybrid"
missing_item = "empty"
interactions = { hour = ["pay"] }
reward = { default = 0.0, window_seconds = 60, min = 0.0, max = 1.0 }

[experiments.items.features]
numeric = ["hour"]

[experiments.items.item_features]
numeric = ["pay"]
"""


def test_get_experiments_answers_within_its_schema_with_every_optional_setting(
    client, config_file
):
    import jsonschema

    from tests.conftest import AUTH

    config_file.write_text(EVERY_OPTIONAL_KEY_TOML)
    assert client.application.extensions["banditd"].config.reload_if_changed()
    answer = client.get("/experiments", headers=AUTH)
    assert answer.status_code == 200
    shown = {e["name"]: e for e in answer.json["experiments"]}
    assert set(shown) == {"everything", "items"}
    info = openapi.schema(openapi.document(), "ExperimentInfo")
    for experiment in shown.values():
        jsonschema.validate(experiment, info)
    optional = set(info["properties"]) - set(info["required"])
    present = set(shown["everything"]) | set(shown["items"])
    assert optional <= present  # every optional property of the schema shown by one of them
