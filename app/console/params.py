"""The query parameters the console's routes take, checked like the API's bodies."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable, Mapping

from app.console.queries import Period
from app.errors import ApiError

DEFAULT_DAYS = 30
MAX_DAYS = 365


def check_known(args: Mapping[str, str], allowed: set[str]) -> None:
    """Refuse a query parameter the route does not take (400 ``unknown_field``)."""
    for name in args:
        if name not in allowed:
            raise ApiError(400, "unknown_field", f"unknown query parameter {name!r}", name)


def period_from(args: Mapping[str, str], now: Callable[[], datetime] | None = None) -> Period:
    """The ``days`` UTC days up to and including today (``days`` 1-365, default 30)."""
    days = integer(args, "days", DEFAULT_DAYS, 1, MAX_DAYS)
    today = (now() if now else datetime.now(timezone.utc)).date()
    return Period(
        since=today - timedelta(days=days - 1), until=today + timedelta(days=1), today=today
    )


def integer(args: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """The integer parameter ``name`` in ``[low, high]``, or ``default`` if absent."""
    raw = args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_field", f"{name} must be an integer", name) from None
    if not low <= value <= high:
        raise ApiError(400, "invalid_field", f"{name} must be from {low} to {high}", name)
    return value
