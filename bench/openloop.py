"""Open-loop load at a fixed rate, and closed-loop sequential timing.

Open loop: request ``i`` is due at ``start + i / rate`` whether or not earlier
ones have been answered, and its latency is counted from that due time, so a
server that falls behind shows its queueing in the figures instead of slowing
the generator down (the coordinated omission that closed-loop tools like wrk
suffer). The generator's own lateness (sent − due) is reported beside it, with
the rate it actually sent and its CPU use, so one can see it was not the bottleneck.
"""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass, field

import numpy as np

from bench.client import Endpoint, HttpError, call


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentiles(values_ms: np.ndarray) -> dict[str, float | None]:
    """p50, p90, p99, p99.9, max and mean of latencies in ms (None when there are none)."""
    if values_ms.size == 0:
        return {k: None for k in ("p50", "p90", "p99", "p999", "max", "mean")}
    p50, p90, p99, p999 = np.percentile(values_ms, [50, 90, 99, 99.9])
    return {
        "p50": round(float(p50), 3),
        "p90": round(float(p90), 3),
        "p99": round(float(p99), 3),
        "p999": round(float(p999), 3),
        "max": round(float(values_ms.max()), 3),
        "mean": round(float(values_ms.mean()), 3),
    }


@dataclass
class LoadResult:
    """What one open-loop (or sequential) run measured, warm-up excluded."""

    offered_rps: float | None
    seconds: float
    latency_ms: np.ndarray  # from the due time, successful requests
    service_ms: np.ndarray  # from the actual send, successful requests
    send_lag_ms: np.ndarray  # actual send − due time, every request
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    sent_rps: float = 0.0
    completed_rps: float = 0.0
    generator_cpu: float = 0.0  # share of one core the generator used

    @property
    def requests(self) -> int:
        """Requests sent in the measured window."""
        return int(self.send_lag_ms.size)

    def summary(self) -> dict:
        """The figures as plain JSON-ready values."""
        return {
            "offered_rps": self.offered_rps,
            "seconds": round(self.seconds, 3),
            "requests": self.requests,
            "ok": int(self.latency_ms.size),
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "sent_rps": round(self.sent_rps, 1),
            "completed_rps": round(self.completed_rps, 1),
            "latency_ms": percentiles(self.latency_ms),
            "service_ms": percentiles(self.service_ms),
            "send_lag_ms": percentiles(self.send_lag_ms),
            "generator_cpu": round(self.generator_cpu, 3),
        }


async def open_loop(
    endpoint: Endpoint,
    bodies: list[bytes],
    rate: float,
    seconds: float,
    *,
    warmup: float = 2.0,
    ok: frozenset[int] = frozenset({200, 202}),
    max_inflight: int = 1000,
    timeout: float = 10.0,
) -> LoadResult:
    """Send ``rate`` requests/s for ``warmup + seconds``, cycling through ``bodies``."""
    loop = asyncio.get_running_loop()
    raws = [endpoint.request(b) for b in bodies]
    n_warm, n = int(rate * warmup), int(rate * (warmup + seconds))
    due = np.empty(n)
    sent = np.full(n, np.nan)
    done = np.full(n, np.nan)
    status = np.zeros(n, dtype=np.int32)
    gate = asyncio.Semaphore(max_inflight)

    async def one(i: int) -> None:
        async with gate:
            sent[i] = loop.time()
            try:
                status[i], _ = await call(endpoint, raws[i % len(raws)], timeout)
            except (OSError, asyncio.TimeoutError, HttpError):
                status[i] = -1
            done[i] = loop.time()

    tasks = []
    start = loop.time() + 0.05
    cpu0 = wall0 = None
    for i in range(n):
        due[i] = start + i / rate
        if i == n_warm:
            cpu0, wall0 = _cpu_seconds(), time.monotonic()
        delay = due[i] - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(one(i)))
    await asyncio.gather(*tasks)
    cpu = _cpu_seconds() - cpu0
    wall = time.monotonic() - wall0
    return _result(rate, seconds, due, sent, done, status, n_warm, ok, cpu / wall)


async def sequential(
    endpoint: Endpoint,
    bodies: list[bytes],
    *,
    seconds: float,
    max_requests: int,
    warmup_requests: int = 20,
    ok: frozenset[int] = frozenset({200, 202}),
) -> LoadResult:
    """One request at a time (closed loop) for ``seconds`` or ``max_requests``: unloaded latency."""
    loop = asyncio.get_running_loop()
    raws = [endpoint.request(b) for b in bodies]
    for i in range(warmup_requests):
        await call(endpoint, raws[i % len(raws)])
    due, done, status = [], [], []
    deadline = loop.time() + seconds
    while len(due) < max_requests and loop.time() < deadline:
        t = loop.time()
        try:
            code, _ = await call(endpoint, raws[len(due) % len(raws)])
        except (OSError, asyncio.TimeoutError, HttpError):
            code = -1
        due.append(t)
        done.append(loop.time())
        status.append(code)
    arr = np.array(due)
    return _result(
        None, float(done[-1] - due[0]), arr, arr, np.array(done), np.array(status), 0, ok, 0.0
    )


def _result(
    rate: float | None,
    seconds: float,
    due: np.ndarray,
    sent: np.ndarray,
    done: np.ndarray,
    status: np.ndarray,
    n_warm: int,
    ok: frozenset[int],
    cpu_share: float,
) -> LoadResult:
    due, sent, done, status = due[n_warm:], sent[n_warm:], done[n_warm:], status[n_warm:]
    good = np.isin(status, list(ok))
    codes, counts = np.unique(status, return_counts=True)
    span = float(sent.max() - due[0]) if sent.size else 0.0
    finish = float(done.max() - due[0]) if done.size else 0.0
    return LoadResult(
        offered_rps=rate,
        seconds=seconds,
        latency_ms=(done[good] - due[good]) * 1000.0,
        service_ms=(done[good] - sent[good]) * 1000.0,
        send_lag_ms=(sent - due) * 1000.0,
        statuses={int(c): int(k) for c, k in zip(codes, counts)},
        errors=int((~good).sum()),
        sent_rps=sent.size / span if span > 0 else 0.0,
        completed_rps=int(good.sum()) / finish if finish > 0 else 0.0,
        generator_cpu=cpu_share,
    )
