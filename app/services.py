"""Build the clients and storage objects a banditd process uses, in one place."""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis
import sqlalchemy
from sqlalchemy.engine import Engine

from app import cluster
from app.config_source import ConfigSource
from app.event_log import EventLog
from app.event_stream import EventStream
from app.last_good_config import LastGoodConfig
from app.model_store import ModelStore
from app.settings import Settings


@dataclass
class Services:
    """The shared pieces: settings, clients, and the storage interfaces over them."""

    settings: Settings
    redis: redis.Redis
    engine: Engine
    config: ConfigSource
    stream: EventStream
    store: ModelStore
    event_log: EventLog
    replicas: cluster.ReplicaWait


def redis_client(url: str) -> redis.Redis:
    """A Redis client that fails fast instead of hanging when Redis is away.

    A :class:`redis.cluster.RedisCluster` when ``url`` names a Redis Cluster node
    (app/cluster/).
    """
    return cluster.connect(url)


def sqlalchemy_url(url: str) -> str:
    """``url`` with the psycopg2 driver named (SQLAlchemy 2.1 defaults to psycopg 3)."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg2://" + url[len(scheme) :]
    return url


# A pooled connection used this recently is handed out without a ping (HikariCP's
# aliveBypassWindowMs is the same idea, at 500 ms). The worker takes a connection
# for every batch it logs, 20-50 times a second under steady traffic: pinging each
# time cost it a round trip to Postgres per batch (160 µs of its CPU on this box).
PING_AFTER_IDLE_S = 1.0
_IDLE_SINCE = "banditd_idle_since"  # in a pooled connection's info: when it was checked in


def database_engine(url: str, *, ping_after_idle_s: float = PING_AFTER_IDLE_S) -> Engine:
    """An engine whose connections time out quickly and are checked before use when they
    sat idle for ``ping_after_idle_s`` or more (one found closed is replaced at once)."""
    engine = sqlalchemy.create_engine(
        sqlalchemy_url(url),
        pool_size=2,
        max_overflow=2,
        connect_args={"connect_timeout": 3},
    )
    _ping_idle_connections(engine, ping_after_idle_s)
    return engine


def _ping_idle_connections(engine: Engine, idle_s: float) -> None:
    """SQLAlchemy's ``pool_pre_ping``, for connections idle at least ``idle_s`` only."""

    @sqlalchemy.event.listens_for(engine.pool, "checkin")
    def idle_from(dbapi_connection, record) -> None:
        if record is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    @sqlalchemy.event.listens_for(engine.pool, "checkout")
    def ping_if_idle(dbapi_connection, record, proxy) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since < idle_s:
            return  # new, or used a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            # the pool drops this connection and checks out another (SQLAlchemy's
            # "pessimistic disconnect handling")
            raise sqlalchemy.exc.DisconnectionError(str(exc)) from exc


def build_services(settings: Settings) -> Services:
    """Connect to Redis and Postgres (lazily) and read the experiments file."""
    client = redis_client(settings.redis_url)
    engine = database_engine(settings.database_url)
    replicas = cluster.ReplicaWait(
        client,
        cluster.replicas_to_wait(client, settings.redis_replicas_to_wait),
        settings.redis_wait_timeout_ms,
    )
    return Services(
        settings=settings,
        redis=client,
        engine=engine,
        config=ConfigSource(
            settings.config_path,
            check_seconds=settings.config_check_seconds,
            last_good=LastGoodConfig(client),
        ),
        stream=EventStream(client, replicas=replicas),
        store=ModelStore(client),
        event_log=EventLog(engine),
        replicas=replicas,
    )
