"""The last experiments file that every process accepted, kept in Redis.

A process that starts (or is restarted by gunicorn) while the file is broken
takes this copy instead of refusing to start, and reports ``degraded`` until
the file is fixed. Every process that accepts a file saves it here.
"""

from __future__ import annotations

import hashlib
import logging
import time

import redis

from app import keys

log = logging.getLogger(__name__)


class LastGoodConfig:
    """Save and fetch the text of the last accepted experiments file."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def save(self, text: str) -> None:
        """Keep ``text`` as the last good file (a no-op when it is already the one kept)."""
        digest = hashlib.sha256(text.encode()).hexdigest()
        try:
            if self.redis.hget(keys.last_good_config(), "sha256") == digest.encode():
                return
            self.redis.hset(
                keys.last_good_config(),
                mapping={"text": text, "sha256": digest, "saved_ms": int(time.time() * 1000)},
            )
        except redis.RedisError as exc:  # the file itself is in force; the copy can wait
            log.warning("could not keep the accepted config in Redis: %s", exc)

    def fetch(self) -> tuple[str, int] | None:
        """The last good file's text and when it was saved (epoch ms); None if there is none."""
        try:
            text, saved_ms = self.redis.hmget(keys.last_good_config(), "text", "saved_ms")
        except redis.RedisError as exc:
            log.warning("could not read the last good config from Redis: %s", exc)
            return None
        if text is None:
            return None
        return text.decode(), int(saved_ms or 0)
