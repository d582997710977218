"""JSON responses rendered with orjson."""

from typing import Any

import orjson
from flask import Response


def json_response(body: Any, status: int = 200) -> Response:
    """``body`` (an object, or JSON bytes already rendered) as an application/json response."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(data, status=status, mimetype="application/json")
