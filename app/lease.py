"""Leases that give one worker at a time the right to process a stream.

Learning must apply a stream's rewards in stream order, once. Only the lease
holder reads a stream; a worker that dies loses its lease after ``ttl_ms`` and
another takes the stream over, claiming whatever the dead one left unacknowledged.
"""

from __future__ import annotations

import redis

from app import keys

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaseLost(Exception):
    """This worker no longer holds the lease of the experiment it was writing for."""


class Leases:
    """Acquire, renew and release per-experiment stream leases for one worker."""

    def __init__(self, client: redis.Redis, holder: str, ttl_ms: int = 5_000) -> None:
        self.holder = holder
        self.ttl_ms = ttl_ms
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def hold(self, experiment: str) -> bool:
        """Take or extend the lease; True if this worker holds it now."""
        return bool(self._renew(keys=[keys.owner(experiment)], args=[self.holder, self.ttl_ms]))

    def release(self, experiment: str) -> None:
        """Give the lease up if this worker holds it."""
        self._release(keys=[keys.owner(experiment)], args=[self.holder])
