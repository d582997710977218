"""The client's exceptions: one per HTTP status family, each carrying the API's error code."""

from __future__ import annotations


class BanditdError(Exception):
    """Anything the banditd client raises."""


class TransportError(BanditdError):
    """No answer from the service (refused, reset, timed out), after any safe retries."""


class ApiError(BanditdError):
    """The service answered with an error body ``{"error": {"code", "message", "field"}}``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" (field {field})" if field else ""))
        self.status = status
        self.code = code
        self.message = message
        self.field = field


class BadRequest(ApiError):
    """400: the request is malformed or names something the experiment does not have."""


class Unauthorized(ApiError):
    """401: the API key is missing or wrong."""


class Forbidden(ApiError):
    """403: the API key may not do this for this experiment."""


class NotFound(ApiError):
    """404: unknown experiment or decision, or an arm the decision did not show."""


class Conflict(ApiError):
    """409: a different reward already recorded, the reward window closed, the catalogue full."""


class ServiceUnavailable(ApiError):
    """503 (Redis unavailable) or a 502/504 from a proxy in front of the service."""


BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    502: ServiceUnavailable,
    503: ServiceUnavailable,
    504: ServiceUnavailable,
}


def api_error(status: int, code: str, message: str, field: str | None = None) -> ApiError:
    """The exception for an error answer: its status family's class, ApiError otherwise."""
    return BY_STATUS.get(status, ApiError)(status, code, message, field)
