"""How cost grows: /choose latency over candidates K and features d; memory with 10,000 arms.

Latency here is unloaded: one request at a time (closed loop), so it is the
service time of one request, without queueing.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from app.config import Experiment
from bench import configs
from bench.client import Endpoint, call
from bench.openloop import sequential
from bench.stack import Gunicorn, memory_kib


async def grid(
    endpoint: Endpoint,
    exps: dict[str, Experiment],
    rng: np.random.Generator,
    *,
    seconds: float,
    max_requests: int,
) -> list[dict]:
    """/choose latency for every policy × d × K of the grid experiments."""
    rows = []
    for policy in configs.GRID_POLICIES:
        for dim in configs.GRID_DIMS:
            exp = exps[configs.grid_name(policy, dim)]
            for k in configs.GRID_CANDIDATES:
                bodies = configs.choose_bodies(exp, rng, 32, candidates=k)
                result = await sequential(
                    endpoint, bodies, seconds=seconds, max_requests=max_requests
                )
                summary = result.summary()
                rows.append(
                    {
                        "policy": policy,
                        "d": dim,
                        "candidates": k,
                        "requests": summary["requests"],
                        "errors": summary["errors"],
                        **summary["latency_ms"],
                    }
                )
    return rows


async def _grown(server: Gunicorn, endpoint: Endpoint, raw: bytes, before: dict, grow_kib: int):
    """Send pairs of concurrent /choose until every worker's RSS grew by ``grow_kib``."""
    first_ms = []
    for _ in range(20):
        started = time.perf_counter()
        answers = await asyncio.gather(call(endpoint, raw, 60.0), call(endpoint, raw, 60.0))
        if any(status != 200 for status, _ in answers):
            raise RuntimeError(f"/choose failed during the memory phase: {answers[0]}")
        first_ms.append((time.perf_counter() - started) * 1000.0)
        pids = server.worker_pids()
        if all(memory_kib(p)["rss"] - before[p]["rss"] >= grow_kib for p in pids):
            return first_ms
    raise RuntimeError("not every API process loaded the 10,000-arm experiment")


async def memory(server: Gunicorn, endpoint: Endpoint, exp: Experiment, rng) -> dict:
    """RSS/PSS/USS of each API process before and after it served ``exp`` (cache full)."""
    before = {p: memory_kib(p) for p in server.worker_pids()}
    body = configs.choose_bodies(exp, rng, 1)[0]
    raw = endpoint.request(body)
    n, d = len(exp.arms), exp.features.dim
    arrays_kib = (n * d * d + n * d + 3 * n) * 8 // 1024
    first_ms = await _grown(server, endpoint, raw, before, arrays_kib // 2)
    warm = await sequential(endpoint, [body], seconds=3.0, max_requests=50, warmup_requests=2)
    after = {p: memory_kib(p) for p in server.worker_pids()}
    return {
        "arms": n,
        "d": d,
        "cache_arrays_mib": round(arrays_kib / 1024, 1),
        "processes": [
            {
                "pid": p,
                "before_mib": {k: round(v / 1024, 1) for k, v in before[p].items()},
                "after_mib": {k: round(v / 1024, 1) for k, v in after[p].items()},
            }
            for p in after
        ],
        "first_choose_ms": round(max(first_ms[:1] or [0]), 1),
        "choose_all_arms_ms": warm.summary()["latency_ms"],
    }
