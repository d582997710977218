"""The Redis client banditd builds: a pipeline, however large its commands, is one write,
and each command is packed in one call into hiredis, into the bytes redis-py would send."""

from __future__ import annotations

import pytest
import redis

from app.cluster import connect, is_cluster
from app.cluster.client import WholeCommandPacker, WholeWritesConnection
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


# what banditd passes: names as str and bytes, ids, counts, scores, raw float64 bytes
COMMANDS = [
    ("HSET", "banditd:{e}:arm:m:a", "n", 3, "s", 2.5, "A_inv", b"\x00\xff" * 600),
    (b"ZADD", b"banditd:{e}:pending", 1733443200123.0, "e:0001"),
    ("SET", "banditd:{e}:applied", b"1733443200123-7", "PX", 60000),
    ("XADD", "s", "*", "t", "decision", "x", "caf\u00e9 \u2603", "r", 0.1, "w", 1e-07),
    ("ZADD", "z", float("inf"), "m", -0.0, "n", 12345678901234567.0, "o", 1 / 3),
    ("EVALSHA", "0" * 40, 2, "k1", "k2", memoryview(b"view"), ""),
    ("CLIENT SETNAME", "banditd-worker"),
    (b"SCRIPT LOAD", "return 1"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: str(c[0]))
def test_each_command_is_packed_into_the_bytes_redis_py_packs(command):
    ours = WholeWritesConnection().pack_command(*command)
    redis_pys = redis.Connection().pack_command(*command)
    assert b"".join(ours) == b"".join(redis_pys)


def test_arguments_hiredis_refuses_are_refused_as_redis_py_refuses_them():
    for bad in (True, None, object()):
        with pytest.raises(redis.DataError):
            WholeWritesConnection().pack_command("SET", "k", bad)


def test_the_packer_hands_hiredis_the_whole_command_in_one_call():
    calls = []

    class Fallback:
        def pack(self, *args):
            calls.append(args)
            return redis.Connection().pack_command(*args)

    packer = WholeCommandPacker(Fallback())
    packed = b"*4\r\n$4\r\nHSET\r\n$1\r\nk\r\n$1\r\nf\r\n$1\r\nv\r\n"
    assert packer.pack("HSET", "k", "f", b"v") == [packed]
    assert calls == []  # redis-py's packer only for what hiredis cannot pack alone
    packer.pack("CLIENT SETNAME", "x")
    assert calls == [("CLIENT SETNAME", "x")]


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
