"""The OpenAPI 3.1 document (app/openapi.json): the API's contract, served and enforced.

``GET /openapi.json`` serves it as is, and app/validation.py compiles its
request schemas into the checks every request body goes through, so the
published document and the accepted bodies cannot drift apart.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson

DOCUMENT_BYTES: bytes = resources.files("app").joinpath("openapi.json").read_bytes()


def document() -> dict[str, Any]:
    """A fresh, parsed copy of the document (callers may change it)."""
    return orjson.loads(DOCUMENT_BYTES)


def schema(document: dict[str, Any], name: str) -> dict[str, Any]:
    """``components.schemas[name]`` as a standalone JSON Schema, every ``$ref`` inlined.

    Inlined rather than referenced because fastjsonschema compiles a referenced
    schema to a function called per item, which made validating /choose several
    times slower (see README, "OpenAPI and API keys").
    """
    return _inline(document["components"]["schemas"][name], document, ())


def _inline(node: Any, document: dict[str, Any], seen: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_inline(item, document, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if ref is None:
        return {key: _inline(value, document, seen) for key, value in node.items()}
    prefix = "#/components/schemas/"
    if not ref.startswith(prefix) or ref in seen:
        raise ValueError(f"cannot inline {ref!r}: only acyclic refs to {prefix}* are supported")
    return _inline(document["components"]["schemas"][ref[len(prefix) :]], document, (*seen, ref))
