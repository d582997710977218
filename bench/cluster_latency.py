"""What waiting for a replica costs: /choose and /reward latency on one Redis and on a cluster.

Three set-ups, each with gunicorn (2 web workers) and one ``banditd worker``
(tests/service_processes.py) on the same experiments file and Postgres:

- ``single``: the Redis of ``REDIS_URL`` (no replica; nothing to wait for);
- ``cluster, WAIT 0``: a 3-master/3-replica Redis Cluster on loopback
  (chaos/cluster_nodes.py), ``BANDITD_REDIS_REPLICAS_TO_WAIT=0``;
- ``cluster, WAIT 1``: the same cluster, the default there: every answer
  waits until one replica holds its write.

All three run at once; one client per set-up sends choose+reward pairs one
after the other (latency, not throughput) over one kept-alive connection,
the set-ups taking turns in rounds so that the box's other load falls on all
alike. Then, on the cluster alone, a script like record_decision's is timed
with and without ``WAIT 1`` (the Redis round trip without HTTP). Prints a
JSON line per set-up and a Markdown table::

    REDIS_URL=redis://localhost:6379/10 DATABASE_URL=postgresql://... \\
        .venv/bin/python -m bench.cluster_latency [--pairs 2000] [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

from chaos.cluster_nodes import LoopbackCluster
from chaos.load import experiment_toml
from tests.conftest import API_KEY
from tests.service_processes import replace_atomically, start_service

EXPERIMENT = "latency"


class Pairs:
    """One client's choose+reward pairs against one service, its latencies kept."""

    def __init__(self, name: str, base_url: str, seed: int) -> None:
        self.name = name
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {API_KEY}"
        self.rng = np.random.default_rng(seed)
        self.times: dict[str, list[float]] = {"/choose": [], "/reward": []}
        self.failures = 0

    def send(self, pairs: int, *, keep: bool = True) -> None:
        """Send ``pairs`` pairs one after the other; ``keep``: count their latencies."""
        for _ in range(pairs):
            context = {"hour": int(self.rng.integers(24)), "city": "berlin"}
            body = {"experiment": EXPERIMENT, "context": context}
            started = time.perf_counter()
            r = self.session.post(self.base_url + "/choose", json=body, timeout=10)
            chose = time.perf_counter() - started
            if r.status_code != 200:
                self.failures += 1
                continue
            answer = r.json()
            sent = {"decision_id": answer["decision_id"], "arm": answer["arms"][0]["arm"]}
            started = time.perf_counter()
            r = self.session.post(self.base_url + "/reward", json={**sent, "reward": 1}, timeout=10)
            rewarded = time.perf_counter() - started
            self.failures += r.status_code != 202
            if keep:
                self.times["/choose"].append(chose)
                self.times["/reward"].append(rewarded)

    def summary(self) -> dict:
        """Percentiles in ms per route."""
        out: dict = {"setup": self.name, "pairs": len(self.times["/choose"])}
        out["failures"] = self.failures
        for route, values in self.times.items():
            ms = np.array(values) * 1000
            out[route] = {
                "p50_ms": round(float(np.percentile(ms, 50)), 2),
                "p99_ms": round(float(np.percentile(ms, 99)), 2),
                "mean_ms": round(float(ms.mean()), 2),
            }
        return out


def redis_cost(url: str, replicas: int, rounds: int = 20, per_round: int = 250) -> dict:
    """The record_decision script alone against the script and WAIT, in alternating rounds:
    mean µs per call of each, from one client on loopback."""
    from app.cluster import ReplicaWait, connect

    client = connect(url)
    script = client.register_script(
        "redis.call('XADD', KEYS[1], '*', 'f', ARGV[1]) return redis.call('HSET', KEYS[2], 'v', 1)"
    )
    stream, marker = "bd:{latency}:events", "bd:{latency}:m"
    waits = {0: ReplicaWait(client, 0), replicas: ReplicaWait(client, replicas)}
    spent = {0: 0.0, replicas: 0.0}
    for _ in range(rounds):
        for n, wait in waits.items():
            started = time.perf_counter()
            for _ in range(per_round):
                wait.script(script, keys=[stream, marker], args=["x"])
            spent[n] += time.perf_counter() - started
    client.delete(stream, marker)
    client.close()
    calls = rounds * per_round
    return {f"WAIT {n}": round(spent[n] / calls * 1e6, 1) for n in spent}


def start(name: str, config: Path, logs: Path, redis_url: str, wait: str | None):
    """The service on ``redis_url`` (``wait``: BANDITD_REDIS_REPLICAS_TO_WAIT)."""
    if wait is None:
        os.environ.pop("BANDITD_REDIS_REPLICAS_TO_WAIT", None)
    else:
        os.environ["BANDITD_REDIS_REPLICAS_TO_WAIT"] = wait
    logs.mkdir(parents=True)
    return start_service(config, logs, redis_url=redis_url, database_url=os.environ["DATABASE_URL"])


def main(argv: list[str] | None = None) -> int:
    """Entry point; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m bench.cluster_latency")
    parser.add_argument("--pairs", type=int, default=2000, help="per set-up, after the warm-up")
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds")
    args = parser.parse_args(argv)
    os.environ["BANDITD_WORKER_METRICS_PORT"] = "0"
    services = []
    with tempfile.TemporaryDirectory(prefix="banditd-latency-") as tmp:
        work = Path(tmp)
        config = work / "experiments.toml"
        replace_atomically(config, experiment_toml(EXPERIMENT, window_seconds=60))
        cluster = LoopbackCluster.start(work / "cluster")
        try:
            setups = [
                ("single", os.environ["REDIS_URL"], None),
                ("cluster, WAIT 0", cluster.url, "0"),
                ("cluster, WAIT 1", cluster.url, "1"),
            ]
            for i, (name, url, wait) in enumerate(setups):
                services.append(start(name, config, work / f"s{i}", url, wait))
            clients = [Pairs(name, svc.base_url, i) for i, ((name, _, _), svc) in
                       enumerate(zip(setups, services))]  # fmt: skip
            for c in clients:
                c.send(200, keep=False)  # warm-up
            for _ in range(args.rounds):  # alternating: the box's other load falls on all alike
                for c in clients:
                    c.send(args.pairs // args.rounds)
            results = [c.summary() for c in clients]
            for svc in services:
                svc.stop()
            services = []
            script = redis_cost(cluster.url, 1)
        finally:
            for svc in services:
                svc.stop()
            cluster.stop()
    for r in results:
        print(json.dumps(r))
    print(json.dumps({"record script on the cluster, µs per call": script}))
    print("\n| set-up | /choose p50 | /choose p99 | /reward p50 | /reward p99 | failures |")
    print("|---|---|---|---|---|---|")
    for r in results:
        c, w = r["/choose"], r["/reward"]
        print(
            f"| {r['setup']} | {c['p50_ms']} ms | {c['p99_ms']} ms | {w['p50_ms']} ms"
            f" | {w['p99_ms']} ms | {r['failures']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
