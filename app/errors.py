"""Every error the API returns, as JSON ``{"error": {"code", "message", "field"?}}``."""

from __future__ import annotations

import logging
import time
from typing import Callable

import orjson
from flask import Flask, Response, has_request_context, request
from werkzeug.exceptions import HTTPException

from app.cluster.client import UNAVAILABLE

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with a status, a stable machine-readable code and, where it applies, the field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The JSON error body with its status."""
    body = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    return Response(
        orjson.dumps({"error": body}), status=status, mimetype="application/json", headers=headers
    )


REDIS_DOWN_LOG_SECONDS = 10.0  # while Redis is down, one log line per process this often


class ThrottledLog:
    """Logs a repeating error at most once per ``seconds``, counting the ones it held back.

    A Redis outage fails every request; one line per 503 would flood the log.
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._next = float("-inf")
        self._held_back = 0

    def error(self, message: str, *args) -> None:
        """Log ``message % args`` unless one was logged less than ``seconds`` ago."""
        now = self.clock()
        if now < self._next:
            self._held_back += 1
            return
        if self._held_back:
            message += f" ({self._held_back} more like it since the last one)"
        log.error(message, *args)
        self._next, self._held_back = now + self.seconds, 0


def _code_of(exc: HTTPException) -> str:
    return (exc.name or "error").lower().replace(" ", "_").replace("'", "")


def register(app: Flask) -> None:
    """Render every error, expected or not, as JSON."""

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, exc.code, exc.message, exc.field, headers)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        message = exc.description or exc.name
        if exc.code == 413:
            # the route's own limit where it set one (a bulk load of the feature store)
            limit = request.max_content_length if has_request_context() else None
            limit = limit or app.config["MAX_CONTENT_LENGTH"]
            message = f"request body is larger than {limit} bytes"
        response = error_response(exc.code or 500, _code_of(exc), message)
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    outage_log = ThrottledLog(REDIS_DOWN_LOG_SECONDS)

    def redis_down(exc: Exception) -> Response:
        outage_log.error("redis unavailable: %s: %s", type(exc).__name__, exc)
        return error_response(
            503,
            "storage_unavailable",
            "the event store is unavailable; retry shortly",
            headers={"Retry-After": "1"},
        )

    for unavailable in UNAVAILABLE:  # a server away, or a cluster failing over
        app.register_error_handler(unavailable, redis_down)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "unexpected error; see the server log")
