"""Bearer-token authentication for every route but health."""

from __future__ import annotations

import hmac

from flask import Flask, current_app, request

from app.errors import ApiError

PUBLIC_ENDPOINTS = frozenset({"health.healthz", "health.readyz"})


def check_key(presented: str, accepted: frozenset[str]) -> bool:
    """True if ``presented`` is one of ``accepted``; compares every key in constant time."""
    found = False
    for key in accepted:
        found |= hmac.compare_digest(presented.encode(), key.encode())
    return found


def register(app: Flask) -> None:
    """Refuse requests without a valid ``Authorization: Bearer <key>``."""

    @app.before_request
    def require_key() -> None:
        if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
            return
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "send an API key as 'Authorization: Bearer <key>'")
        if not check_key(token.strip(), current_app.extensions["banditd"].settings.api_keys):
            raise ApiError(401, "unauthorized", "the API key is not valid")
