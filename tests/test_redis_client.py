"""The Redis client banditd builds: a pipeline, however large its commands, is one write."""

from __future__ import annotations

import pytest
import redis

from app.cluster import connect, is_cluster
from app.cluster.client import WholeWritesConnection
from tests.conftest import TEST_REDIS_URL

# a model save's shape: hashes of two 8 KiB matrices, then small commands
PIPELINE = [
    ("HSET", "banditd:test:arm:a", "A", b"\x01" * 8192, "A_inv", b"\x02" * 8192),
    ("HSET", "banditd:test:arm:b", "A", b"\x03" * 8192, "A_inv", b"\x04" * 8192),
    ("SET", "banditd:test:applied", "1-0"),
]


@pytest.fixture
def single_server():
    if is_cluster(TEST_REDIS_URL):
        pytest.skip("a single server's client (a cluster's connections are redis-py's own)")
    client = connect(TEST_REDIS_URL)
    yield client
    client.close()


def test_a_pipeline_of_large_commands_is_packed_into_one_write(single_server):
    connection = single_server.connection_pool.get_connection()
    try:
        assert isinstance(connection, WholeWritesConnection)
        packed = connection.pack_commands(PIPELINE)
        as_redis_py_packs_it = redis.Connection().pack_commands(PIPELINE)
    finally:
        single_server.connection_pool.release(connection)
    assert len(packed) == 1
    assert len(as_redis_py_packs_it) >= 3  # each large command written on its own
    assert b"".join(packed) == b"".join(as_redis_py_packs_it)


def test_the_pipeline_written_at_once_is_what_redis_stores(single_server):
    pipe = single_server.pipeline(transaction=True)
    for command in PIPELINE:
        pipe.execute_command(*command)
    pipe.execute()
    assert single_server.hget("banditd:test:arm:b", "A_inv") == b"\x04" * 8192
    assert single_server.get("banditd:test:applied") == b"1-0"
    single_server.delete("banditd:test:arm:a", "banditd:test:arm:b", "banditd:test:applied")


@pytest.mark.parametrize(
    "url, connection_class",
    [
        ("unix:///tmp/banditd-no-such.sock", redis.UnixDomainSocketConnection),
        ("rediss://localhost:6390/0", redis.SSLConnection),
    ],
)
def test_other_schemes_keep_their_own_connection_class(url, connection_class):
    client = connect(url)  # nothing listens there: the client connects when first used
    assert client.connection_pool.connection_class is connection_class
