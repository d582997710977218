"""The smallest value seen over the last one to two windows, updated as values come."""

from __future__ import annotations

import math


class MinimumWindow:
    """Minimum of the values added in the current window and the one before it.

    Two tumbling windows of ``seconds``: what it reports covers between one and
    two windows of the values added. It only moves when values are added.
    """

    def __init__(self, seconds: float = 60.0) -> None:
        self.seconds = seconds
        self._ends = -math.inf
        self._current = math.inf
        self._previous = math.inf
        self._reported = math.nan

    def add(self, value: float, now: float) -> float | None:
        """Add ``value`` seen at ``now``; the new minimum if it changed, else None."""
        if now < self._ends and value >= self._current:
            return None  # the common case, on every /choose: nothing moves
        if now >= self._ends:
            # after a whole window without values, the one before it is forgotten too
            quiet = now >= self._ends + self.seconds
            self._previous = math.inf if quiet else self._current
            self._current = math.inf
            self._ends = now + self.seconds
        self._current = min(self._current, value)
        minimum = min(self._current, self._previous)
        if minimum == self._reported:
            return None
        self._reported = minimum
        return minimum
