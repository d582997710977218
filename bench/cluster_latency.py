"""What waiting for a replica costs: /choose and /reward latency on one Redis and on a cluster.

Three set-ups, one after the other, each with gunicorn (2 web workers) and one
``banditd worker`` (tests/service_processes.py) on the same experiments file:

- ``single``: the Redis of ``REDIS_URL`` (no replica; nothing to wait for);
- ``cluster, WAIT 0``: a 3-master/3-replica Redis Cluster on loopback
  (chaos/cluster_nodes.py), ``BANDITD_REDIS_REPLICAS_TO_WAIT=0``;
- ``cluster, WAIT 1``: the same cluster, the default there: every answer
  waits until one replica holds its write.

One client sends choose+reward pairs one after the other (latency, not
throughput), over one kept-alive connection, after a warm-up. Prints a JSON
line per set-up and a Markdown table::

    REDIS_URL=redis://localhost:6379/10 DATABASE_URL=postgresql://... \\
        .venv/bin/python -m bench.cluster_latency [--pairs 2000]
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


def measure(base_url: str, pairs: int, warmup: int = 200) -> dict:
    """Send ``warmup`` then ``pairs`` choose+reward pairs; latency percentiles in ms."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {API_KEY}"
    rng = np.random.default_rng(5)
    times: dict[str, list[float]] = {"/choose": [], "/reward": []}
    failures = 0
    for i in range(warmup + pairs):
        context = {"hour": int(rng.integers(24)), "city": "berlin"}
        started = time.perf_counter()
        r = session.post(
            base_url + "/choose", json={"experiment": EXPERIMENT, "context": context}, timeout=10
        )
        chose = time.perf_counter() - started
        if r.status_code != 200:
            failures += 1
            continue
        answer = r.json()
        body = {"decision_id": answer["decision_id"], "arm": answer["arms"][0]["arm"], "reward": 1}
        started = time.perf_counter()
        r = session.post(base_url + "/reward", json=body, timeout=10)
        rewarded = time.perf_counter() - started
        failures += r.status_code != 202
        if i >= warmup:
            times["/choose"].append(chose)
            times["/reward"].append(rewarded)
    session.close()
    out: dict = {"pairs": pairs, "failures": failures}
    for route, values in times.items():
        ms = np.array(values) * 1000
        out[route] = {
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "mean_ms": round(float(ms.mean()), 2),
        }
    return out


def run_setup(name: str, config: Path, logs: Path, redis_url: str, wait: str | None, pairs: int):
    """Start the service on ``redis_url`` (``wait``: BANDITD_REDIS_REPLICAS_TO_WAIT), measure."""
    if wait is None:
        os.environ.pop("BANDITD_REDIS_REPLICAS_TO_WAIT", None)
    else:
        os.environ["BANDITD_REDIS_REPLICAS_TO_WAIT"] = wait
    logs.mkdir(parents=True)
    svc = start_service(config, logs, redis_url=redis_url, database_url=os.environ["DATABASE_URL"])
    try:
        return {"setup": name, **measure(svc.base_url, pairs)}
    finally:
        svc.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m bench.cluster_latency")
    parser.add_argument("--pairs", type=int, default=2000)
    args = parser.parse_args(argv)
    os.environ["BANDITD_WORKER_METRICS_PORT"] = "0"
    results = []
    with tempfile.TemporaryDirectory(prefix="banditd-latency-") as tmp:
        work = Path(tmp)
        config = work / "experiments.toml"
        replace_atomically(config, experiment_toml(EXPERIMENT, window_seconds=60))
        single = os.environ["REDIS_URL"]
        results.append(run_setup("single", config, work / "single", single, None, args.pairs))
        print(json.dumps(results[-1]), flush=True)
        cluster = LoopbackCluster.start(work / "cluster")
        try:
            for wait in ("0", "1"):
                name = f"cluster, WAIT {wait}"
                logs = work / f"cluster-wait-{wait}"
                results.append(run_setup(name, config, logs, cluster.url, wait, args.pairs))
                print(json.dumps(results[-1]), flush=True)
        finally:
            cluster.stop()
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
