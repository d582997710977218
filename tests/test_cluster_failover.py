"""A Redis Cluster master killed under load: its replica takes over, nothing acknowledged is lost.

Real processes (gunicorn with 2 web workers, ``banditd worker``) on the
session's cluster of 3 masters and 3 replicas, answers waiting for one
replica (the default on a cluster with replicas). The master serving the
experiment is SIGKILLed while the load runs; once its replica serves the
slot, the killed node starts again and rejoins as a replica. Every /choose
answered 200 and every /reward answered 202 is then in Postgres exactly once
(the audit of ``make chaos``), and ``banditd rebuild --verify`` finds the live
model equal to the log replayed.
"""

from __future__ import annotations

import os
import signal

import pytest

from app import keys
from app.cluster import ReplicaWait, ReplicationLagging
from chaos.audit import rebuild, wait_for_log
from chaos.load import Ledger, LoadGenerator, experiment_toml
from tests.conftest import API_KEY, TEST_DATABASE_URL, poll
from tests.service_processes import replace_atomically, start_service

EXPERIMENT = "failover"


def test_a_master_killed_under_load_loses_nothing_acknowledged(
    redis_cluster, cluster_client, engine, tmp_path, request
):
    config = tmp_path / "experiments.toml"
    replace_atomically(config, experiment_toml(EXPERIMENT, window_seconds=2.0))
    svc = start_service(
        config, tmp_path, redis_url=redis_cluster.url, database_url=TEST_DATABASE_URL
    )
    ledger = Ledger()
    load = LoadGenerator(svc.base_url, API_KEY, EXPERIMENT, ledger, threads=3, rate=60, seed=15)
    try:
        load.start()
        poll(lambda: len(ledger.decisions) >= 100, timeout=30)
        failover = redis_cluster.fail_over(keys.stream(EXPERIMENT))
        print("failover:", failover)
        after = len(ledger.decisions)
        poll(lambda: len(ledger.decisions) >= after + 100, timeout=60)
        load.stop()
        assert failover["promoted"] != failover["killed_master"]
        assert not ledger.unexpected, ledger.unexpected
        assert ledger.five_xx() == ledger.five_xx(503)  # unavailable for a moment, never broken
        checked, _, settled = wait_for_log(engine, cluster_client, EXPERIMENT, ledger, timeout=60)
        assert settled, checked.examples
        assert (checked.lost_total, checked.duplicated_total) == (0, 0), checked.examples
        verify = rebuild(svc.env, EXPERIMENT, verify=True)
        assert verify.ok, verify.output
        print("ledger:", ledger.summary())
    finally:
        load.stop_event.set()
        svc.stop()
        if request.session.testsfailed:
            svc.dump_logs()


def test_without_wait_a_failover_loses_an_acknowledged_write_and_with_wait_it_is_refused(
    redis_cluster, cluster_client
):
    """Why answers wait: with the replica behind (stopped, its link cut), a write
    acknowledged without WAIT is gone once the master dies and the replica takes over, and
    the same write with WAIT 1 was never acknowledged (ReplicationLagging: the API's 503)."""
    key = "bd:{lossdemo}:x"
    master = redis_cluster.master_of(key)
    [replica] = [
        v["port"]
        for k, v in redis_cluster.node(master).info("replication").items()
        if k.startswith("slave")
    ]
    script = cluster_client.register_script("return redis.call('SET', KEYS[1], ARGV[1])")
    ReplicaWait(cluster_client, 1).script(script, keys=[key], args=["replicated"])

    def serving() -> int | None:
        try:
            return redis_cluster.master_of(key)
        except RuntimeError:  # no node says the cluster is ok: the failover is under way
            return None

    os.kill(redis_cluster.pid(replica), signal.SIGSTOP)
    try:
        try:
            # and cut the link: what the master sends from now on stays in its backlog
            redis_cluster.node(master).client_kill_filter(_type="replica")
            with pytest.raises(ReplicationLagging):
                ReplicaWait(cluster_client, 1, timeout_ms=200).script(
                    script, keys=[key], args=["refused"]
                )
            acked = ReplicaWait(cluster_client, 0).script(script, keys=[key], args=["acked"])
            assert acked == b"OK"
            redis_cluster.kill(master)
        finally:
            os.kill(redis_cluster.pid(replica), signal.SIGCONT)
        poll(lambda: serving() == replica, timeout=30, interval=0.1)
        assert redis_cluster.node(replica).get(key) == b"replicated"  # "acked" was lost
    finally:  # the session's cluster whole again for the next tests
        if redis_cluster.pid(master) is None:
            redis_cluster.restart(master)
        poll(lambda: serving() is not None, timeout=30, interval=0.1)
        poll(lambda: redis_cluster.rejoined(master, serving()), timeout=30, interval=0.1)
