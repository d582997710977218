"""banditd on a Redis Cluster of 3 masters and 3 replicas (issue 15).

The cluster is the session's (tests/conftest.py ``redis_cluster``), started by
scripts/redis_cluster.sh; Postgres is the test database as everywhere else.
"""

from __future__ import annotations

import dataclasses
import os
import textwrap
from collections import Counter

import numpy as np
import pytest
import redis
from redis.cluster import RedisCluster

from app import create_app, keys
from app.cluster import ReplicaWait, connect, is_cluster, replicas_to_wait
from app.cluster.client import WholeWritesConnection
from app.lease import Leases, LeaseLost
from app.services import build_services
from app.settings import Settings
from app.worker import Worker
from tests.conftest import API_KEY, AUTH, TEST_DATABASE_URL, TEST_REDIS_URL, FakeClock, poll, rows
from tests.service_processes import start_worker, stop

# Six experiments: their hash tags put them on all three masters.
EXPERIMENTS = [f"exp{i}" for i in range(6)]
TOML = "\n".join(textwrap.dedent(f"""
        [experiments.{name}]
        policy = "linucb"
        alpha = 1.0
        epsilon = 0.0
        arms = ["a", "b", "c"]
        reward = {{ default = 0.0, window_seconds = 900, min = 0.0, max = 1.0 }}

        [experiments.{name}.features]
        numeric = ["hour"]
        """) for name in EXPERIMENTS)


@pytest.fixture
def cluster_settings(tmp_path, redis_cluster, cluster_client, engine) -> Settings:
    path = tmp_path / "experiments.toml"
    path.write_text(TOML)
    return Settings(
        config_path=str(path),
        redis_url=redis_cluster.url,
        database_url=TEST_DATABASE_URL,
        api_keys=frozenset({API_KEY}),
        config_check_seconds=0.0,
        model_refresh_seconds=0.0,
    )


def test_a_cluster_node_gets_the_cluster_client_and_a_single_server_the_plain_one(
    redis_cluster,
):
    assert is_cluster(redis_cluster.url)
    cluster = connect(redis_cluster.url)
    assert isinstance(cluster, RedisCluster)
    # the nodes' connections pack and write commands as a single server's do
    node = cluster.get_default_node()
    pool = cluster.get_redis_connection(node).connection_pool
    assert pool.connection_class is WholeWritesConnection
    assert cluster.ping()
    cluster.close()
    assert not is_cluster(TEST_REDIS_URL)
    single = connect(TEST_REDIS_URL)
    assert type(single) is redis.Redis


def test_answers_wait_for_one_replica_by_default_on_a_cluster_with_replicas(
    redis_cluster, cluster_client
):
    assert replicas_to_wait(cluster_client, None) == 1
    assert replicas_to_wait(cluster_client, 0) == 0
    assert replicas_to_wait(connect(TEST_REDIS_URL), None) == 0
    settings = Settings.from_env(
        {"REDIS_URL": redis_cluster.url, "BANDITD_REDIS_REPLICAS_TO_WAIT": "1"}
    )
    assert settings.redis_replicas_to_wait == 1
    assert Settings.from_env({}).redis_replicas_to_wait is None
    with pytest.raises(ValueError, match="BANDITD_REDIS_REPLICAS_TO_WAIT"):
        Settings.from_env({"BANDITD_REDIS_REPLICAS_TO_WAIT": "one"})


def test_a_write_not_replicated_in_time_is_refused(redis_cluster, cluster_client):
    """WAIT for more replicas than the shard has: the write is not acknowledged."""
    script = cluster_client.register_script("return redis.call('SET', KEYS[1], ARGV[1])")
    assert ReplicaWait(cluster_client, 1).script(script, keys=["{x}:k"], args=["v"]) == b"OK"
    with pytest.raises(redis.ConnectionError, match="1 of 2 replicas"):
        ReplicaWait(cluster_client, 2, timeout_ms=50).script(script, keys=["{x}:k"], args=["w"])


def test_experiments_spread_over_the_three_masters(cluster_client):
    masters = {cluster_client.get_node_from_key(keys.stream(e)).name for e in EXPERIMENTS}
    assert len(masters) == 3


def test_choose_reward_learn_and_log_on_a_cluster(cluster_settings, cluster_client, engine):
    """Every experiment, on every shard: decisions and rewards recorded with WAIT,
    learned by the worker, logged in Postgres, and the saves heard by the API."""
    app = create_app(cluster_settings, rng=np.random.default_rng(7))
    services = app.extensions["banditd"]
    assert services.replicas.replicas == 1
    services.saves.start()
    try:
        api = app.test_client()
        decisions = []
        for i, name in enumerate(EXPERIMENTS * 3):
            body = {"experiment": name, "context": {"hour": i % 24}, "request_id": f"r{i}"}
            answer = api.post("/choose", json=body, headers=AUTH)
            assert answer.status_code == 200, answer.get_json()
            again = api.post("/choose", json=body, headers=AUTH)  # idempotent on a cluster too
            assert again.get_json() == answer.get_json()
            decisions.append((name, answer.get_json()))
        for _name, answer in decisions:
            arm = answer["arms"][0]["arm"]
            sent = {"decision_id": answer["decision_id"], "arm": arm, "reward": 1.0}
            assert api.post("/reward", json=sent, headers=AUTH).status_code == 202

        worker = Worker.from_services(
            build_services(cluster_settings), clock=FakeClock(), block_ms=10
        )
        try:
            assert worker.run(until_idle=True) >= 2 * len(decisions)
        finally:
            worker.close()
        logged = rows(engine, "SELECT experiment, count(*) AS n FROM decisions GROUP BY 1")
        assert {r["experiment"]: r["n"] for r in logged} == {e: 3 for e in EXPERIMENTS}
        assert rows(engine, "SELECT count(*) AS n FROM rewards")[0]["n"] == len(decisions)
        for name in EXPERIMENTS:
            assert cluster_client.get(keys.applied(name)) is not None
        poll(lambda: services.saves.heard >= 1, timeout=10)
    finally:
        services.saves.stop()


def test_workers_share_the_experiments_of_every_shard(cluster_settings, cluster_client, tmp_path):
    """The registry of live workers (bd:workers, no hash tag) works across shards: 3
    ``banditd worker`` processes, 6 experiments on 3 masters, each worker holding its
    share of 2; a worker stopped, the other two take its share (3 each)."""
    env = {
        **os.environ,
        "BANDITD_CONFIG": cluster_settings.config_path,
        "REDIS_URL": cluster_settings.redis_url,
        "DATABASE_URL": cluster_settings.database_url,
        "BANDITD_WORKER_METRICS_PORT": "0",
    }

    def shares() -> list[int]:
        holders = [cluster_client.get(keys.owner(e)) for e in EXPERIMENTS]
        return sorted(Counter(h for h in holders if h).values())

    with open(tmp_path / "workers.log", "ab") as log:
        workers = [start_worker(env, log) for _ in range(3)]
        try:
            poll(lambda: shares() == [2, 2, 2], timeout=30, interval=0.1)
            assert cluster_client.zcard(keys.live_workers()) == 3
            stop(workers[0])
            poll(lambda: shares() == [3, 3], timeout=30, interval=0.1)
            assert cluster_client.zcard(keys.live_workers()) == 2
        finally:
            for w in workers:
                stop(w)


def test_a_write_the_replicas_do_not_confirm_is_a_503_and_the_worker_reads_it_again(
    cluster_settings, cluster_client, engine
):
    """Waiting for more replicas than a shard has: /choose answers 503 storage_unavailable,
    and a worker's batch is not done (it raises as on an outage); a worker that can be
    satisfied then logs every entry once."""
    strict = dataclasses.replace(
        cluster_settings, redis_replicas_to_wait=2, redis_wait_timeout_ms=50
    )
    refused = (
        create_app(strict)
        .test_client()
        .post("/choose", json={"experiment": "exp0", "context": {"hour": 1}}, headers=AUTH)
    )
    assert refused.status_code == 503
    assert refused.get_json()["error"]["code"] == "storage_unavailable"

    api = create_app(cluster_settings, rng=np.random.default_rng(3)).test_client()
    for hour in range(5):
        body = {"experiment": "exp1", "context": {"hour": hour}}
        answer = api.post("/choose", json=body, headers=AUTH).get_json()
        sent = {"decision_id": answer["decision_id"], "arm": answer["arms"][0]["arm"], "reward": 1}
        assert api.post("/reward", json=sent, headers=AUTH).status_code == 202

    unsatisfied = Worker.from_services(build_services(strict), clock=FakeClock(), block_ms=10)
    try:
        with pytest.raises(redis.ConnectionError, match="replicas acknowledged"):
            unsatisfied.step()
    finally:
        unsatisfied.close()
    worker = Worker.from_services(build_services(cluster_settings), clock=FakeClock(), block_ms=10)
    try:
        worker.run(until_idle=True)
    finally:
        worker.close()
    counts = rows(
        engine,
        "SELECT (SELECT count(*) FROM decisions WHERE experiment = 'exp1') AS d,"
        " (SELECT count(DISTINCT decision_id) FROM decisions WHERE experiment = 'exp1') AS dd,"
        " (SELECT count(*) FROM rewards WHERE experiment = 'exp1') AS r",
    )[0]
    assert counts == {"d": 5, "dd": 5, "r": 5}
    assert cluster_client.xlen(keys.stream("exp1")) == 0  # everything acknowledged


def test_a_backlog_is_read_under_the_lease_on_a_cluster(cluster_settings, cluster_client):
    """The fenced read of a backlog (a WATCH/MULTI transaction) gives the entries as on one
    server, though a cluster's transaction leaves the XREADGROUP reply unparsed."""
    stream = build_services(cluster_settings).stream
    stream.ensure_group("exp2")
    ids = [cluster_client.xadd(keys.stream("exp2"), {"k": str(i)}) for i in range(3)]
    assert Leases(cluster_client, "holder").hold("exp2")
    entries = stream.read_new("exp2", "holder", 10)
    assert entries == [(entry_id, {b"k": str(i).encode()}) for i, entry_id in enumerate(ids)]
    with pytest.raises(LeaseLost):
        stream.read_new("exp2", "another", 10)


def test_waiting_for_entries_on_several_shards_gives_the_oldest_append_time(
    cluster_settings, cluster_client
):
    """The cluster's poll of several streams answers as one XREAD does on one server: the
    streams with news, each with when its oldest new entry was appended, or none."""
    stream = build_services(cluster_settings).stream
    last = {e: cluster_client.xadd(keys.stream(e), {"k": "old"}) for e in ("exp0", "exp1")}
    assert stream.wait_for_any(last, 50) == {}
    later = cluster_client.xadd(keys.stream("exp1"), {"k": "1"}, id="*")
    later_ms = int(later.split(b"-")[0])
    cluster_client.xadd(keys.stream("exp0"), {"k": "0"}, id=f"{later_ms + 5}-0")
    assert stream.wait_for_any(last, 50) == {"exp1": later_ms, "exp0": later_ms + 5}


def test_a_cluster_with_slots_left_without_a_master_answers_503_and_the_worker_waits(
    cluster_settings, cluster_client, redis_cluster
):
    """While a master is down and no replica has taken over, every node answers CLUSTERDOWN
    (cluster-require-full-coverage, Redis' default), for the other shards' keys too: what
    make chaos's failovers go through for 2-3 s. /choose, /reward and /readyz answer 503 and
    the worker's read fails as an outage it backs off from, not as a bug (a 500, a crash)."""
    from app.poison import RETRYABLE, is_poison

    api = create_app(cluster_settings, rng=np.random.default_rng(5)).test_client()
    body = {"experiment": "exp0", "context": {"hour": 3}}
    decided = api.post("/choose", json=body, headers=AUTH).get_json()
    serving = redis_cluster.master_of(keys.stream("exp0"))
    victim = next(
        p
        for p in redis_cluster.ports
        if p != serving and redis_cluster.node(p).info("replication")["role"] == "master"
    )
    [replica] = [
        v["port"]
        for k, v in redis_cluster.node(victim).info("replication").items()
        if k.startswith("slave")
    ]
    worker = Worker.from_services(build_services(cluster_settings), clock=FakeClock(), block_ms=10)
    redis_cluster.node(replica).config_set("cluster-replica-no-failover", "yes")
    try:
        redis_cluster.kill(victim)
        poll(
            lambda: redis_cluster.node(serving).execute_command("CLUSTER INFO")["cluster_state"]
            == "fail",
            timeout=30,
            interval=0.1,
        )
        sent = {"decision_id": decided["decision_id"], "arm": decided["arms"][0]["arm"]}
        for route, json in (("/choose", body), ("/reward", {**sent, "reward": 1.0})):
            answer = api.post(route, json=json, headers=AUTH)
            assert answer.status_code == 503, (route, answer.get_json())
            assert answer.get_json()["error"]["code"] == "storage_unavailable"
            assert answer.headers["Retry-After"] == "1"
        ready = api.get("/readyz")
        assert ready.status_code == 503
        assert ready.get_json()["checks"]["redis"].startswith("unavailable: ")
        with pytest.raises(RETRYABLE) as raised:
            worker.step()
        assert not is_poison(raised.value)
    finally:  # the session's cluster whole again for the next tests
        if redis_cluster.pid(victim) is None:
            redis_cluster.restart(victim)
        redis_cluster.node(replica).config_set("cluster-replica-no-failover", "no")
        poll(lambda: redis_cluster.serving(keys.stream("exp0"), serving) is not None, timeout=30)
        poll(lambda: redis_cluster.rejoined(replica, victim), timeout=30, interval=0.1)
        worker.close()
