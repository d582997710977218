"""Fixtures: a real Redis (flushed) and a real Postgres (truncated) per test.

``make test`` starts both. The test database and Redis db are separate from
the ones ``make run`` uses: ``BANDITD_TEST_DATABASE_URL`` and
``BANDITD_TEST_REDIS_URL``.
"""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
import redis
import sqlalchemy

from app import create_app
from app.analytics.views import MATERIALISED
from app.cli import migrate
from app.cluster import connect, is_cluster, primaries
from app.services import build_services, database_engine
from app.settings import Settings
from app.worker import Worker
from chaos.cluster_nodes import LoopbackCluster

TEST_REDIS_URL = os.environ.get("BANDITD_TEST_REDIS_URL", "redis://localhost:6379/15")
TEST_DATABASE_URL = os.environ.get(
    "BANDITD_TEST_DATABASE_URL", "postgresql://banditd:banditd@localhost:5432/banditd_test"
)
API_KEY = "test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
TABLES = ("config_versions", "decisions", "impressions", "rewards", "model_snapshots")

EXPERIMENTS_TOML = """
[experiments.home_feed]
policy = "linucb"
alpha = 1.0
epsilon = 0.0
arms = ["job_cleaning", "job_kitchen", "job_warehouse"]
reward = { default = 0.0, window_seconds = 900, min = 0.0, max = 1.0 }

[experiments.home_feed.features]
numeric = ["hour"]
categorical = { city = ["berlin", "hamburg"] }

[experiments.push_copy]
policy = "beta_ts"
arms = ["short", "friendly"]
reward = { default = 0.0, window_seconds = 60, min = 0.0, max = 1.0 }
"""


def poll(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.02):
    """Return condition()'s first truthy value, polling until ``timeout`` seconds; fail then."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s: {condition}")
        time.sleep(interval)


class FakeClock:
    """An injectable wall clock for window and deadline tests."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def migrated_database() -> str:
    # The test database is disposable: start from an empty schema, so that
    # leftovers of another checkout (a newer revision, stray tables) cannot matter.
    engine = database_engine(TEST_DATABASE_URL)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    migrate(Settings(database_url=TEST_DATABASE_URL))
    return TEST_DATABASE_URL


class CountingConnection(redis.Connection):
    """A real connection that counts the requests it sends (one per command or pipeline)."""

    sent = 0

    def send_packed_command(self, command, check_health=True):
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)


@pytest.fixture
def counted(redis_client):
    """A client of the test Redis whose round trips are counted (``CountingConnection.sent``)."""
    client = redis.Redis(
        connection_pool=redis.ConnectionPool.from_url(
            TEST_REDIS_URL, connection_class=CountingConnection
        )
    )
    client.ping()
    CountingConnection.sent = 0
    yield client
    client.close()


def round_trips(client, reset: bool = False) -> int:
    """Requests the ``counted`` client sent so far (then start counting from 0 if ``reset``).

    Read through the client: pytest may import this module twice (as ``conftest``
    and ``tests.conftest``), each with its own CountingConnection.
    """
    counting = client.connection_pool.connection_class
    sent = counting.sent
    if reset:
        counting.sent = 0
    return sent


@pytest.fixture
def redis_client():
    if is_cluster(TEST_REDIS_URL):  # BANDITD_TEST_REDIS_URL naming a Redis Cluster node
        client = connect(TEST_REDIS_URL)
        for node in primaries(client):
            node.flushdb()
        yield client
        for node in primaries(connect(TEST_REDIS_URL)):
            node.flushdb()
        client.close()
        return
    client = redis.Redis.from_url(TEST_REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def engine(migrated_database):
    engine = database_engine(migrated_database)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f"TRUNCATE {', '.join(TABLES)}"))
        for view in MATERIALISED:  # empty like the tables, not left over from another test
            conn.execute(sqlalchemy.text(f"REFRESH MATERIALIZED VIEW {view}"))
    yield engine
    engine.dispose()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "experiments.toml"
    path.write_text(textwrap.dedent(EXPERIMENTS_TOML))
    return path


@pytest.fixture
def settings(config_file: Path, redis_client, engine) -> Settings:
    return Settings(
        config_path=str(config_file),
        redis_url=TEST_REDIS_URL,
        database_url=TEST_DATABASE_URL,
        api_keys=frozenset({API_KEY}),
        config_check_seconds=0.0,
        model_refresh_seconds=0.0,
    )


@pytest.fixture
def app(settings):
    return create_app(settings, rng=np.random.default_rng(20261125))


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def worker(settings, clock):
    worker = Worker.from_services(build_services(settings), clock=clock, block_ms=10)
    yield worker
    worker.close()


def rows(engine, sql: str, **params) -> list[dict]:
    """Query the test database; rows as dicts."""
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sqlalchemy.text(sql), params)]


def choose(client, **body):
    """POST /choose with the test key; returns the response."""
    body.setdefault("experiment", "home_feed")
    return client.post("/choose", json=body, headers=AUTH)


def reward(client, decision_id: str, arm: str, value: float):
    """POST /reward with the test key; returns the response."""
    return client.post(
        "/reward", json={"decision_id": decision_id, "arm": arm, "reward": value}, headers=AUTH
    )


# -- Redis Cluster (issue 15) -------------------------------------------------


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory) -> Iterator[LoopbackCluster]:
    """A Redis Cluster of 3 masters and 3 replicas on free loopback ports, for the session.

    Started and stopped by scripts/redis_cluster.sh (chaos/cluster_nodes.py).
    """
    try:
        cluster = LoopbackCluster.start(tmp_path_factory.mktemp("redis-cluster"))
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_client(redis_cluster: LoopbackCluster):
    """A cluster client on the session's cluster, every master flushed before and after."""
    from app.cluster import connect, primaries

    def flush() -> None:
        fresh = connect(redis_cluster.url)  # the masters now: a test may have failed one over
        for node in primaries(fresh):
            node.flushall()
        fresh.close()

    flush()
    client = connect(redis_cluster.url)
    yield client
    client.close()
    flush()
