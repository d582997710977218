"""/choose with a model per segment: 100,000 segments, what each costs in Redis, and the latency.

One experiment, ``segmented`` (``linucb``, 4 arms, 6 numeric features plus the
intercept, ``segment_by = "store_id"``). Every one of ``SEGMENTS`` segments is
given learned arms directly in Redis (as the worker saves them), and Redis'
``used_memory`` before and after gives the bytes per segment. Then a
gunicorn as ``make run`` runs it (2 processes, ``banditd worker`` running)
answers /choose for segments drawn uniformly from all of them: one request at
a time, and open loop at a fixed rate while the rewards of those decisions
flow back. Nearly every request names a segment its process has not seen (or
has dropped from its cache), so the figures include loading the segment's
arms from Redis. The API processes' memory is read at the end.

Run from the repository root, against a migrated database it may empty::

    REDIS_URL=... DATABASE_URL=... .venv/bin/python -m bench.segments_bench [--segments 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

import numpy as np
import orjson
import redis

from app import keys
from app.config import load_config
from app.services import database_engine
from bench import seed
from bench.client import Endpoint
from bench.openloop import open_loop, sequential
from bench.stack import ROOT, Gunicorn, UpdateWorker

API_KEY = "bench-segments-key"
OUT = ROOT / "bench" / "out" / "segments"
ARMS = ("coffee", "cake", "sandwich", "juice")
DIM = 6
CONFIG = f"""
[experiments.segmented]
policy = "linucb"
alpha = 0.5
epsilon = 0.05
arms = {json.dumps(list(ARMS))}
segment_by = "store_id"
max_segments = 1000000
reward = {{ default = 0.0, window_seconds = 3600, min = 0.0, max = 1.0 }}
features = {{ numeric = {json.dumps([f"f{i}" for i in range(DIM)])} }}
"""


def seed_segments(client: redis.Redis, exp, segments: int, rng, batch: int = 500) -> None:
    """Learned arms for ``segments`` segments, written as the worker writes them."""
    dim = exp.features.dim
    for start in range(0, segments, batch):
        pipe = client.pipeline(transaction=False)
        for s in range(start, min(start + batch, segments)):
            model_id = exp.for_segment(f"store{s}").model_id
            x = rng.normal(size=(len(ARMS), 16, dim)) / np.sqrt(dim)
            a = np.eye(dim) + np.einsum("kni,knj->kij", x, x)
            a_inv = np.linalg.inv(a)
            b = np.einsum("kni,kn->ki", x, rng.random((len(ARMS), 16)))
            theta = np.einsum("kij,kj->ki", a_inv, b)
            for i, arm in enumerate(ARMS):
                fields = {
                    "A": a[i].tobytes(),
                    "A_inv": a_inv[i].tobytes(),
                    "b": b[i].tobytes(),
                    "theta": theta[i].tobytes(),
                    "n": "16.0",
                    "s": "8.0",
                    "f": "8.0",
                    "v": 1,
                }
                pipe.hset(keys.arm(exp.name, model_id, arm), mapping=fields)
                pipe.hset(keys.arm_versions(exp.name, model_id), arm, 1)
            pipe.sadd(keys.segments(exp.name), f"store{s}")
        pipe.execute()
    client.incr(keys.generation(exp.name))


def bodies(rng, segments: int, count: int) -> list[bytes]:
    """/choose bodies for segments drawn uniformly from all of them."""
    return [
        orjson.dumps(
            {
                "experiment": "segmented",
                "context": {
                    "store_id": f"store{int(rng.integers(segments))}",
                    **{f"f{i}": round(float(v), 3) for i, v in enumerate(rng.normal(size=DIM))},
                },
            }
        )
        for _ in range(count)
    ]


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run(client: redis.Redis, engine, env: dict, out: Path, rng, segments: int, seconds: float):
    """Seed, then time /choose over the segments; the figures."""
    out.mkdir(parents=True, exist_ok=True)
    config = out / "segments.toml"
    config.write_text(CONFIG)
    exp = load_config(str(config)).get("segmented")
    seed.reset(client, engine)
    before = client.info("memory")["used_memory"]
    started = time.perf_counter()
    seed_segments(client, exp, segments, rng)
    seeded = time.perf_counter() - started
    per_segment = (client.info("memory")["used_memory"] - before) / segments
    env = {**env, "BANDITD_CONFIG": str(config), "BANDITD_API_KEYS": API_KEY}
    result = {
        "segments": segments,
        "arms": len(ARMS),
        "dim": exp.features.dim,
        "seed_seconds": round(seeded, 1),
        "redis_bytes_per_segment": round(per_segment),
    }
    with UpdateWorker(env, out), Gunicorn("wsgi:app", 2, env, out) as api:
        endpoint = Endpoint(
            "127.0.0.1", api.port, "/choose", "POST", {"Authorization": f"Bearer {API_KEY}"}
        )

        async def measure() -> dict:
            alone = await sequential(
                endpoint, bodies(rng, segments, 4000), seconds=seconds, max_requests=4000
            )
            loaded = await open_loop(endpoint, bodies(rng, segments, 4000), 200.0, seconds)
            return {"sequential": alone.summary(), "open_loop": loaded.summary()}

        result |= asyncio.run(measure())
        result["api_rss_mib"] = [round(rss_mib(pid), 1) for pid in api.worker_pids()]
    seed.reset(client, engine)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--output", type=Path, default=OUT / "segments.json")
    args = parser.parse_args()
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    engine = database_engine(os.environ["DATABASE_URL"])
    env = dict(os.environ)
    result = run(client, engine, env, OUT, np.random.default_rng(14), args.segments, args.seconds)
    result["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result["load_average"] = os.getloadavg()
    engine.dispose()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
