"""What the metrics cost: /choose saturation with and without them, and GET /metrics latency.

Four gunicorns (2 processes each, gunicorn.conf.py) serve the bench's K = 50,
d = 32 LinUCB experiment side by side: ``metrics`` (the defaults: metrics on,
a request line per answer), ``no_metrics`` (``BANDITD_METRICS=0``), and both
again with ``BANDITD_REQUEST_LOG=none``. wrk saturates /choose on each in
turn, for several interleaved rounds (each round starting with the next
setup), so a change in the box's load hits them alike. Each cost (metrics with
and without request lines, request lines) is given from the totals and as the
median of the rounds' ratios, in req/s and in CPU time of the gunicorn
processes per request.

Then a gunicorn serving 100 experiments answers /choose for each of them (so
every labelled series exists in both processes) and GET /metrics is timed,
sequentially, while idle and while wrk keeps /choose busy.

Run from the repository root, against a migrated database it may empty::

    REDIS_URL=... DATABASE_URL=... .venv/bin/python -m bench.metrics_overhead [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from dataclasses import replace
from statistics import median
from pathlib import Path

import numpy as np
import redis
import requests

from app.services import database_engine
from bench import configs, seed
from bench.saturation import WrkSettings, saturate, write_bodies, wrk
from bench.stack import ROOT, Gunicorn, cpu_seconds

API_KEY = "bench-metrics-key"
OUT = ROOT / "bench" / "out" / "metrics_overhead"
SETUPS = {
    "metrics": {},
    "no_metrics": {"BANDITD_METRICS": "0"},
    "metrics_no_request_log": {"BANDITD_REQUEST_LOG": "none"},
    "no_metrics_no_request_log": {"BANDITD_METRICS": "0", "BANDITD_REQUEST_LOG": "none"},
}
# (cost, setup with it, setup without it)
COSTS = (
    ("metrics", "metrics", "no_metrics"),
    ("metrics_without_request_log", "metrics_no_request_log", "no_metrics_no_request_log"),
    ("request_log", "no_metrics", "no_metrics_no_request_log"),
)
MANY = 100  # experiments for the /metrics latency
ROUND_SECONDS = 1.0  # make bench's saturation per round and setup


def base_env(config: Path) -> dict[str, str]:
    """The service environment: the bench's stores, ``config``, the bench key."""
    return {
        "REDIS_URL": os.environ["REDIS_URL"],
        "DATABASE_URL": os.environ["DATABASE_URL"],
        "BANDITD_CONFIG": str(config),
        "BANDITD_API_KEYS": API_KEY,
        "BANDITD_WORKER_METRICS_PORT": "0",
    }


def saturation(rounds: int, settings: WrkSettings, rng: np.random.Generator) -> dict:
    """/choose req/s of each setup, interleaved in ``rounds``."""
    exps = configs.experiments(configs.MAIN_CONFIG)
    linucb = exps["bench_linucb"]
    seed.seed_arms(redis.Redis.from_url(os.environ["REDIS_URL"]), linucb, rng)
    bodies = write_bodies(OUT / "choose.txt", configs.choose_bodies(linucb, rng))
    env = base_env(configs.MAIN_CONFIG)
    servers = {
        name: Gunicorn("wsgi:app", 2, {**env, **extra}, OUT) for name, extra in SETUPS.items()
    }
    runs: dict[str, list[dict]] = {name: [] for name in SETUPS}
    try:
        for server in servers.values():
            server.start()
        warm = replace(settings, warmup_seconds=0.0, seconds=settings.warmup_seconds)
        for server in servers.values():
            saturate(f"http://127.0.0.1:{server.port}/choose", bodies, bodies, warm, API_KEY)
        measure = replace(settings, warmup_seconds=0.0)
        order = list(servers.items())
        for r in range(rounds):
            # each round starts with the next setup: none always runs first or last
            for name, server in order[r % len(order) :] + order[: r % len(order)]:
                url = f"http://127.0.0.1:{server.port}/choose"
                pids = server.worker_pids()
                cpu = cpu_seconds(pids)
                run = saturate(url, bodies, bodies, measure, API_KEY)
                run["cpu_seconds"] = cpu_seconds(pids) - cpu
                runs[name].append(run)
    finally:
        for server in servers.values():
            server.stop()
    result = {}
    for name, rs in runs.items():
        total = sum(r["requests"] for r in rs) / (sum(r["duration_us"] for r in rs) / 1e6)
        requests_done = sum(r["requests"] for r in rs)
        result[name] = {
            "rps": round(total, 1),
            "rps_per_round": [r["rps"] for r in rs],
            "errors": sum(r["errors"] for r in rs),
            # CPU of the 2 gunicorn processes per answered request: less sensitive than req/s
            # to what else runs on the box
            "cpu_us_per_request": round(1e6 * sum(r["cpu_seconds"] for r in rs) / requests_done, 1),
        }
    # the costs from the totals, and round by round (the setups of one round ran back to
    # back, so they share the box's background load best) with their median
    for cost, first, second in COSTS:
        with_it, without = result[first], result[second]
        result[f"{cost}_cost_pct"] = round(100 * (1 - with_it["rps"] / without["rps"]), 2)
        result[f"{cost}_cpu_cost_pct"] = round(
            100 * (with_it["cpu_us_per_request"] / without["cpu_us_per_request"] - 1), 2
        )
        rps = [a["rps"] / b["rps"] for a, b in zip(runs[first], runs[second])]
        cpu_ratio = [
            (a["cpu_seconds"] / a["requests"]) / (b["cpu_seconds"] / b["requests"])
            for a, b in zip(runs[first], runs[second])
        ]
        result[f"{cost}_cost_pct_per_round"] = [round(100 * (1 - r), 2) for r in rps]
        result[f"{cost}_cost_pct_median"] = round(100 * (1 - median(rps)), 2)
        result[f"{cost}_cpu_cost_pct_per_round"] = [round(100 * (r - 1), 2) for r in cpu_ratio]
        result[f"{cost}_cpu_cost_pct_median"] = round(100 * (median(cpu_ratio) - 1), 2)
    return result


def many_experiments_config(path: Path) -> Path:
    """A config of ``MANY`` small LinUCB experiments (5 arms, d = 8)."""
    path.write_text(
        "".join(configs.experiment_toml(f"exp{i:03d}", "linucb", 5, 8) for i in range(MANY))
    )
    return path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_scrapes(url: str, count: int) -> dict:
    """``count`` sequential GET /metrics, in ms: p50, p99, max, and the body size."""
    took = []
    size = 0
    with requests.Session() as http:
        for _ in range(count):
            started = time.perf_counter()
            r = http.get(url, timeout=10)
            took.append((time.perf_counter() - started) * 1000)
            r.raise_for_status()
            size = len(r.content)
    return {
        "scrapes": count,
        "p50_ms": round(percentile(took, 0.5), 2),
        "p99_ms": round(percentile(took, 0.99), 2),
        "max_ms": round(max(took), 2),
        "bytes": size,
        "lines": None,
    }


def metrics_latency(scrapes: int, load_seconds: float, rng: np.random.Generator) -> dict:
    """GET /metrics timings with ``MANY`` experiments, idle and under /choose load."""
    config = many_experiments_config(OUT / "many.toml")
    exps = configs.experiments(config)
    server = Gunicorn("wsgi:app", 2, base_env(config), OUT)
    try:
        server.start()
        base = f"http://127.0.0.1:{server.port}"
        with requests.Session() as http:
            http.headers["Authorization"] = f"Bearer {API_KEY}"
            for _ in range(3):  # reach both processes: a new connection each time
                for exp in exps.values():
                    body = {"experiment": exp.name, "context": configs.context(exp, rng)}
                    r = http.post(base + "/choose", json=body, headers={"Connection": "close"})
                    r.raise_for_status()
        page = requests.get(base + "/metrics", timeout=10).text
        series = sum(1 for line in page.splitlines() if line and not line.startswith("#"))
        idle = time_scrapes(base + "/metrics", scrapes)
        idle["lines"] = series
        bodies = write_bodies(
            OUT / "many.txt",
            [b for exp in list(exps.values())[:20] for b in configs.choose_bodies(exp, rng, 4)],
        )
        loaded: dict = {}

        def scrape_under_load() -> None:
            time.sleep(1.0)
            loaded.update(time_scrapes(base + "/metrics", scrapes))

        scraper = threading.Thread(target=scrape_under_load)
        scraper.start()
        load = wrk(
            base + "/choose",
            bodies,
            load_seconds,
            WrkSettings(threads=1, connections=8),
            API_KEY,
        )
        scraper.join()
        loaded["choose_rps_meanwhile"] = load["rps"]
        loaded["lines"] = series
    finally:
        server.stop()
    return {"experiments": MANY, "idle": idle, "under_choose_load": loaded}


def phase(b) -> dict:
    """``make bench``'s metrics_cost phase (``b`` is a bench.phases.Bench): both measures, shorter.

    Eight times the bench's rounds of /choose saturation per setup, of one second
    each, then 200 scrapes of /metrics idle and under load. The cost is a few
    percent and the box's load drifts by more than that over seconds: many short
    rounds, each setup right after the other, see it through the noise better than
    a few long ones in the same time (in one pair of runs on this box, 24 rounds
    of 1 s gave round costs of -2 to 8% where 6 rounds of 4 s gave -16 to 14%;
    a busy box still makes outliers of single rounds, which the median leaves out).
    """
    OUT.mkdir(parents=True, exist_ok=True)
    seed.reset(b.client, b.engine)
    rounds = 8 * b.rounds
    result = {
        "rounds": rounds,
        "round_seconds": ROUND_SECONDS,
        "saturation": saturation(rounds, replace(b.wrk, seconds=ROUND_SECONDS), b.rng),
    }
    seed.reset(b.client, b.engine)
    result["metrics_page"] = metrics_latency(200, b.wrk.seconds * 2, b.rng)
    seed.reset(b.client, b.engine)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="wrk per round and setup")
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--output", type=Path, default=OUT / "metrics_overhead.json")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(12)
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    engine = database_engine(os.environ["DATABASE_URL"])
    seed.reset(client, engine)
    settings = WrkSettings(seconds=args.seconds)
    result = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_before": os.getloadavg(),
        "wrk": vars(settings),
        "rounds": args.rounds,
        "saturation": saturation(args.rounds, settings, rng),
    }
    seed.reset(client, engine)
    result["metrics_page"] = metrics_latency(args.scrapes, 8.0, rng)
    result["load_average_after"] = os.getloadavg()
    seed.reset(client, engine)
    engine.dispose()
    args.output.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
