"""Build the clients and storage objects a banditd process uses, in one place."""

from __future__ import annotations

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


def database_engine(url: str) -> Engine:
    """An engine whose connections are checked before use and time out quickly."""
    return sqlalchemy.create_engine(
        sqlalchemy_url(url),
        pool_pre_ping=True,
        pool_size=2,
        max_overflow=2,
        connect_args={"connect_timeout": 3},
    )


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
