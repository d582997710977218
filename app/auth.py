"""Bearer-token authentication and key scopes for every route but health and the spec.

A missing or unknown key is a 401; a known key used outside its scope (see
app/settings.py ``parse_api_keys``) is a 403. Keys are compared by their
SHA-256 in constant time, and never logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Sequence

from flask import Flask, request

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
}


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
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "send an API key as 'Authorization: Bearer <key>'")
        key = match_key(token.strip(), keys)
        if key is None:
            raise ApiError(401, "unauthorized", "the API key is not valid")
        if key.grants is None:
            return
        action = ACTIONS.get(request.endpoint)
        if action is None:
            raise ApiError(403, "forbidden", "this route needs an API key without scopes")
        if not key.allows(action, _experiment(action)):
            target = "every experiment" if action == "read" else "this experiment"
            raise ApiError(403, "forbidden", f"this API key may not {action} for {target}")


def _experiment(action: str) -> str | None:
    """The experiment the request acts on; None if it names none (or every one)."""
    if action == "read":
        return None
    body = json_body(request)
    if not isinstance(body, dict):
        return None
    if action == "choose":
        name = body.get("experiment")
        return name if isinstance(name, str) else None
    decision_id = body.get("decision_id")
    return experiment_of(decision_id) if isinstance(decision_id, str) else None
