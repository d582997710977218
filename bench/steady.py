"""What each part costs per event under steady traffic, with the box run as `make run` runs it.

gunicorn (gunicorn.conf.py, 4 workers) and ``banditd worker`` run together.
At each offered rate, half the events are /choose and half /reward (on
decisions recorded beforehand and already drained), sent open-loop. Over the
measured window we read the CPU time of the worker process and of the API
processes from /proc, and Redis' own CPU time from ``INFO cpu``; each is
divided by the events answered. Then the worker's stream is fed at the same
rates without the API (the API's own Lua scripts, every 10 ms), so that its
CPU per event is measured at rates the API could not serve on a small box.
Then, in the same run, the worker is stopped,
a backlog builds through the same API, and the worker's CPU per event while it
drains it gives the reference the steady figures are compared with.

Redis' CPU is the whole server's: on a box where other clients use the same
Redis it includes their work (``make bench`` uses its own db, not its own
server).
"""

from __future__ import annotations

import asyncio
import time

import redis

from app import keys
from bench import configs, drain, seed
from bench.openloop import open_loop
from bench.stack import Gunicorn, UpdateWorker, cpu_seconds

RATES = (100, 500, 2000)  # events/s offered: half /choose, half /reward
API_WORKERS = 4
SERVICE_APP = "wsgi:app"


def redis_cpu(client: redis.Redis) -> float:
    """CPU seconds the Redis server has used (user + system, main thread and children)."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def wait_drained(client: redis.Redis, stream: str, worker: UpdateWorker, timeout: float = 120.0):
    """Return once ``stream`` is empty (the worker deletes what it acknowledged)."""
    deadline = time.monotonic() + timeout
    while client.xlen(stream) > 0:
        if not worker.alive():
            raise RuntimeError(f"the worker stopped; see {worker.log_path}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{client.xlen(stream)} entries left after {timeout:.0f}s")
        time.sleep(0.02)


def _load(b, api: Gunicorn, choose: list[bytes], rewards: list[bytes], rate: float, seconds: float):
    """Open-loop /choose and /reward at ``rate / 2`` each; their two results."""

    async def both():
        return await asyncio.gather(
            open_loop(b.endpoint(api.port, "/choose"), choose, rate / 2, seconds, warmup=1.0),
            open_loop(b.endpoint(api.port, "/reward"), rewards, rate / 2, seconds, warmup=1.0),
        )

    return asyncio.run(both())


def _measured(b, api, worker_pid, choose, rewards, rate, seconds) -> dict:
    """One steady rate: the figures per event of the worker, Redis and the API."""
    api_pids = api.worker_pids()
    before = (cpu_seconds([worker_pid]), redis_cpu(b.client), cpu_seconds(api_pids))
    wall = time.monotonic()
    chose, rewarded = _load(b, api, choose, rewards, rate, seconds)
    # the warm-up's events cost CPU too: count every event answered since ``before``
    elapsed = time.monotonic() - wall
    events = sum(
        sum(n for code, n in r.statuses.items() if code in (200, 202)) for r in (chose, rewarded)
    )
    sent = int(rate / 2 * (seconds + 1.0)) * 2
    worker_cpu = cpu_seconds([worker_pid]) - before[0]
    redis_seconds = redis_cpu(b.client) - before[1]
    api_cpu = cpu_seconds(api_pids) - before[2]
    return {
        "offered_events_per_s": rate,
        "seconds": round(elapsed, 1),
        "events_answered_in_window": events,
        "events_sent": sent,
        "errors": chose.errors + rewarded.errors,
        "worker_cpu_us_per_event": round(worker_cpu / sent * 1e6, 1),
        "worker_cpu_share": round(worker_cpu / elapsed, 3),
        "redis_cpu_us_per_event": round(redis_seconds / sent * 1e6, 1),
        "api_cpu_us_per_request": round(api_cpu / sent * 1e6),
        "choose_p99_ms": chose.summary()["latency_ms"]["p99"],
        "reward_p99_ms": rewarded.summary()["latency_ms"]["p99"],
    }


# Lua scripts and MULTI/EXEC transactions: a /choose writes its decision with one or the
# other (app/event_stream.py), and the worker uses both
SCRIPT_COMMANDS = ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_multi", "cmdstat_exec")


def script_usec(client: redis.Redis) -> float:
    """Microseconds Redis has spent running Lua scripts and transactions (``INFO commandstats``).

    A script's or an EXEC's time includes the commands it runs, which Redis
    also counts under their own names, so a sum over every command counts
    them twice; the scripts' and EXECs' own time does not.
    """
    stats = client.info("commandstats")
    return float(sum(stats[name]["usec"] for name in SCRIPT_COMMANDS if name in stats))


def _per_endpoint_redis(b, api, bodies: list[bytes], path: str, rate, seconds) -> dict:
    """Redis' work per request of one endpoint alone at ``rate``, the worker's share included.

    Two figures: the time Redis spent running scripts and transactions (``INFO
    commandstats``, as the issue measured the decision script: the endpoint's
    own write and the worker's, which run once per batch) and its process CPU time, which
    adds every other command, the network reads and writes and the event loop.
    """
    usec0, cpu0 = script_usec(b.client), redis_cpu(b.client)
    run = asyncio.run(open_loop(b.endpoint(api.port, path), bodies, rate, seconds, warmup=1.0))
    sent = int(rate * (seconds + 1.0))
    return {
        "rate": rate,
        "errors": run.errors,
        "redis_script_us_per_request": round((script_usec(b.client) - usec0) / sent, 1),
        "redis_cpu_us_per_request": round((redis_cpu(b.client) - cpu0) / sent * 1e6, 1),
    }


def _drain_reference(b, exp, events: int) -> dict:
    """The worker's CPU per event draining a backlog of ``events`` (half decisions, half rewards).

    Counted from the moment it holds the stream's lease (its start-up is not
    the drain) until the stream is empty: the first batch is read, learned and
    logged while the second is read, so a count from the first acknowledgement
    would miss work.
    """
    stream = keys.stream(exp.name)
    drain.fill(b.client, exp, events // 2, events // 2, b.rng)
    backlog = b.client.xlen(stream)
    with UpdateWorker(b.env, b.out) as worker:
        while not b.client.exists(keys.owner(exp.name)):
            if not worker.alive():
                raise RuntimeError(f"the worker stopped; see {worker.log_path}")
            time.sleep(0.001)
        cpu0, t0 = cpu_seconds([worker.proc.pid]), time.monotonic()
        wait_drained(b.client, stream, worker)
        cpu = cpu_seconds([worker.proc.pid]) - cpu0
        seconds = time.monotonic() - t0
    return {
        "backlog": backlog,
        "worker_cpu_us_per_event": round(cpu / backlog * 1e6, 1),
        "events_per_s": round(backlog / seconds),
    }


def _fed_directly(b, exp, worker: UpdateWorker, rate: float, seconds: float) -> dict:
    """The worker's CPU per event with its stream fed at ``rate`` without the API.

    Decisions and their rewards are recorded about every 10 ms through the API's own
    Lua scripts (as :mod:`bench.seed` does), so the rate holds whatever the API
    could serve on this box: the worker alone is measured.
    """
    per_tick = max(1, round(rate / 200))  # decisions (and as many rewards) per tick
    tick = 2 * per_tick / rate  # about 10 ms
    arms = list(exp.arms)
    stream = keys.stream(exp.name)
    wait_drained(b.client, stream, worker)
    cpu0, start = cpu_seconds([worker.proc.pid]), time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - start) < seconds:
        due = sent / (2 * per_tick) * tick  # when this tick was due
        if due > elapsed:
            time.sleep(due - elapsed)
        picked = [arms[(sent + i) % len(arms)] for i in range(per_tick)]
        ids = seed.record_decisions(b.client, exp, picked, b.rng, announce=False)
        seed.record_rewards(b.client, exp, list(zip(ids, picked)), b.rng)
        sent += 2 * per_tick
    wait_drained(b.client, stream, worker)
    cpu = cpu_seconds([worker.proc.pid]) - cpu0
    seconds_taken = time.monotonic() - start
    return {
        "offered_events_per_s": rate,
        "events": sent,
        "achieved_events_per_s": round(sent / seconds_taken),
        "worker_cpu_us_per_event": round(cpu / sent * 1e6, 1),
    }


def steady_load(b) -> dict:
    """Per-event CPU of worker, Redis and API at steady rates, and the worker's in a backlog."""
    exps = b.fresh(configs.MAIN_CONFIG, "bench_linucb")
    exp = exps["bench_linucb"]
    stream = keys.stream(exp.name)
    choose = configs.choose_bodies(exp, b.rng, 256)
    seconds = b.steady_seconds
    needed = int(sum(RATES) / 2 * (seconds + 1.0)) + int(2000 * (seconds + 1.0))
    arms = [exp.arms[i % len(exp.arms)] for i in range(needed)]
    ids = seed.record_decisions(b.client, exp, arms, b.rng)
    rewards = seed.reward_bodies(list(zip(ids, arms)), b.rng)
    rows, used = [], 0
    with Gunicorn(SERVICE_APP, API_WORKERS, b.env, b.out) as api:
        with UpdateWorker(b.env, b.out) as worker:
            wait_drained(b.client, stream, worker)
            for rate in RATES:
                share = int(rate / 2 * (seconds + 1.0))
                rows.append(
                    _measured(
                        b,
                        api,
                        worker.proc.pid,
                        choose,
                        rewards[used : used + share],
                        rate,
                        seconds,
                    )
                )
                used += share
                wait_drained(b.client, stream, worker)
            per_choose = _per_endpoint_redis(b, api, choose, "/choose", 500, seconds)
            wait_drained(b.client, stream, worker)
            share = int(500 * (seconds + 1.0))
            per_reward = _per_endpoint_redis(
                b, api, rewards[used : used + share], "/reward", 500, seconds
            )
            wait_drained(b.client, stream, worker)
            direct = [_fed_directly(b, exp, worker, rate, seconds) for rate in RATES]
    backlog = _drain_reference(b, exp, b.steady_backlog)
    reference = backlog["worker_cpu_us_per_event"]
    for row in rows + direct:
        row["worker_cpu_vs_backlog"] = (
            round(row["worker_cpu_us_per_event"] / reference, 2) if reference else None
        )
    return {
        "api_workers": API_WORKERS,
        "rates": rows,
        "fed_directly": direct,
        "redis_per_choose": per_choose,
        "redis_per_reward": per_reward,
        "backlog": backlog,
    }
