"""Answer only once a write has reached the replicas: Redis ``WAIT``.

Redis replicates asynchronously: a master that acknowledges a write and dies
before sending it on takes the write with it, and its replica, promoted,
never saw it. So an answer that promises durability (a /choose or /reward
recorded, a worker's save and acknowledgement) first waits until
``replicas`` replicas hold the write (``BANDITD_REDIS_REPLICAS_TO_WAIT``).

``WAIT`` counts the replicas that have caught up with the last write *of the
connection it is sent on*. So the write and its ``WAIT`` travel in one
pipeline, on one connection to the master of the key's slot. After a write
made elsewhere (a transaction), :meth:`ReplicaWait.after` writes a mark on the
same master and waits for it: a master replicates in order, so a replica that
holds the mark holds everything the master did before it.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from redis.cluster import RedisCluster

from app.cluster.client import node_of, primaries

DEFAULT_TIMEOUT_MS = 1_000


class ReplicationLagging(redis.ConnectionError):
    """Fewer replicas than required acknowledged a write within the timeout.

    A ``redis.ConnectionError``: the write may be lost in a failover, so it is
    not acknowledged; callers treat it like Redis being unavailable (the API
    answers 503 and a client retries, idempotently).
    """


def replicas_to_wait(client: redis.Redis | RedisCluster, configured: int | None) -> int:
    """How many replicas an answer waits for: ``configured``, or by default
    1 when ``client`` is a cluster whose every master has a replica, else 0.

    Masters count their connected replicas (``INFO replication``): the slot map
    leaves out a replica that has not replicated anything yet. Decided once, when
    a process starts; a master that does not answer then makes it 1, the side that
    never acknowledges what a failover could lose.
    """
    if configured is not None:
        return configured
    if not isinstance(client, RedisCluster):
        return 0
    try:
        counts = [int(m.info("replication").get("connected_slaves", 0)) for m in primaries(client)]
    except (redis.ConnectionError, redis.TimeoutError):
        return 1
    return 1 if counts and min(counts) >= 1 else 0


class ReplicaWait:
    """Run writes so that they are on ``replicas`` replicas before they return."""

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        replicas: int,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
    ) -> None:
        self.client = client
        self.replicas = replicas
        self.timeout_ms = timeout_ms

    def script(self, script: Any, *, keys: list[str], args: list[Any]) -> Any:
        """Run a registered Lua ``script`` and wait for its write to replicate; its reply."""
        if self.replicas <= 0:
            return script(keys=keys, args=args)
        try:
            reply, acknowledged = self._script_and_wait(script, keys, args)
        except redis.exceptions.NoScriptError:
            # a cluster pipeline does not load scripts (and a promoted replica
            # has none): load it on every master, then once more
            self.client.script_load(script.script)
            reply, acknowledged = self._script_and_wait(script, keys, args)
        self._check(acknowledged, keys[0])
        return reply

    def _script_and_wait(self, script: Any, keys: list[str], args: list[Any]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        script(keys=keys, args=args, client=pipe)
        waited_on = self._queue_wait(pipe, keys[0])
        return self._execute(pipe, keys[0], waited_on)

    def after(self, key: str) -> None:
        """Wait until what the master of ``key``'s slot has written so far is replicated.

        Writes the current time to ``key`` (a key of its own in the slot) and
        waits for that write.
        """
        if self.replicas <= 0:
            return
        pipe = self.client.pipeline(transaction=False)
        pipe.set(key, int(time.time() * 1000))
        waited_on = self._queue_wait(pipe, key)
        _, acknowledged = self._execute(pipe, key, waited_on)
        self._check(acknowledged, key)

    def _queue_wait(self, pipe: Any, key: str) -> str | None:
        """Queue WAIT to the master of ``key`` as the slot map has it; that master's name."""
        if isinstance(self.client, RedisCluster):
            node = node_of(self.client, key)
            pipe.execute_command("WAIT", self.replicas, self.timeout_ms, target_nodes=node)
            return node.name
        pipe.wait(self.replicas, self.timeout_ms)
        return None

    def _execute(self, pipe: Any, key: str, waited_on: str | None) -> list[Any]:
        """The write's reply and the replicas that acknowledged it.

        The write's error is raised as it is. A WAIT that failed, or that went to
        a node no longer serving the key (the write was redirected after a
        failover or a slot move), confirms nothing: :class:`ReplicationLagging`.
        """
        write, acknowledged = pipe.execute(raise_on_error=False)
        if isinstance(write, Exception):
            raise write
        if isinstance(acknowledged, Exception):
            raise ReplicationLagging(f"WAIT for the write of {key} failed: {acknowledged}")
        if waited_on is not None and node_of(self.client, key).name != waited_on:
            raise ReplicationLagging(f"the write of {key} moved away from {waited_on}")
        return [write, acknowledged]

    def _check(self, acknowledged: int, key: str) -> None:
        if int(acknowledged) < self.replicas:
            raise ReplicationLagging(
                f"{acknowledged} of {self.replicas} replicas acknowledged the write of {key}"
                f" within {self.timeout_ms} ms"
            )
