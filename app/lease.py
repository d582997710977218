"""Leases that give one worker at a time the right to process a stream.

Learning must apply a stream's rewards in stream order, once. Only the lease
holder reads a stream; a worker that dies loses its lease after ``ttl_ms`` and
another takes the stream over, claiming whatever the dead one left unacknowledged.

Several workers share the experiments: each announces itself in a registry of
live workers (:class:`LiveWorkers`) and holds at most its share, ⌈M/N⌉ of M
experiments for N live workers, so the leases spread evenly and a worker that
joins finds streams let go for it.
"""

from __future__ import annotations

import math
import time
import zlib

import redis

from app import keys

# 1: renewed (held without a gap), 2: acquired (it was free), 0: another holder has it
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 2 or 0
"""
_TAKEN = {1: "renewed", 2: "acquired"}  # what _RENEW's reply means (0: not taken)

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaseLost(Exception):
    """This worker no longer holds the lease of the experiment it was writing for."""


class Leases:
    """Acquire, renew and release per-experiment stream leases for one worker."""

    def __init__(self, client: redis.Redis, holder: str, ttl_ms: int = 5_000) -> None:
        self.client = client
        self.holder = holder
        self.ttl_ms = ttl_ms
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def hold(self, experiment: str) -> bool:
        """Take or extend the lease; True if this worker holds it now."""
        return self.take(experiment) is not None

    def take(self, experiment: str) -> str | None:
        """Take or extend the lease: ``"renewed"`` if this worker held it without a gap,
        ``"acquired"`` if it was free (never held, or this worker's own lease had
        expired: someone else may have held it meanwhile), None if another worker has it."""
        held = self._renew(keys=[keys.owner(experiment)], args=[self.holder, self.ttl_ms])
        return _TAKEN.get(int(held))

    def take_many(self, experiments: list[str]) -> dict[str, str | None]:
        """``take`` for many experiments in one round trip; each one's outcome as ``take``'s."""
        pipe = self.client.pipeline(transaction=False)
        for experiment in experiments:
            # EVAL, not a registered script: a pipeline (a cluster's too) cannot load one on
            # a NOSCRIPT reply, and Redis keeps the compiled script for the next call anyway
            owner = keys.owner(experiment)
            pipe.execute_command("EVAL", _RENEW, 1, owner, self.holder, self.ttl_ms)
        return {
            experiment: _TAKEN.get(int(held))
            for experiment, held in zip(experiments, pipe.execute())
        }

    def release(self, experiment: str) -> None:
        """Give the lease up if this worker holds it."""
        self._release(keys=[keys.owner(experiment)], args=[self.holder])


class LiveWorkers:
    """The registry of live workers: each heartbeat counts its worker for ``ttl_ms``."""

    def __init__(self, client: redis.Redis, holder: str, ttl_ms: int = 5_000) -> None:
        self.client = client
        self.holder = holder
        self.ttl_ms = ttl_ms

    def heartbeat(self) -> int:
        """Count this worker as live for ``ttl_ms`` more; how many workers are live now."""
        now_ms = int(time.time() * 1000)
        pipe = self.client.pipeline()  # one key: a transaction, on a cluster too
        pipe.zadd(keys.live_workers(), {self.holder: now_ms + self.ttl_ms})
        pipe.zremrangebyscore(keys.live_workers(), "-inf", now_ms)  # the lapsed
        pipe.zcard(keys.live_workers())
        return max(1, int(pipe.execute()[2]))

    def leave(self) -> None:
        """Stop counting this worker (a clean shutdown): the others take its share at once."""
        self.client.zrem(keys.live_workers(), self.holder)


def share(experiments: int, live_workers: int) -> int:
    """How many of ``experiments`` streams one of ``live_workers`` workers holds at most."""
    return math.ceil(experiments / max(1, live_workers))


def preference(holder: str, experiments: list[str]) -> list[str]:
    """``experiments`` in ``holder``'s own order: workers reach for different streams first."""
    return sorted(experiments, key=lambda e: (zlib.crc32(f"{holder}/{e}".encode()), e))


def fence(pipe: redis.client.Pipeline, experiment: str, holder: str) -> None:
    """Start ``pipe``'s transaction only while ``holder`` holds the lease of ``experiment``.

    WATCHes the lease key, checks its holder (raising :class:`LeaseLost`
    otherwise) and calls MULTI; if the lease changes hands or expires before
    EXEC, ``pipe.execute()`` raises ``redis.WatchError``, which the caller
    turns into :class:`LeaseLost`.
    """
    owner = keys.owner(experiment)
    try:
        pipe.watch(owner)
        current = pipe.get(owner)
    except redis.WatchError as exc:
        # redis-py's word for a connection lost while watching: an outage, not a lost lease
        raise redis.ConnectionError(str(exc)) from exc
    if current != holder.encode():
        raise LeaseLost(experiment)
    pipe.multi()
