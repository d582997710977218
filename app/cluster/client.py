"""One Redis client for either deployment: a single server, or a Redis Cluster.

``REDIS_URL`` names one server. If that server runs with ``cluster-enabled yes``
(``INFO cluster`` says ``cluster_enabled:1``), banditd talks to the whole
cluster through redis-py's :class:`redis.cluster.RedisCluster`, which learns
the slot map from that node, sends each command to the master of its key's
slot, and follows ``MOVED`` redirections after a failover. Every key of one
experiment carries the hash tag ``{experiment}`` (:mod:`app.keys`), so an
experiment's scripts and transactions stay on one shard while experiments
spread over the shards.
"""

from __future__ import annotations

from typing import Any

import hiredis
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import ClusterDownError, ClusterError, RedisClusterException, TryAgainError

CONNECT_TIMEOUT_S = 0.1  # fail fast instead of hanging when Redis is away
SOCKET_TIMEOUT_S = 2.0
HEALTH_CHECK_INTERVAL_S = 30
WRITE_BUFFER_BYTES = 1 << 20  # a pipeline up to this size goes to Redis in one write

# What says Redis cannot serve now, though it may shortly: a server away or slow, or a
# cluster in the middle of a failover, where every node answers CLUSTERDOWN from the moment
# a master is marked failed until its replica takes over (2-3 s in make chaos), and the
# client gives up after its retries (ClusterDownError, TryAgainError, ClusterError "TTL
# exhausted", SlotNotCoveredError, or "Redis Cluster cannot be connected", both
# RedisClusterException). The API answers these 503 (retry shortly); the worker backs off and
# tries again. RedisClusterException also says "no way to dispatch this command" (a command
# without a key): a bug, not an outage, which tests/test_cluster.py's run of every route and
# of the worker on a cluster would show.
UNAVAILABLE: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    ClusterDownError,
    TryAgainError,
    ClusterError,
    RedisClusterException,
)


class WholeCommandPacker:
    """Packs each command in one call into hiredis' C packer.

    redis-py's own packer first passes every argument through Python (a check
    for memoryviews, then an encoder's chain of isinstance tests): about 1.5 µs
    an argument, and a worker's save of 11 arms has about 230 of them (a third
    of the save's CPU). hiredis packs bytes, str (as UTF-8) and numbers itself,
    floats as ``repr`` writes them, as redis-py does. A command whose name has
    a space (``CLIENT SETNAME``) or that hiredis refuses (a bool, None: redis-py
    says why) goes to redis-py's packer, so the bytes sent are the same.
    """

    def __init__(self, fallback: Any) -> None:
        self._fallback = fallback

    def pack(self, *args: Any) -> list[bytes]:
        """The command ``args`` in the Redis protocol, as redis-py's packers return it."""
        name = args[0]
        if (" " if isinstance(name, str) else b" ") in name:
            return self._fallback.pack(*args)
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            return self._fallback.pack(*args)


class WholeWritesConnection(redis.Connection):
    """A TCP connection that sends a pipeline of up to ``WRITE_BUFFER_BYTES`` in one write,
    each command packed by :class:`WholeCommandPacker`.

    redis-py writes every command longer than 6,000 bytes on its own: a model
    save of a dozen arms (two 8 KiB matrices each) was two dozen writes, each a
    system call through the TCP stack, which cost the worker 10-18% of a save.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._buffer_cutoff = WRITE_BUFFER_BYTES  # redis-py's threshold (no public option)
        self._command_packer = WholeCommandPacker(self._command_packer)


def is_cluster(url: str) -> bool:
    """Whether the server ``url`` names runs in cluster mode (``INFO cluster``)."""
    probe = redis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=SOCKET_TIMEOUT_S
    )
    try:
        return bool(probe.info("cluster").get("cluster_enabled"))
    finally:
        probe.close()


def connect(url: str) -> redis.Redis | RedisCluster:
    """A client for ``url``: :class:`RedisCluster` if it names a cluster node, else ``Redis``.

    Both fail fast when Redis is away. A cluster URL's database must be 0
    (a cluster has only that one). If the server does not answer, the client
    is a single server's, which connects when first used, as before clusters.
    """
    try:
        cluster = is_cluster(url)
    except (redis.ConnectionError, redis.TimeoutError):
        cluster = False
    # unix:// and rediss:// keep the connection class their scheme selects
    whole_writes = {"connection_class": WholeWritesConnection} if url.startswith("redis://") else {}
    if cluster:
        return RedisCluster.from_url(
            url,
            **whole_writes,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=SOCKET_TIMEOUT_S,
            health_check_interval=HEALTH_CHECK_INTERVAL_S,
        )
    return redis.Redis.from_url(
        url,
        **whole_writes,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
    )


def primaries(client: redis.Redis | RedisCluster) -> list[redis.Redis]:
    """A plain client per master: the cluster's masters, or the one server itself.

    For what a cluster client does not fan out: counting replicas, flushing
    every shard in a test, reading each master's ``INFO``.
    """
    if isinstance(client, RedisCluster):
        return [client.get_redis_connection(node) for node in client.get_primaries()]
    return [client]


def node_of(client: RedisCluster, key: str) -> ClusterNode:
    """The master that serves ``key``'s slot, as the client's slot map has it now."""
    return client.get_node_from_key(key)


def queue_time(client: redis.Redis | RedisCluster, pipe: Any) -> None:
    """Queue ``TIME`` on ``client``'s ``pipe``, except on a cluster, whose pipelines refuse it.

    Then :func:`time_first` puts the time first in the replies either way.
    """
    if not isinstance(client, RedisCluster):
        pipe.time()


def time_first(client: redis.Redis | RedisCluster, replies: list[Any]) -> list[Any]:
    """The replies of a pipeline given to :func:`queue_time`, the server's time first."""
    if isinstance(client, RedisCluster):
        return [client.time(), *replies]
    return replies
