"""Turn request bodies into typed requests, or an ApiError naming the field.

The rules are the request schemas of the published OpenAPI document
(app/openapi.json), compiled to Python by fastjsonschema: what the API
documents is exactly what it accepts. A schema failure becomes an ApiError:

- a missing required field: ``missing_field``; a field not in the schema:
  ``unknown_field``; any other failure of a field: ``invalid_field``;
- a failure inside one context value: ``invalid_feature`` on ``context.<name>``,
  the code the feature encoder uses for the same kind of fault;
- a body that is not a JSON object: ``invalid_body``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import fastjsonschema
import orjson
from flask import Request, g

from app import openapi
from app.errors import ApiError

_FIELD = re.compile(r"[^.\[]+")  # the top-level field of a name like "candidates[3]"


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


def json_body(request: Request) -> Any:
    """The request's parsed JSON; 415 for another content type, 400 for bad JSON.

    Parsed once per request (auth may look at the body before the view does).
    """
    if "banditd_body" in g:
        return g.banditd_body
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    try:
        body = orjson.loads(request.get_data(cache=False))
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc
    g.banditd_body = body
    return body


class RequestValidator:
    """The request checks compiled from one OpenAPI document."""

    def __init__(self, document: dict[str, Any]) -> None:
        self._choose = _compile(document, "ChooseRequest")
        self._reward = _compile(document, "RewardRequest")

    def choose(self, body: Any) -> ChooseRequest:
        """Validate a /choose body."""
        self._choose(body)
        candidates = body.get("candidates")
        return ChooseRequest(
            experiment=body["experiment"],
            context=body["context"],
            candidates=None if candidates is None else tuple(candidates),
            k=int(body["k"]),  # JSON Schema counts 2.0 as an integer
            request_id=body.get("request_id"),
        )

    def reward(self, body: Any) -> RewardRequest:
        """Validate a /reward body."""
        self._reward(body)
        return RewardRequest(
            decision_id=body["decision_id"], arm=body["arm"], reward=float(body["reward"])
        )


def _compile(document: dict[str, Any], name: str) -> Callable[[Any], None]:
    # use_default: fields the schema gives a default (context, k) are filled in.
    check = fastjsonschema.compile(openapi.schema(document, name), use_default=True)

    def validate(body: Any) -> None:
        try:
            check(body)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise _api_error(exc, body) from None

    return validate


def _api_error(exc: fastjsonschema.JsonSchemaValueException, body: Any) -> ApiError:
    # exc.name is "data", "data.k", "data.candidates[3]" or "data.context.<feature>";
    # not exc.path, which would split a feature name that contains a dot.
    where = (exc.name or "data").removeprefix("data").removeprefix(".")
    if not where:
        return _body_error(exc, body)
    if where.startswith("context."):
        return ApiError(400, "invalid_feature", f"{where} must be {_expected(exc)}", where)
    field = _FIELD.match(where).group()
    return ApiError(400, "invalid_field", f"{where} must be {_expected(exc)}", field)


def _body_error(exc: fastjsonschema.JsonSchemaValueException, body: Any) -> ApiError:
    if exc.rule == "type":
        return ApiError(400, "invalid_body", "the body must be a JSON object")
    if exc.rule == "required":
        name = next(n for n in exc.rule_definition if n not in body)
        return ApiError(400, "missing_field", f"{name} is required", name)
    if exc.rule == "additionalProperties":
        allowed = sorted(exc.definition.get("properties", {}))
        name = next(n for n in body if n not in allowed)
        return ApiError(400, "unknown_field", f"unknown field {name!r}; expected {allowed}", name)
    return ApiError(400, "invalid_body", exc.message.replace("data", "the body", 1))


_TYPE_WORDS = {
    "object": "an object",
    "array": "a list",
    "string": "a string",
    "number": "a number",
    "integer": "a whole number",
    "boolean": "true or false",
    "null": "null",
}


def _expected(exc: fastjsonschema.JsonSchemaValueException) -> str:
    """What the failed keyword asks for, in words."""
    rule, limit = exc.rule, exc.rule_definition
    if rule == "type":
        types = limit if isinstance(limit, list) else [limit]
        return " or ".join(_TYPE_WORDS.get(t, t) for t in types)
    words = {
        "minimum": "at least {:g}",
        "maximum": "at most {:g}",
        "minLength": "at least {} characters long",
        "maxLength": "at most {} characters long",
        "minItems": "a list of at least {} items",
        "maxItems": "a list of at most {} items",
        "maxProperties": "an object of at most {} entries",
        "pattern": "a string matching {}",
    }
    if rule in words:
        return words[rule].format(limit)
    if rule == "uniqueItems":
        return "a list without duplicates"
    if rule == "propertyNames":
        low, high = limit.get("minLength", 0), limit.get("maxLength")
        return f"an object whose names are {low} to {high} characters long"
    return f"valid ({rule} {limit})"


_DEFAULT = RequestValidator(openapi.document())


def parse_choose(body: Any) -> ChooseRequest:
    """Validate a /choose body against the published ChooseRequest schema."""
    return _DEFAULT.choose(body)


def parse_reward(body: Any) -> RewardRequest:
    """Validate a /reward body against the published RewardRequest schema."""
    return _DEFAULT.reward(body)
