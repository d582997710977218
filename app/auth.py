"""Bearer-token authentication and key scopes for every route but health and the spec.

The console (app/console) also accepts HTTP Basic with the key as the password.

A missing or unknown key is a 401; a known key used outside its scope (see
app/settings.py ``parse_api_keys``) is a 403. Keys are compared by their
SHA-256 in constant time, and never logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Sequence

from flask import Flask, Response, g, request

from app.choosing import experiment_of
from app.errors import ApiError
from app.settings import ApiKey
from app.validation import json_body

PUBLIC_ENDPOINTS = frozenset(
    {"health.healthz", "health.readyz", "spec.openapi_document", "metrics.metrics_page"}
)

# The action each protected endpoint performs; a scoped key may use no other endpoint.
ACTIONS = {
    "choose.choose": "choose",
    "reward.reward": "reward",
    "experiments.list_experiments": "read",
    "feature_store.put_item": "items",
    "feature_store.put_items": "items",
    "feature_store.delete_item": "items",
    "feature_store.put_entity": "items",  # entities serve every experiment: they need *:items
    "feature_store.delete_entity": "items",
}

# The console's pages, static files and data (app/console) also take HTTP Basic with the key
# as the password, since a browser cannot send a Bearer header; they all need ``read``: on
# the experiment the URL names, else (the index, static files) on any experiment.
CONSOLE_BLUEPRINTS = frozenset({"console", "console_data"})
BASIC_CHALLENGE = 'Basic realm="banditd console", charset="UTF-8"'


def match_key(presented: str, keys: Sequence[ApiKey]) -> ApiKey | None:
    """The key ``presented`` is, or None; compares with every key, in constant time."""
    digest = hashlib.sha256(presented.encode()).digest()
    found = None
    for key in keys:
        if hmac.compare_digest(digest, key.digest):
            found = key
    return found


def register(app: Flask) -> None:
    """Refuse requests without a valid ``Authorization: Bearer <key>`` that allows them."""
    keys = app.extensions["banditd"].settings.parsed_api_keys()

    @app.before_request
    def require_key() -> None:
        if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
            return
        console = request.blueprint in CONSOLE_BLUEPRINTS
        token = _presented_key(console)
        if token is None:
            how = "as the password of HTTP Basic or " if console else ""
            raise ApiError(
                401, "unauthorized", f"send an API key {how}as 'Authorization: Bearer <key>'"
            )
        key = match_key(token, keys)
        if key is None:
            raise ApiError(401, "unauthorized", "the API key is not valid")
        g.api_key = key
        if key.grants is None:
            return
        if console:
            _require_console_read(key)
            return
        action = ACTIONS.get(request.endpoint)
        if action is None:
            raise ApiError(403, "forbidden", "this route needs an API key without scopes")
        experiment = _experiment(action)
        if not key.allows(action, experiment):
            every = action == "read" or (action == "items" and experiment is None)
            target = "every experiment" if every else "this experiment"
            doing = "write the feature store" if action == "items" else action
            raise ApiError(403, "forbidden", f"this API key may not {doing} for {target}")

    @app.after_request
    def ask_browsers_to_sign_in(response: Response) -> Response:
        if response.status_code == 401 and request.blueprint in CONSOLE_BLUEPRINTS:
            response.headers["WWW-Authenticate"] = BASIC_CHALLENGE
            response.headers.add("WWW-Authenticate", "Bearer")
        return response


def _presented_key(console: bool) -> str | None:
    """The key the request presents: a Bearer token, or on the console a Basic password."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if console and scheme.lower() == "basic":
        credentials = request.authorization
        return credentials.password if credentials and credentials.password else None
    return None


def _require_console_read(key: ApiKey) -> None:
    """403 unless a scoped ``key`` may read the experiment a console URL names (or any one)."""
    name = (request.view_args or {}).get("name")
    if name is None:
        if not any(action == "read" for _, action in key.grants or ()):
            raise ApiError(403, "forbidden", "this API key may not read any experiment")
    elif not key.allows("read", name):
        raise ApiError(403, "forbidden", "this API key may not read this experiment")


def _experiment(action: str) -> str | None:
    """The experiment the request acts on; None if it names none (or every one)."""
    if action == "read":
        return None
    if action == "items":  # from the URL: a bulk body is not read before its larger limit is set
        return (request.view_args or {}).get("experiment")
    body = json_body(request)
    if not isinstance(body, dict):
        return None
    if action == "choose":
        name = body.get("experiment")
        return name if isinstance(name, str) else None
    decision_id = body.get("decision_id")
    return experiment_of(decision_id) if isinstance(decision_id, str) else None
