"""Turn request bodies into typed requests, or an ApiError naming the field.

The rules are the request schemas of the published OpenAPI document
(app/openapi.json), compiled to Python by fastjsonschema: what the API
documents is exactly what it accepts. A schema failure becomes an ApiError:

- a missing required field: ``missing_field``; a field not in the schema:
  ``unknown_field``; any other failure of a field: ``invalid_field``;
- a failure inside one context value: ``invalid_feature`` on ``context.<name>``,
  the code the feature encoder uses for the same kind of fault;
- a body that is not a JSON object: ``invalid_body``.

Every string that reaches the log is text Postgres can store. Postgres text and
jsonb reject U+0000, which the schemas refuse (``STORABLE_TEXT``) wherever the
id alphabet does not already exclude it; they cannot hold an unpaired surrogate
either, which orjson refuses while parsing (``invalid_json``). Before any of
that, :func:`json_body` reads at most ``MAX_CONTENT_LENGTH`` bytes, also of a
chunked body, and refuses a body nested deeper than ``MAX_DEPTH``: the schema
check recurses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import fastjsonschema
import orjson
from flask import Request, g
from werkzeug.exceptions import RequestEntityTooLarge

from app import openapi
from app.errors import ApiError

_FIELD = re.compile(r"[^.\[]+")  # the top-level field of a name like "candidates[3]"
_CANDIDATE_FEATURE = re.compile(r"candidates\[\d+\]\.features\.")

# The schemas' pattern for free text. It leaves surrogates to orjson: with a
# \ud800-\udfff range added, schemathesis generated U+0000 for "valid" strings.
STORABLE_TEXT = "^[^\\u0000]*$"
NAME_PATTERN = "^[A-Za-z0-9_.-]+$"  # ids and names: what the schema's pattern allows, in words
NAME_WORDS = "letters, digits, '_', '.' or '-'"
MAX_DEPTH = 32  # nesting levels a body may have (the object itself is one)


@dataclass(frozen=True)
class ChooseRequest:
    """A validated /choose body."""

    experiment: str
    context: dict[str, Any]
    candidates: tuple[str, ...] | None  # the candidates' ids, objects' ids included
    k: int
    request_id: str | None
    unit_id: str | None = None
    # per candidate its inline features, or None (look it up); None if no candidate has any
    inline_features: tuple[dict[str, Any] | None, ...] | None = None
    entities: dict[str, str] | None = None  # entity kind -> id, whose stored features join context


@dataclass(frozen=True)
class RewardRequest:
    """A validated /reward body."""

    decision_id: str
    arm: str
    reward: float


def json_body(request: Request) -> Any:
    """The request's parsed JSON; 415 for another content type, 400 for bad JSON.

    413 for a body over the size limit, 400 for one nested deeper than
    ``MAX_DEPTH``. Parsed once per request (auth may look at the body before
    the view does).
    """
    if "banditd_body" in g:
        return g.banditd_body
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    raw = read_body(request)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc
    check_depth(body, raw)
    g.banditd_body = body
    return body


def read_body(request: Request) -> bytes:
    """The body, or 413 if it is longer than ``request.max_content_length``.

    A body with a Content-Length over the limit is refused by werkzeug before it
    is read. A chunked one has none, and werkzeug would stop reading at the limit
    and return what it read as if it were the whole body; so it is read here, up
    to one byte past the limit.
    """
    limit = request.max_content_length
    environ = request.environ
    if limit is None or request.content_length is not None:
        return request.get_data(cache=False)
    if not environ.get("wsgi.input_terminated"):
        # the server does not end the stream at the body's end: reading it could block
        return request.get_data(cache=False)  # werkzeug gives an empty body
    stream = environ["wsgi.input"]
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        part = stream.read(limit + 1 - size)
        if not part:
            return b"".join(parts)
        parts.append(part)
        size += len(part)
    raise RequestEntityTooLarge()


def check_depth(body: Any, raw: bytes) -> None:
    """Refuse a body nested more than ``MAX_DEPTH`` levels deep (400, naming the field)."""
    # Each level opens a bracket, so a text with few brackets is shallow enough;
    # only the rare body with many (in strings, or long lists of lists) is walked.
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return
    if isinstance(body, dict):
        for name, value in body.items():
            if _deeper_than(value, MAX_DEPTH - 1):
                raise ApiError(
                    400,
                    "invalid_field",
                    f"{name} is nested more than {MAX_DEPTH} levels deep",
                    str(name),
                )
    elif _deeper_than(body, MAX_DEPTH):
        raise ApiError(400, "invalid_body", f"the body is nested more than {MAX_DEPTH} levels deep")


def _deeper_than(value: Any, levels: int) -> bool:
    """Whether ``value`` has more than ``levels`` levels of lists and objects."""
    level = [value] if isinstance(value, (dict, list)) else []
    for _ in range(levels):
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, (dict, list))
        ]
        if not level:
            return False
    return bool(level)


class RequestValidator:
    """The request checks compiled from one OpenAPI document."""

    def __init__(self, document: dict[str, Any]) -> None:
        self._choose = _compile(document, "ChooseRequest")
        self._reward = _compile(document, "RewardRequest")

    def choose(self, body: Any) -> ChooseRequest:
        """Validate a /choose body."""
        self._choose(body)
        candidates, inline = _candidates(body.get("candidates"))
        return ChooseRequest(
            experiment=body["experiment"],
            context=body["context"],
            candidates=candidates,
            k=int(body["k"]),  # JSON Schema counts 2.0 as an integer
            request_id=body.get("request_id"),
            unit_id=body.get("unit_id"),
            inline_features=inline,
            entities=body.get("entities") or None,
        )

    def reward(self, body: Any) -> RewardRequest:
        """Validate a /reward body."""
        self._reward(body)
        # -0.0 is 0: one reward, one canonical value (and string) for conflict checks
        reward = float(body["reward"]) + 0.0
        return RewardRequest(decision_id=body["decision_id"], arm=body["arm"], reward=reward)


def _candidates(
    candidates: list | None,
) -> tuple[tuple[str, ...] | None, tuple[dict[str, Any] | None, ...] | None]:
    """The candidate ids and, if any candidate is an object with features, each one's features."""
    if candidates is None:
        return None, None
    if all(isinstance(c, str) for c in candidates):
        return tuple(candidates), None
    ids = tuple(c if isinstance(c, str) else c["id"] for c in candidates)
    if len(set(ids)) != len(ids):  # uniqueItems cannot see "a" and {"id": "a"} as one
        raise ApiError(
            400, "invalid_field", "candidates must be a list without duplicates", "candidates"
        )
    inline = tuple(None if isinstance(c, str) else c.get("features") for c in candidates)
    return ids, (None if all(f is None for f in inline) else inline)


def schema_check(name: str) -> Callable[[Any], None]:
    """A check of a body against ``components.schemas[name]`` of the published document.

    It fills in defaults and raises the ApiError this module's rules give.
    """
    return _compile(openapi.document(), name)


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
    if exc.rule == "anyOf":
        exc = _branch_error(exc)
    where = (exc.name or "data").removeprefix("data").removeprefix(".")
    if not where:
        return _body_error(exc, body)
    if where.startswith("context.") or _CANDIDATE_FEATURE.match(where):
        return ApiError(400, "invalid_feature", f"{where} must be {_expected(exc)}", where)
    field = _FIELD.match(where).group()
    return ApiError(400, "invalid_field", f"{where} must be {_expected(exc)}", field)


def _branch_error(
    exc: fastjsonschema.JsonSchemaValueException,
) -> fastjsonschema.JsonSchemaValueException:
    """For an anyOf (a candidate: an id or an object), the error of the branch of its JSON type.

    Only on the error path: that branch is compiled again here, to say what is wrong inside it.
    """
    kinds = {str: "string", dict: "object"}
    for branch in exc.rule_definition:
        if branch.get("type") == kinds.get(type(exc.value)):
            try:
                fastjsonschema.validate(branch, exc.value)
            except fastjsonschema.JsonSchemaValueException as inner:
                inner.name = (exc.name or "data") + (inner.name or "data").removeprefix("data")
                return inner
    return exc


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
        "minimum": "at least {}",
        "maximum": "at most {}",
        "minLength": "at least {} characters long",
        "maxLength": "at most {} characters long",
        "minItems": "a list of at least {} items",
        "maxItems": "a list of at most {} items",
        "maxProperties": "an object of at most {} entries",
        "pattern": "a string matching {}",
    }
    if rule == "pattern" and limit == STORABLE_TEXT:
        return "text without U+0000 (the log cannot store it)"
    if rule == "pattern" and limit == NAME_PATTERN:
        return f"made of {NAME_WORDS}"
    if rule in ("minimum", "maximum"):
        return words[rule].format(_number(limit))
    if rule in words:
        return words[rule].format(limit)
    if rule == "uniqueItems":
        return "a list without duplicates"
    if rule == "anyOf":
        return " or ".join(_TYPE_WORDS.get(b.get("type"), "valid") for b in limit)
    if rule == "required":
        return f"an object with {', '.join(limit)}"
    if rule == "additionalProperties":
        return f"an object of only {', '.join(sorted(exc.definition.get('properties', {})))}"
    if rule == "propertyNames":
        low, high = limit.get("minLength", 0), limit.get("maxLength")
        names = f"an object whose names are {low} to {high} characters long"
        if limit.get("pattern") == STORABLE_TEXT:
            names += " without U+0000"
        elif limit.get("pattern") == NAME_PATTERN:
            names += f", made of {NAME_WORDS}"
        return names
    return f"valid ({rule} {limit})"


def _number(limit: float) -> str:
    """A schema bound as people write it: 31622400, not 3.16224e+07; 1e+15 stays short."""
    if float(limit).is_integer() and abs(limit) < 1e12:
        return str(int(limit))
    return f"{limit:g}"


_DEFAULT = RequestValidator(openapi.document())


def parse_choose(body: Any) -> ChooseRequest:
    """Validate a /choose body against the published ChooseRequest schema."""
    return _DEFAULT.choose(body)


def parse_reward(body: Any) -> RewardRequest:
    """Validate a /reward body against the published RewardRequest schema."""
    return _DEFAULT.reward(body)
