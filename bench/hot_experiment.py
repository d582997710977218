"""One hot experiment's worker drain on one Redis and on a Redis Cluster, with and without WAIT.

All traffic on one experiment is one stream, learned in order by one worker:
its drain rate is the experiment's ceiling. This fills the stream of the
bench's ``bench_linucb`` (K = 50, d = 32; bench/experiments.toml) with
``--decisions`` decisions and as many rewards (bench/seed.py: the scripts
/choose and /reward run), then times an in-process ``Worker`` draining it
into Postgres, for three set-ups in turn:

- ``single``: the Redis of ``--redis-url``;
- ``cluster, WAIT 0`` and ``cluster, WAIT 1``: a 3-master/3-replica cluster
  on loopback (chaos/cluster_nodes.py); with 1 the worker waits for a replica
  after each batch's save and acknowledgement.

::

    .venv/bin/python -m bench.hot_experiment --redis-url redis://localhost:6379/10 \\
        --database-url postgresql://banditd:banditd@localhost:5432/banditd_e3 [--decisions 20000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np
import sqlalchemy

from app import keys
from app.cluster import connect, primaries
from app.services import build_services, database_engine
from app.settings import Settings
from app.worker import Worker
from bench.configs import MAIN_CONFIG, experiments
from bench.seed import TABLES, record_decisions, record_rewards
from chaos.cluster_nodes import LoopbackCluster

EXPERIMENT = "bench_linucb"


def fill(redis_url: str, database_url: str, decisions: int, seed: int) -> int:
    """Empty Redis and the log, then record ``decisions`` decisions and their rewards;
    the number of stream entries."""
    client = connect(redis_url)
    for node in primaries(client):
        node.flushdb()
    engine = database_engine(database_url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f"TRUNCATE {', '.join(TABLES)}"))
    engine.dispose()
    for script in resources.files("app.lua").iterdir():
        if script.name.endswith(".lua"):  # a cluster pipeline does not load scripts itself
            client.script_load(script.read_text())
    exp = experiments(MAIN_CONFIG)[EXPERIMENT]
    rng = np.random.default_rng(seed)
    arms = [exp.arms[i] for i in rng.integers(len(exp.arms), size=decisions)]
    from app.event_stream import EventStream

    EventStream(client).announce_config(exp, int(time.time() * 1000))
    ids = record_decisions(client, exp, arms, rng, announce=False)
    record_rewards(client, exp, list(zip(ids, arms)), rng)
    entries = int(client.xlen(keys.stream(EXPERIMENT)))
    client.close()
    return entries


def drain(redis_url: str, database_url: str, replicas: int | None) -> dict:
    """Time one worker learning and logging the whole stream."""
    settings = Settings(
        config_path=str(MAIN_CONFIG),
        redis_url=redis_url,
        database_url=database_url,
        redis_replicas_to_wait=replicas,
        views_refresh_seconds=0,
        worker_metrics_port=0,
    )
    services = build_services(settings)
    worker = Worker.from_services(services, block_ms=10)
    started = time.perf_counter()
    try:
        processed = worker.run(until_idle=True)
    finally:
        worker.close()
    seconds = time.perf_counter() - started
    return {
        "replicas_waited_for": services.replicas.replicas,
        "entries": processed,
        "seconds": round(seconds, 2),
        "events_per_s": round(processed / seconds),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m bench.hot_experiment")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--decisions", type=int, default=20_000)
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="banditd-hot-") as tmp:
        cluster = LoopbackCluster.start(Path(tmp) / "cluster")
        try:
            setups = [
                ("single", args.redis_url, None),
                ("cluster, WAIT 0", cluster.url, 0),
                ("cluster, WAIT 1", cluster.url, 1),
            ]
            for name, url, replicas in setups:
                entries = fill(url, args.database_url, args.decisions, seed=7)
                results.append(
                    {"setup": name, "filled": entries, **drain(url, args.database_url, replicas)}
                )
                print(json.dumps(results[-1]), flush=True)
        finally:
            cluster.stop()
    print("\n| set-up | entries | drain | events/s |")
    print("|---|---|---|---|")
    for r in results:
        print(f"| {r['setup']} | {r['entries']} | {r['seconds']} s | {r['events_per_s']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
