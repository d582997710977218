"""Experiments removed from the config whose streams still hold work.

When an experiment leaves the config, ``/choose`` answers 404 for it, but its
open decisions still take rewards until their windows close, and those are
learned and logged like any other. The worker keeps processing such a stream
until it is empty and every reward window is closed, then lets it go. A late
reward (answered "logged as late") can still arrive for an hour after the
last window closed, so a drained stream is watched that long before it is
forgotten.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable

import redis

from app import keys
from app.event_stream import LATE_GRACE_MS

log = logging.getLogger(__name__)


class RetiredStreams:
    """Which removed experiments still need a worker (looked up at most every ``check_seconds``)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        check_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        watch_ms: int = LATE_GRACE_MS,
    ) -> None:
        self.redis = client
        self.check_seconds = check_seconds
        self.clock = clock
        self.watch_ms = watch_ms
        self._checked_at = float("-inf")
        self._with_work: list[str] = []
        self._configured: frozenset[str] = frozenset()
        self._drained_since: dict[str, float] = {}

    def register(self, experiment: str) -> None:
        """Note that ``experiment`` has a stream (so it is found again once removed)."""
        self.redis.sadd(keys.experiments(), experiment)

    def with_work(self, configured: Iterable[str]) -> list[str]:
        """The removed experiments whose stream holds entries or whose reward windows are open."""
        now = self.clock()
        configured = frozenset(configured)
        if now - self._checked_at < self.check_seconds and configured == self._configured:
            return self._with_work
        self._checked_at, self._configured = now, configured
        removed = sorted(name.decode() for name in self.redis.smembers(keys.experiments()))
        removed = [name for name in removed if name not in configured]
        pipe = self.redis.pipeline(transaction=False)
        for name in removed:
            pipe.xlen(keys.stream(name))
            pipe.zcard(keys.pending(name))
        counts = pipe.execute()
        with_work = []
        for i, name in enumerate(removed):
            entries, windows = counts[2 * i], counts[2 * i + 1]
            if entries or windows:
                if name not in self._with_work:
                    log.warning(
                        "%s is not in the config any more: draining its stream (%d entries) "
                        "and %d open reward windows before letting it go",
                        name,
                        entries,
                        windows,
                    )
                with_work.append(name)
                self._drained_since.pop(name, None)
            elif now - self._drained_since.setdefault(name, now) > self.watch_ms / 1000:
                self.redis.srem(keys.experiments(), name)
                self._drained_since.pop(name)
        self._with_work = with_work
        return with_work
