"""/choose over many candidates scored by their item features (issue 13's latency targets).

A gunicorn as ``make run`` serves it, with ``banditd worker`` running and
learning the rewards the bench sends meanwhile. Experiments: ``items_shared``
and ``items_hybrid`` (``linucb``, 16 numeric context features, 16 numeric item
features, all pairs: ``D = 16 * 16 + 16 + 17 = 289``; a dynamic catalogue).
The catalogue (``ITEMS`` items) is loaded into the feature store first with
``POST /items/<experiment>`` (timed: the bulk-load figure), and its shared
model is trained on ``TRAIN`` rewards so that /choose scores a learned model.

Then, per experiment and candidate count (200, 1000), /choose is timed:

- ``store``: candidates sent as ids, their features looked up in the store;
- ``inline``: candidates sent as objects with their features (200 only: 1,000
  objects of 16 features are over the 64 KiB body limit).

each one request at a time (unloaded latency) while the API processes first
meet the items, again once they hold them, and at a fixed open-loop rate
(latency under load, with the worker learning), p50/p99 reported.

Run from the repository root, against a migrated database it may empty::

    REDIS_URL=... DATABASE_URL=... .venv/bin/python -m bench.item_choose
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
import requests

from app.services import database_engine
from bench import seed
from bench.client import Endpoint
from bench.openloop import open_loop, sequential
from bench.stack import ROOT, Gunicorn, UpdateWorker

API_KEY = "bench-items-key"
OUT = ROOT / "bench" / "out" / "item_choose"
CONTEXT_DIM = ITEM_DIM = 16
ITEMS = 20_000  # in the store
TRAIN = 2_000  # rewards the model learns before it is timed
CANDIDATES = (200, 1000)
MODELS = ("shared", "hybrid")


def write_config(out: Path) -> Path:
    """The bench's item experiments as TOML."""
    context = ", ".join(f'"c{i}"' for i in range(CONTEXT_DIM))
    items = ", ".join(f'"i{j}"' for j in range(ITEM_DIM))
    text = []
    for model in MODELS:
        text += [
            f"[experiments.items_{model}]",
            'policy = "linucb"',
            "alpha = 0.3",
            "epsilon = 0.05",
            'arms = "dynamic"',
            "max_arms = 1000000",
            f'model = "{model}"',
            'missing_item = "error"',
            "reward = { default = 0.0, window_seconds = 3600, min = 0.0, max = 1.0 }",
            f"features = {{ numeric = [{context}] }}",
            f"item_features = {{ numeric = [{items}] }}",
            "",
        ]
    path = out / "item_experiments.toml"
    path.write_text("\n".join(text))
    return path


def item_features(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, ITEM_DIM)`` item features."""
    return np.round(rng.standard_normal((n, ITEM_DIM)), 4)


def context(rng: np.random.Generator) -> dict:
    """One request's context."""
    return {f"c{i}": round(float(v), 4) for i, v in enumerate(rng.standard_normal(CONTEXT_DIM))}


def features_of(row: np.ndarray) -> dict:
    """An item's features as the API takes them."""
    return {f"i{j}": float(v) for j, v in enumerate(row)}


def load_catalogue(base: str, experiment: str, features: np.ndarray, batch: int = 10_000) -> dict:
    """Bulk-load the items with ``POST /items/<experiment>``; how long each batch took."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    seconds = []
    with requests.Session() as http:
        for start in range(0, len(features), batch):
            body = {
                "items": [
                    {"id": f"item{start + i}", "features": features_of(row)}
                    for i, row in enumerate(features[start : start + batch])
                ]
            }
            t = time.perf_counter()
            answer = http.post(f"{base}/items/{experiment}", json=body, headers=headers)
            seconds.append(time.perf_counter() - t)
            answer.raise_for_status()
    return {"items": len(features), "batch": batch, "seconds_per_batch": seconds}


def train(base: str, experiment: str, features: np.ndarray, rng, rounds: int) -> None:
    """Teach the model: /choose over 20 stored candidates, reward from a hidden bilinear form."""
    W = rng.standard_normal((CONTEXT_DIM, ITEM_DIM)) / np.sqrt(CONTEXT_DIM * ITEM_DIM)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with requests.Session() as http:
        for _ in range(rounds):
            ctx = context(rng)
            ids = rng.choice(len(features), 20, replace=False)
            body = {
                "experiment": experiment,
                "context": ctx,
                "candidates": [f"item{i}" for i in ids],
            }
            answer = http.post(f"{base}/choose", json=body, headers=headers)
            answer.raise_for_status()
            decision = answer.json()
            arm = decision["arms"][0]["arm"]
            x = np.array(list(ctx.values()))
            p = 1.0 / (1.0 + np.exp(-(x @ W @ features[int(arm[4:])])))
            reward = {
                "decision_id": decision["decision_id"],
                "arm": arm,
                "reward": float(rng.random() < p),
            }
            http.post(f"{base}/reward", json=reward, headers=headers).raise_for_status()


def choose_bodies(
    experiment: str, features: np.ndarray, rng, n_candidates: int, inline: bool, count: int = 200
) -> list[bytes]:
    """/choose bodies over ``n_candidates`` random items of the catalogue."""
    bodies = []
    for _ in range(count):
        ids = rng.choice(len(features), n_candidates, replace=False)
        if inline:
            candidates = [{"id": f"item{i}", "features": features_of(features[i])} for i in ids]
        else:
            candidates = [f"item{i}" for i in ids]
        bodies.append(
            orjson.dumps(
                {"experiment": experiment, "context": context(rng), "candidates": candidates}
            )
        )
    return bodies


# What the feature lookup sends (app/features/item_cache.py) and the decision's write (a
# script or a transaction): Redis' time in each, from INFO commandstats (the commands a
# script or an EXEC runs are counted inside it)
LOOKUP_COMMANDS = ("cmdstat_mget", "cmdstat_zmscore", "cmdstat_xrange")
SCRIPT_COMMANDS = ("cmdstat_evalsha", "cmdstat_multi", "cmdstat_exec")
WARMUP_REQUESTS = 20  # sent one at a time before the timed ones (bench.openloop.sequential)


def command_usec(client: redis.Redis) -> dict[str, float]:
    """Microseconds Redis has spent in the lookup's commands and in scripts."""
    stats = client.info("commandstats")
    return {
        kind: float(sum(stats[name]["usec"] for name in names if name in stats))
        for kind, names in (("lookup", LOOKUP_COMMANDS), ("script", SCRIPT_COMMANDS))
    }


def measure(
    client: redis.Redis, endpoint, bodies: list[bytes], seconds: float, rate: float
) -> dict:
    """Unloaded (one at a time) and open-loop latency of /choose over ``bodies``, and Redis'
    time per request in the lookup and the decision script while one at a time.

    One at a time twice: first while each API process meets the items for the first time
    (``sequential``: the first few hundred requests read and encode most of their candidates),
    then again once every process holds them (``sequential_held``: what a process serves
    after its first minutes, a new item aside).
    """

    async def alone(warmup: int):
        return await sequential(
            endpoint, bodies, seconds=seconds, max_requests=2000, warmup_requests=warmup
        )

    before = command_usec(client)
    one_at_a_time = asyncio.run(alone(WARMUP_REQUESTS))
    after = command_usec(client)
    sent = one_at_a_time.requests + WARMUP_REQUESTS
    held = asyncio.run(alone(0))
    held_after = command_usec(client)
    loaded = asyncio.run(open_loop(endpoint, bodies, rate, seconds, warmup=1.0))
    return {
        "sequential": one_at_a_time.summary(),
        "sequential_held": held.summary(),
        "open_loop": loaded.summary(),
        "redis_us_per_request": {
            kind: round((after[kind] - before[kind]) / sent, 1) for kind in before
        },
        "redis_us_per_request_held": {
            kind: round((held_after[kind] - after[kind]) / held.requests, 1) for kind in before
        },
    }


def run(client: redis.Redis, engine, env: dict, out: Path, rng, seconds: float) -> dict:
    """Load, train and time every experiment and candidate count."""
    out.mkdir(parents=True, exist_ok=True)
    config = write_config(out)
    env = {**env, "BANDITD_CONFIG": str(config), "BANDITD_API_KEYS": API_KEY}
    seed.reset(client, engine)
    features = item_features(rng, ITEMS)
    result: dict = {
        "items": ITEMS,
        "context_dim": CONTEXT_DIM,
        "item_dim": ITEM_DIM,
        "shared_dim": CONTEXT_DIM * ITEM_DIM + ITEM_DIM + CONTEXT_DIM + 1,
        "runs": [],
    }
    with UpdateWorker(env, out) as worker, Gunicorn("wsgi:app", 2, env, out) as api:
        base = f"http://127.0.0.1:{api.port}"
        headers = {"Authorization": f"Bearer {API_KEY}"}
        for model in MODELS:
            name = f"items_{model}"
            result[f"bulk_load_{model}"] = load_catalogue(base, name, features)
            train(base, name, features, rng, TRAIN)
            if not worker.alive():
                raise RuntimeError(f"the worker stopped; see {worker.log_path}")
            endpoint = Endpoint("127.0.0.1", api.port, "/choose", "POST", headers)
            for n in CANDIDATES:
                # 1,000 candidates with 16 features each are about 300 KiB of JSON: over
                # the 64 KiB body limit (413), so inline features are timed at 200 only
                for inline in (False, True) if n <= 200 else (False,):
                    bodies = choose_bodies(name, features, rng, n, inline)
                    rate = 40.0 if n == 200 else 10.0
                    figures = measure(client, endpoint, bodies, seconds, rate)
                    result["runs"].append(
                        {
                            "model": model,
                            "candidates": n,
                            "features_from": "inline" if inline else "store",
                            "rate": rate,
                            **figures,
                        }
                    )
                    print(json.dumps(result["runs"][-1]), flush=True)
    seed.reset(client, engine)
    return result


def phase(b) -> dict:
    """``make bench``'s item_choose phase (``b`` is a bench.phases.Bench)."""
    return run(b.client, b.engine, b.env, OUT, b.rng, max(b.fixed_seconds, 3.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    parser.add_argument("--output", type=Path, default=OUT / "item_choose.json")
    args = parser.parse_args()
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    engine = database_engine(os.environ["DATABASE_URL"])
    env = {
        **os.environ,
        "REDIS_URL": os.environ["REDIS_URL"],
        "DATABASE_URL": os.environ["DATABASE_URL"],
    }
    result = run(client, engine, env, OUT, np.random.default_rng(13), args.seconds)
    result["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    engine.dispose()
    args.output.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
