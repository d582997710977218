"""The phases of `make bench`, each from a clean bench Redis db and Postgres database."""

from __future__ import annotations

import asyncio
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import redis
from sqlalchemy.engine import Engine

from app import keys
from bench import configs, drain, freshness, growth, seed
from bench.client import Endpoint, call
from bench.openloop import open_loop
from bench.saturation import WrkSettings, saturate, write_bodies
from bench.stack import Gunicorn, UpdateWorker, cpu_seconds

FIXED_RATE = 1000.0
WARMUP = 2.0  # seconds of open-loop load before the measured window
SERVICE_APP = "wsgi:app"
FLOOR_APP = "bench.floor:app"
PROBE_APP = "bench.probe_wsgi:app"


@dataclass
class Bench:
    """What every phase needs: clients, the service environment, output, durations."""

    client: redis.Redis
    engine: Engine
    env: dict[str, str]  # for gunicorn and the worker
    api_key: str
    out: Path
    rng: np.random.Generator
    wrk: WrkSettings
    rounds: int  # interleaved saturation rounds
    fixed_seconds: float  # open-loop measurement per endpoint
    drain_events: int
    freshness_seconds: float
    grid_seconds: float
    grid_requests: int
    gunicorn_config: Path | None = None  # None: gunicorn.conf.py, as scripts/run.sh
    steady_seconds: float = 10.0  # per offered rate in the steady-load phase
    steady_backlog: int = 20_000  # decisions the steady-load phase's drain reference drains
    lag_seeds: int = 4  # seeds per environment and policy of the learning-lag phase
    lag_rounds: int = 3_000  # rounds per seed of the learning-lag phase (as docs/LEARNING.md)

    def endpoint(self, port: int, path: str, method: str = "POST") -> Endpoint:
        """An endpoint of a server started by the bench, with the bench API key."""
        return Endpoint(
            "127.0.0.1", port, path, method, {"Authorization": f"Bearer {self.api_key}"}
        )

    def fresh(self, config: Path, *seeded: str) -> dict:
        """Empty the bench db and log; seed ``seeded`` of ``config``; return its experiments."""
        seed.reset(self.client, self.engine)
        exps = configs.experiments(config)
        for name in seeded:
            seed.seed_arms(self.client, exps[name], self.rng)
        return exps


def _reward_files(b: Bench, exp, tag: str, per_file: int, files: int) -> list[Path]:
    arms = [exp.arms[i % len(exp.arms)] for i in range(per_file * files)]
    ids = seed.record_decisions(b.client, exp, arms, b.rng)
    bodies = seed.reward_bodies(list(zip(ids, arms)), b.rng)
    return [
        write_bodies(b.out / f"reward-{tag}-{i}.txt", bodies[i * per_file : (i + 1) * per_file])
        for i in range(files)
    ]


def throughput(b: Bench, workers: int, *, update_worker: bool = False) -> dict:
    """Saturation req/s of the floor, /choose (linucb, lin_ts, squarecb) and /reward, in rounds.

    Both servers run side by side; each round measures every endpoint once, so
    a change in the box's background load hits all of them alike. The ratio to
    the floor is computed from the totals over the rounds. With
    ``update_worker``, ``banditd worker`` runs throughout, as under `make run`.
    """
    exps = b.fresh(configs.MAIN_CONFIG, *configs.MAIN_EXPERIMENTS)
    linucb = exps["bench_linucb"]
    choose = {
        n: write_bodies(b.out / f"{n}.txt", configs.choose_bodies(exps[n], b.rng)) for n in exps
    }
    per_file = int(9000 * b.wrk.seconds)  # more than any round can send: no reward repeats
    rewards = _reward_files(b, linucb, f"{workers}w", per_file, b.rounds + 1)
    stream = keys.stream(linucb.name)
    with (
        Gunicorn(FLOOR_APP, workers, {}, b.out, config=b.gunicorn_config) as floor,
        Gunicorn(SERVICE_APP, workers, b.env, b.out, config=b.gunicorn_config) as service,
        UpdateWorker(b.env, b.out) if update_worker else nullcontext() as worker,
    ):
        targets = {
            "floor": (f"http://127.0.0.1:{floor.port}/floor", [choose["bench_linucb"]]),
            "choose_linucb": (f"http://127.0.0.1:{service.port}/choose", [choose["bench_linucb"]]),
            "choose_lin_ts": (f"http://127.0.0.1:{service.port}/choose", [choose["bench_lin_ts"]]),
            "choose_squarecb": (
                f"http://127.0.0.1:{service.port}/choose",
                [choose["bench_squarecb"]],
            ),
            "reward": (f"http://127.0.0.1:{service.port}/reward", rewards),
        }
        runs: dict[str, list[dict]] = {name: [] for name in targets}
        warm = replace(b.wrk, warmup_seconds=0.0, seconds=b.wrk.warmup_seconds)
        for url, files in targets.values():
            saturate(url, files[0], files[0], warm, b.api_key)
        for r in range(b.rounds):
            for name, (url, files) in targets.items():
                body = files[min(r + 1, len(files) - 1)]
                before = b.client.xlen(stream)
                run = saturate(url, body, body, _no_warmup(b.wrk), b.api_key)
                run["stream_entries_added"] = b.client.xlen(stream) - before
                runs[name].append(run)
        fixed = (
            fixed_rate(b, floor, service, choose, linucb, runs)
            if workers == 2 and not update_worker
            else None
        )
        if update_worker and not worker.alive():
            raise RuntimeError(f"the worker stopped during the load; see {worker.log_path}")
    for path in b.out.glob("reward-*.txt"):  # tens of MB of single-use bodies
        path.unlink()
    result = {
        "workers": workers,
        "update_worker": update_worker,
        "wrk": vars(b.wrk),
        "rounds": b.rounds,
        "endpoints": {},
    }
    for name, rs in runs.items():
        requests = sum(r["requests"] for r in rs)
        seconds = sum(r["duration_us"] for r in rs) / 1e6
        result["endpoints"][name] = {
            "rps": round(requests / seconds, 1),
            "rps_per_round": [r["rps"] for r in rs],
            "errors": sum(r["errors"] for r in rs),
            "requests": requests,
            "stream_entries_added": sum(r["stream_entries_added"] for r in rs),
        }
    floor_rps = result["endpoints"]["floor"]["rps"]
    for entry in result["endpoints"].values():
        entry["ratio_to_floor"] = round(entry["rps"] / floor_rps, 3)
    if fixed is not None:
        result["fixed_rate"] = fixed
    return result


def _no_warmup(w: WrkSettings) -> WrkSettings:
    return replace(w, warmup_seconds=0.0)


def fixed_rate(b: Bench, floor: Gunicorn, service: Gunicorn, choose, linucb, runs) -> dict:
    """Open-loop latency at 1,000 req/s, or at half the measured saturation where the box can't."""
    bodies = {n: p.read_bytes().splitlines() for n, p in choose.items()}
    n_rewards = 2 * int(FIXED_RATE * (b.fixed_seconds + WARMUP + 1))  # second half: a re-run
    reward_file = _reward_files(b, linucb, "fixed", n_rewards, 1)[0]
    targets = {
        "floor": (floor, b.endpoint(floor.port, "/floor"), bodies["bench_linucb"]),
        "choose_linucb": (service, b.endpoint(service.port, "/choose"), bodies["bench_linucb"]),
        "choose_lin_ts": (service, b.endpoint(service.port, "/choose"), bodies["bench_lin_ts"]),
        "reward": (
            service,
            b.endpoint(service.port, "/reward"),
            reward_file.read_bytes().splitlines(),
        ),
    }
    results = {}
    for name, (server, endpoint, payloads) in targets.items():
        pids = server.worker_pids()
        saturation = sum(r["rps"] for r in runs[name]) / len(runs[name])
        rate, why = FIXED_RATE, "1,000 req/s"
        if saturation < FIXED_RATE / 0.8:
            rate = round(saturation / 2)
            why = f"half the measured saturation ({saturation:.0f} req/s): 1,000 is over 80% of it"
        cpu = cpu_seconds(pids)
        run = asyncio.run(open_loop(endpoint, payloads, rate, b.fixed_seconds, warmup=WARMUP))
        if rate == FIXED_RATE and not _sustained(run, rate) and saturation / 2 < FIXED_RATE:
            rate = round(saturation / 2)
            why = (
                f"half the saturation: at 1,000 req/s {run.completed_rps:.0f} completed, "
                f"p50 {run.summary()['latency_ms']['p50']} ms (a queue building up)"
            )
            cpu = cpu_seconds(pids)
            run = asyncio.run(
                open_loop(
                    endpoint, payloads[len(payloads) // 2 :], rate, b.fixed_seconds, warmup=WARMUP
                )
            )
        if rate == FIXED_RATE and not _sustained(run, rate):
            why = "1,000 req/s, not kept up with although under half the saturation: a busy box"
        sent = int(rate * (b.fixed_seconds + WARMUP))  # the warm-up's requests used CPU too
        results[name] = {
            "rate": rate,
            "why": why,
            "api_cpu_us_per_request": round((cpu_seconds(pids) - cpu) / sent * 1e6),
            **run.summary(),
        }
    return results


def _sustained(run, rate: float) -> bool:
    """Whether the server kept up: nearly all completed, and no queue built up (p50 <= 50 ms)."""
    p50 = run.summary()["latency_ms"]["p50"]
    return run.completed_rps >= 0.97 * rate and p50 is not None and p50 <= 50.0


def worker_drain(b: Bench) -> dict:
    """Backlog of ``drain_events`` (half decisions, half rewards), then the worker drains it."""
    exps = b.fresh(configs.MAIN_CONFIG, "bench_linucb")
    exp = exps["bench_linucb"]
    half = b.drain_events // 2
    filled = drain.fill(b.client, exp, half, half, b.rng)
    return {"backlog": filled, **drain.run_drain(b.client, b.engine, exp, b.env, b.out)}


def freshness_phase(b: Bench, probe_arms: int = 5, probes_each: int = 400) -> dict:
    """Freshness of rewards under a background of 1,000 rewards/s, worker and API running."""
    exps = b.fresh(configs.MAIN_CONFIG, "bench_linucb")
    exp = exps["bench_linucb"]
    background_arms = exp.arms[:-probe_arms]
    n_background = int(FIXED_RATE * (b.freshness_seconds + 3))
    arms = [background_arms[i % len(background_arms)] for i in range(n_background)]
    ids = seed.record_decisions(b.client, exp, arms, b.rng)
    background = seed.reward_bodies(list(zip(ids, arms)), b.rng)
    probes = {}
    for arm in exp.arms[-probe_arms:]:
        probe_ids = seed.record_decisions(b.client, exp, [arm] * probes_each, b.rng)
        probes[arm] = seed.reward_bodies([(d, arm) for d in probe_ids], b.rng)
    with (
        UpdateWorker(b.env, b.out) as worker,
        Gunicorn(PROBE_APP, 2, b.env, b.out, config=b.gunicorn_config) as api,
    ):
        deadline = time.monotonic() + 120
        while b.client.xlen(keys.stream(exp.name)) > 0 and time.monotonic() < deadline:
            time.sleep(0.1)  # the decisions recorded above
        if not worker.alive():
            raise RuntimeError(f"the worker stopped; see {worker.log_path}")
        reward = b.endpoint(api.port, "/reward")
        query = f"/_bench/arm_counts?experiment={exp.name}&arms={','.join(probes)}"
        counts = b.endpoint(api.port, query, "GET")

        async def run() -> dict:
            load = asyncio.ensure_future(
                open_loop(reward, background, FIXED_RATE, b.freshness_seconds, warmup=1.0)
            )
            return await freshness.measure(
                exp, probes, reward, counts, b.env["REDIS_URL"], api.worker_pids(), load
            )

        return asyncio.run(run())


def cost_growth(b: Bench) -> dict:
    """Unloaded /choose latency over K candidates × d features, per policy."""
    path = configs.write_grid_config(b.out)
    names = [configs.grid_name(p, d) for p in configs.GRID_POLICIES for d in configs.GRID_DIMS]
    exps = b.fresh(path, *names)
    env = {**b.env, "BANDITD_CONFIG": str(path)}
    with Gunicorn(SERVICE_APP, 2, env, b.out, config=b.gunicorn_config) as api:
        endpoint = b.endpoint(api.port, "/choose")

        async def run() -> list[dict]:
            for name in names:  # load every experiment's parameters in both processes
                raw = endpoint.request(configs.choose_bodies(exps[name], b.rng, 1)[0])
                for _ in range(3):
                    await asyncio.gather(*(call(endpoint, raw, 60.0) for _ in range(2)))
            return await growth.grid(
                endpoint, exps, b.rng, seconds=b.grid_seconds, max_requests=b.grid_requests
            )

        rows = asyncio.run(run())
    return {"arms": configs.GRID_ARMS, "rows": rows}


def memory_phase(b: Bench) -> dict:
    """Memory of each API process once it holds the 10,000-arm, d = 32 experiment."""
    path = configs.write_memory_config(b.out)
    exps = b.fresh(path, "mem_linucb")
    env = {**b.env, "BANDITD_CONFIG": str(path)}
    with Gunicorn(SERVICE_APP, 2, env, b.out, config=b.gunicorn_config) as api:
        result = asyncio.run(
            growth.memory(api, b.endpoint(api.port, "/choose"), exps["mem_linucb"], b.rng)
        )
    seed.reset(b.client, b.engine)  # 160 MB of arm hashes: give the memory back
    return result
