"""Freshness: time from a /reward's 202 to the parameters reflecting it.

While :func:`bench.openloop.open_loop` posts background rewards at a fixed
rate, a few probers each own one arm that nothing else rewards. A prober posts
a reward for a decision showing its arm, notes the wall-clock time its 202
arrived, and waits for two signals:

- **worker applied**: the arm's version in Redis (``ModelStore.versions``,
  polled every ``redis_poll`` s) went up by one: the worker has read the
  reward, logged it, learned from it and saved the arm; timed when the poll
  that saw it returned;
- **/choose sees it**: the arm's reward count ``n`` in the parameters an API
  process scores /choose with (``bench.probe_wsgi``, polled over HTTP every
  ``api_poll`` s) went up by one; timed by the wall clock of the API process
  at the moment it fetched that arm's parameters from Redis (``loaded``):
  from then on every /choose it answered scored with them (only the prober
  rewards its arm, one reward at a time, so the arm's last fetch is the one
  that brought the reward). Each poll lands on whichever gunicorn worker
  accepts it, so the figure is reported for the first process that showed
  the change and for the last one. The same figures dated by when the poll
  looked (``*_polled``) are reported too: with four processes the last one is
  often polled long after it loaded the change.

The polling intervals add their length to the polled figures as error, never
in our favour.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import numpy as np
import orjson
import redis.asyncio

from app import keys
from app.config import Experiment
from bench.client import Endpoint, HttpError, call
from bench.openloop import percentiles


@dataclass
class _Seen:
    versions: dict[str, tuple[float, int]] = field(default_factory=dict)  # arm -> (t, version)
    # pid -> (when it looked, when it last fetched each arm, each arm's count)
    counts: dict[int, tuple[float, dict, dict[str, float]]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


async def _poll_redis(client, exp: Experiment, arms: list[str], seen: _Seen, every: float, stop):
    key = keys.arm_versions(exp.name, exp.model_id)
    while not stop.is_set():
        values = await client.hmget(key, arms)
        now = time.time()
        seen.versions = {a: (now, int(v or 0)) for a, v in zip(arms, values)}
        seen.notify()
        await asyncio.sleep(every)
    seen.notify()


async def _poll_api(endpoint: Endpoint, seen: _Seen, every: float, stop):
    raw = endpoint.request()
    while not stop.is_set():
        try:
            status, body = await call(endpoint, raw, timeout=10.0)
        except (OSError, asyncio.TimeoutError, HttpError):
            status = 0
        if status == 200:
            answer = orjson.loads(body)
            seen.counts[answer["pid"]] = (answer["t"], answer["loaded"], answer["n"])
            seen.notify()
        await asyncio.sleep(every)
    seen.notify()


async def _probe(
    arm: str,
    bodies: list[bytes],
    reward: Endpoint,
    seen: _Seen,
    pids: set[int],
    samples: dict[str, list[float]],
    stop: asyncio.Event,
    timeout: float,
) -> None:
    base_version = seen.versions[arm][1]
    base_count = min(c[arm] for _, _, c in seen.counts.values())
    for i, body in enumerate(bodies):
        if stop.is_set():
            return
        await asyncio.sleep(random.uniform(0.0, 0.02))
        status, _ = await call(reward, reward.request(body))
        acked = time.time()
        if status != 202:
            samples["failed"].append(acked)
            continue
        want_version, want_count = base_version + i + 1, base_count + i + 1
        applied = None
        shown: dict[int, float] = {}  # pid -> when its cache loaded the reward
        polled: dict[int, float] = {}  # pid -> when a poll found it there
        while time.time() - acked < timeout and not stop.is_set():
            t, version = seen.versions[arm]
            if applied is None and version >= want_version:
                applied = t
            for pid, (looked, loaded, counts) in seen.counts.items():
                if pid not in shown and counts.get(arm, 0) >= want_count:
                    shown[pid] = loaded.get(arm) or looked
                    polled[pid] = looked
            if applied is not None and pids <= set(shown):
                samples["applied"].append(applied - acked)
                samples["api_first"].append(min(shown.values()) - acked)
                samples["api_all"].append(max(shown.values()) - acked)
                samples["api_first_polled"].append(min(polled.values()) - acked)
                samples["api_all_polled"].append(max(polled.values()) - acked)
                break
            await seen.changed.wait()
        else:
            if not stop.is_set():
                samples["timed_out"].append(acked)
            return  # the counts are off now (or the run is over): this prober stops


async def measure(
    exp: Experiment,
    probe_arms: dict[str, list[bytes]],
    reward: Endpoint,
    counts: Endpoint,
    redis_url: str,
    api_pids: list[int],
    load: asyncio.Future,
    *,
    redis_poll: float = 0.005,
    api_poll: float = 0.01,
    timeout: float = 10.0,
) -> dict:
    """Probe until ``load`` (the background open-loop run) finishes; the figures in ms."""
    client = redis.asyncio.Redis.from_url(redis_url)
    seen = _Seen()
    stop = asyncio.Event()
    arms = list(probe_arms)
    pollers = [
        asyncio.create_task(_poll_redis(client, exp, arms, seen, redis_poll, stop)),
        asyncio.create_task(_poll_api(counts, seen, api_poll, stop)),
    ]
    pids = set(api_pids)
    ready_by = time.monotonic() + timeout
    while not (seen.versions and pids <= set(seen.counts)):
        if time.monotonic() > ready_by:  # e.g. the probe route fails: say so, do not hang
            raise RuntimeError(f"freshness: no answer from every API process in {timeout} s")
        await asyncio.wait_for(seen.changed.wait(), timeout)
    samples: dict[str, list[float]] = {
        k: [] for k in ("applied", "api_first", "api_all", "api_first_polled", "api_all_polled")
    }
    samples.update(failed=[], timed_out=[])
    probers = [
        asyncio.create_task(_probe(a, b, reward, seen, pids, samples, stop, timeout))
        for a, b in probe_arms.items()
    ]
    background = await load
    stop.set()
    await asyncio.gather(*probers, *pollers)
    await client.aclose()

    def ms(name: str) -> dict:
        return percentiles(np.array(samples[name]) * 1000.0)

    return {
        "probes": len(samples["applied"]),
        "failed": len(samples["failed"]),
        "timed_out": len(samples["timed_out"]),
        "worker_applied_ms": ms("applied"),
        "api_first_process_ms": ms("api_first"),
        "api_all_processes_ms": ms("api_all"),
        "api_first_process_polled_ms": ms("api_first_polled"),
        "api_all_processes_polled_ms": ms("api_all_polled"),
        "api_processes": len(pids),
        "background": background.summary(),
    }
