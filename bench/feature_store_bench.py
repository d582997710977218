"""The feature store's costs: a bulk load of 10,000 items, and what /choose's lookup sends to Redis.

Starts gunicorn as ``make run`` serves it (gunicorn.conf.py, 2 processes) on a
free port, with one experiment ``jobs`` (``model = "shared"``, 16 numeric
context and 16 numeric item features, a dynamic catalogue). Then:

1. **Bulk load**: ``--runs`` times, ``POST /items/jobs`` with ``--items`` items
   of 16 features each (new values each run), timed from the first byte sent
   to the answer read; the items stored are counted in Redis afterwards.
2. **Lookup commands per /choose**: Redis ``MONITOR``, filtered to the
   bench's db, records every command the API sends while ``--chooses``
   requests run one at a time, first with candidates as objects carrying
   their features (no store lookup), then as ids plus two entities (store
   lookup). The difference per request is what the lookup adds; that its
   commands travel as one pipeline (one round trip) is counted directly in
   tests/test_candidates.py (``test_items_and_entities_cost_one_round_trip``).
3. **Lookup time in process**: ``resolve_parsed`` for 200 and 1,000 stored
   ids plus two entities, ``--lookups`` times each, p50/p99.

Run from the repository root against a migrated database (the API reads config
versions there; nothing is written to it) and a Redis db the bench may flush::

    REDIS_URL=redis://localhost:6379/11 \\
    DATABASE_URL=postgresql://banditd:banditd@localhost:5432/banditd_e1 \\
    .venv/bin/python -m bench.feature_store_bench
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import redis
import requests

from app.config import config_from_text
from app.features.candidates import resolve_parsed
from app.features.store import FeatureStore
from bench.stack import Gunicorn

API_KEY = "bench-feature-store-key"
EXPERIMENT = "jobs"
DIM = 16
CANDIDATES = 200
ENTITIES = {"user": "u1", "region": "north"}
CONFIG = f"""
[experiments.{EXPERIMENT}]
policy = "linucb"
arms = "dynamic"
model = "shared"
features = {{ numeric = [{", ".join(f'"c{i}"' for i in range(DIM))}] }}
item_features = {{ numeric = [{", ".join(f'"i{j}"' for j in range(DIM))}] }}
"""


def items_body(rng: np.random.Generator, n: int) -> bytes:
    """A bulk-load body of ``n`` items with DIM numeric features each."""
    values = np.round(rng.standard_normal((n, DIM)), 4).tolist()
    items = [
        {"id": f"job_{i}", "features": {f"i{j}": v for j, v in enumerate(row)}}
        for i, row in enumerate(values)
    ]
    return orjson.dumps({"items": items, "ttl_seconds": 3600})


def bulk_load(url: str, client: redis.Redis, runs: int, n: int) -> list[dict]:
    """Time ``runs`` bulk loads of ``n`` items; each run's seconds and the items found stored."""
    rng = np.random.default_rng(7)
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    results = []
    with requests.Session() as session:
        for _ in range(runs):
            body = items_body(rng, n)
            started = time.perf_counter()
            response = session.post(f"{url}/items/{EXPERIMENT}", data=body, headers=headers)
            seconds = time.perf_counter() - started
            response.raise_for_status()
            stored = sum(1 for _ in client.scan_iter(f"bd:{{{EXPERIMENT}}}:item:*", count=5000))
            results.append(
                {
                    "seconds": round(seconds, 3),
                    "items_per_second": round(n / seconds),
                    "body_bytes": len(body),
                    "answer": response.json(),
                    "items_in_redis": stored,
                    "load_average_1m": os.getloadavg()[0],
                }
            )
    return results


def choose_bodies(rng: np.random.Generator, chooses: int, inline: bool) -> list[dict]:
    """/choose bodies over CANDIDATES stored items: objects with features, or ids and entities."""
    bodies = []
    for _ in range(chooses):
        ids = rng.choice(10_000, CANDIDATES, replace=False)
        context = {f"c{i}": float(v) for i, v in enumerate(rng.standard_normal(DIM))}
        if inline:
            candidates = [
                {"id": f"job_{i}", "features": {f"i{j}": 0.5 for j in range(DIM)}} for i in ids
            ]
            bodies.append({"experiment": EXPERIMENT, "context": context, "candidates": candidates})
        else:
            candidates = [f"job_{i}" for i in ids]
            bodies.append(
                {
                    "experiment": EXPERIMENT,
                    "context": context,
                    "candidates": candidates,
                    "entities": ENTITIES,
                }
            )
    return bodies


def monitored_commands(url: str, redis_url: str, bodies: list[dict]) -> Counter:
    """Commands the API sends to the bench's Redis db while ``bodies`` are chosen one by one."""
    db = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs.get("db", 0)
    seen: Counter = Counter()
    stop = threading.Event()
    ready = threading.Event()

    def watch() -> None:
        with redis.Redis.from_url(redis_url).monitor() as monitor:
            ready.set()
            for line in monitor.listen():
                if stop.is_set() and line["command"].startswith("ECHO bench-monitor-end"):
                    return
                if line.get("db") == db and not line["command"].startswith("ECHO"):
                    seen[line["command"].split()[0].upper()] += 1

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    ready.wait(5)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with requests.Session() as session:
        for body in bodies:
            session.post(f"{url}/choose", json=body, headers=headers).raise_for_status()
    stop.set()
    redis.Redis.from_url(redis_url).echo("bench-monitor-end")
    thread.join(10)
    return seen


def lookup_times(client: redis.Redis, lookups: int) -> dict[int, dict[str, float]]:
    """p50/p99 ms of resolve_parsed over 200 and 1,000 stored ids plus two entities."""
    experiment = config_from_text(CONFIG, "bench").get(EXPERIMENT)
    rng = np.random.default_rng(11)
    out = {}
    for n in (200, 1000):
        times = []
        for _ in range(lookups):
            ids = [f"job_{i}" for i in rng.choice(10_000, n, replace=False)]
            started = time.perf_counter()
            resolve_parsed(client, experiment, ids, None, {}, ENTITIES)
            times.append((time.perf_counter() - started) * 1000)
        out[n] = {
            "p50_ms": round(float(np.percentile(times, 50)), 3),
            "p99_ms": round(float(np.percentile(times, 99)), 3),
        }
    return out


def main() -> None:
    """Run the three measurements and print them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--chooses", type=int, default=50)
    parser.add_argument("--lookups", type=int, default=300)
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL", "redis://localhost:6379/11")
    database_url = os.environ.get(
        "DATABASE_URL", "postgresql://banditd:banditd@localhost:5432/banditd_e1"
    )
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    store = FeatureStore(client)
    for kind, entity_id in ENTITIES.items():
        store.put_entity(kind, entity_id, {"c0": 1.0, "c1": 2.0}, 3600)

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "experiments.toml"
        config.write_text(CONFIG)
        env = {
            "BANDITD_CONFIG": str(config),
            "BANDITD_API_KEYS": API_KEY,
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "BANDITD_REQUEST_LOG": "none",
        }
        with Gunicorn("wsgi:app", 2, env, Path(tmp)) as server:
            url = f"http://127.0.0.1:{server.port}"
            bulk = bulk_load(url, client, args.runs, args.items)
            rng = np.random.default_rng(3)
            inline = monitored_commands(url, redis_url, choose_bodies(rng, args.chooses, True))
            stored = monitored_commands(url, redis_url, choose_bodies(rng, args.chooses, False))
    per_request = {
        mode: {name: round(count / args.chooses, 2) for name, count in sorted(seen.items())}
        for mode, seen in (("inline_features", inline), ("ids_and_2_entities", stored))
    }
    report = {
        "bulk_load": bulk,
        "redis_commands_per_choose": per_request,
        "resolve_in_process": lookup_times(client, args.lookups),
        "cpus": os.cpu_count(),
    }
    client.flushdb()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
