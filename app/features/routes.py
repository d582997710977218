"""The feature store routes: items per experiment (one or in bulk) and entities, put and delete."""

from __future__ import annotations

import re
from typing import Any, Iterable

from flask import Blueprint, Response, current_app, request

from app.api.responses import json_response
from app.config import Experiment, valid_name
from app.errors import ApiError
from app.features.candidates import declared_only, feature_names
from app.features.store import FeatureStore, StoredItem
from app.validation import json_body, schema_check
from bandits import FeatureError

bp = Blueprint("feature_store", __name__)

BULK_MAX_BODY_BYTES = 16 * 1024 * 1024  # 10,000 items of a few dozen features each
ENTITY_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")  # the EntityId schema of app/openapi.json

_check_write = schema_check("FeaturesWrite")
_check_bulk = schema_check("ItemsBulkWrite")


@bp.put("/items/<experiment>/<item_id>")
def put_item(experiment: str, item_id: str) -> Response:
    """Store (replace) one item's features for an experiment."""
    _check_id(experiment, valid_name(experiment), "experiment")
    _check_id(item_id, valid_name(item_id), "item_id")
    body = _write_body()
    _check_item_features(_known_experiment(experiment), [("features", body["features"])])
    item = StoredItem(item_id, body["features"], int(body["ttl_seconds"]))
    _store().put_item(experiment, item)
    return json_response({"experiment": experiment, "id": item_id, "ttl_seconds": item.ttl_seconds})


@bp.post("/items/<experiment>")
def put_items(experiment: str) -> Response:
    """Store (replace) many items' features at once."""
    _check_id(experiment, valid_name(experiment), "experiment")
    request.max_content_length = BULK_MAX_BODY_BYTES
    body = json_body(request)
    _check_bulk(body)
    where = (f"items[{i}].features" for i in range(len(body["items"])))
    features = [item["features"] for item in body["items"]]
    _check_item_features(_known_experiment(experiment), zip(where, features))
    ttl = body["ttl_seconds"]
    latest = {i["id"]: i for i in body["items"]}  # an id given twice: its last item, once
    # int(): JSON Schema counts 60.0 as an integer
    items = (
        StoredItem(i["id"], i["features"], int(i.get("ttl_seconds", ttl)))
        for i in latest.values()
    )
    return json_response(
        {"experiment": experiment, "stored": _store().put_items(experiment, items)}
    )


@bp.delete("/items/<experiment>/<item_id>")
def delete_item(experiment: str, item_id: str) -> Response:
    """Forget one item's stored features."""
    _check_id(experiment, valid_name(experiment), "experiment")
    _check_id(item_id, valid_name(item_id), "item_id")
    _known_experiment(experiment)
    return json_response({"deleted": _store().delete_item(experiment, item_id)})


@bp.put("/entities/<kind>/<entity_id>")
def put_entity(kind: str, entity_id: str) -> Response:
    """Store (replace) one entity's features."""
    _check_entity(kind, entity_id)
    body = _write_body()
    ttl = int(body["ttl_seconds"])
    _store().put_entity(kind, entity_id, body["features"], ttl)
    return json_response({"kind": kind, "id": entity_id, "ttl_seconds": ttl})


@bp.delete("/entities/<kind>/<entity_id>")
def delete_entity(kind: str, entity_id: str) -> Response:
    """Forget one entity's stored features."""
    _check_entity(kind, entity_id)
    return json_response({"deleted": _store().delete_entity(kind, entity_id)})


def _store() -> FeatureStore:
    return FeatureStore(current_app.extensions["banditd"].redis)


def _write_body() -> dict:
    body = json_body(request)
    _check_write(body)  # fills in the default ttl_seconds
    return body


def _known_experiment(name: str) -> Experiment:
    """The configured experiment ``name``; 404 if there is none."""
    return current_app.extensions["banditd"].chooser.experiment(name)


def _check_item_features(
    experiment: Experiment, items: Iterable[tuple[str, dict[str, Any]]]
) -> None:
    """400 ``invalid_feature`` for a declared item feature of the wrong type (or not finite).

    Names the experiment does not declare are kept unchecked: the store may hold more.
    """
    spec = experiment.item_features
    if spec is None:
        return
    names = feature_names(spec)
    for where, features in items:
        try:
            spec.encode(declared_only(features, names))
        except FeatureError as exc:
            field = where + exc.field.removeprefix("context")
            raise ApiError(400, "invalid_feature", f"{field}: {exc.message}", field) from exc


def _check_entity(kind: str, entity_id: str) -> None:
    _check_id(kind, valid_name(kind), "kind")
    valid = ENTITY_ID.fullmatch(entity_id) is not None
    _check_id(entity_id, valid, "entity_id", "letters, digits, _-.:@")


def _check_id(value: str, valid: bool, field: str, chars: str = "letters, digits, _-.") -> None:
    if not valid:
        raise ApiError(400, "invalid_field", f"{field} must be 1-128 characters of {chars}", field)
