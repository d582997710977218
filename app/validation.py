"""Turn request bodies into typed requests, or an ApiError naming the field."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson
from flask import Request

from app.errors import ApiError

MAX_ID_LENGTH = 128
MAX_CONTEXT_FEATURES = 256
MAX_CANDIDATES = 10_000


@dataclass(frozen=True)
class ChooseRequest:
    """A validated /choose body."""

    experiment: str
    context: dict[str, Any]
    candidates: tuple[str, ...] | None
    k: int
    request_id: str | None


@dataclass(frozen=True)
class RewardRequest:
    """A validated /reward body."""

    decision_id: str
    arm: str
    reward: float


def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object; 415 for another content type, 400 for bad JSON."""
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    try:
        body = orjson.loads(request.get_data(cache=False))
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    return body


def parse_choose(body: dict[str, Any]) -> ChooseRequest:
    """Validate a /choose body."""
    _only(body, {"experiment", "context", "candidates", "k", "request_id"})
    context = body.get("context", {})
    if not isinstance(context, dict):
        raise ApiError(400, "invalid_field", "context must be an object", "context")
    if len(context) > MAX_CONTEXT_FEATURES:
        raise ApiError(
            400,
            "invalid_field",
            f"context has more than {MAX_CONTEXT_FEATURES} features",
            "context",
        )
    candidates = body.get("candidates")
    if candidates is not None:
        if not isinstance(candidates, list) or not candidates:
            raise ApiError(
                400, "invalid_field", "candidates must be a non-empty list of arm ids", "candidates"
            )
        if len(candidates) > MAX_CANDIDATES:
            raise ApiError(
                400,
                "invalid_field",
                f"candidates has more than {MAX_CANDIDATES} arms",
                "candidates",
            )
        for arm in candidates:
            _string_value(arm, "candidates")
        if len(set(candidates)) != len(candidates):
            raise ApiError(400, "invalid_field", "candidates has duplicates", "candidates")
        candidates = tuple(candidates)
    k = body.get("k", 1)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ApiError(400, "invalid_field", "k must be a whole number >= 1", "k")
    request_id = body.get("request_id")
    if request_id is not None:
        _string_value(request_id, "request_id")
    return ChooseRequest(
        experiment=_string(body, "experiment"),
        context=context,
        candidates=candidates,
        k=k,
        request_id=request_id,
    )


def parse_reward(body: dict[str, Any]) -> RewardRequest:
    """Validate a /reward body."""
    _only(body, {"decision_id", "arm", "reward"})
    reward = body.get("reward")
    if reward is None:
        raise ApiError(400, "missing_field", "reward is required", "reward")
    if isinstance(reward, bool) or not isinstance(reward, (int, float)):
        raise ApiError(400, "invalid_field", "reward must be a number", "reward")
    reward = float(reward) if abs(reward) < 1e300 else math.inf
    if not math.isfinite(reward):
        raise ApiError(400, "invalid_field", "reward must be a finite number", "reward")
    return RewardRequest(
        decision_id=_string(body, "decision_id"), arm=_string(body, "arm"), reward=reward
    )


def _only(body: dict[str, Any], allowed: set[str]) -> None:
    for name in body:
        if name not in allowed:
            raise ApiError(
                400, "unknown_field", f"unknown field {name!r}; expected {sorted(allowed)}", name
            )


def _string(body: dict[str, Any], name: str) -> str:
    if body.get(name) is None:
        raise ApiError(400, "missing_field", f"{name} is required", name)
    return _string_value(body[name], name)


def _string_value(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise ApiError(
            400,
            "invalid_field",
            f"{field} must be a string of 1 to {MAX_ID_LENGTH} characters",
            field,
        )
    return value
