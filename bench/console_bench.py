"""How fast the console's pages and JSON data routes answer on a big log.

Seeds a database with ``--impressions`` synthetic impressions over 30 days
(:func:`bench.synthetic_log.seed`: one experiment, ``synthetic_0``, two config
versions, a 10% holdout), refreshes the analysts' materialised views (as the
worker does every 5 minutes), starts gunicorn as ``make run`` does
(gunicorn.conf.py: gevent, 2 processes, the 5 s Postgres wait cut), then
requests each route ``--requests`` times from one client after a warm-up (the
routes taking turns) and prints p50, p95 and max per route. The issue's
target: each data route <= 300 ms p95 with 1,000,000 impressions.

    .venv/bin/python -m bench.console_bench --impressions 1000000

The database named by ``--database-url`` is emptied (TRUNCATE) and refilled:
never point it at data you keep. It must exist; it is migrated here.
The seeded decisions get the model id of ``synthetic_0`` as configured here
(the synthetic log names a model of its own), so the what-if has a sample.
No model is in Redis, so the what-if scores with the prior (the same work as
with a learned model: the arithmetic does not depend on the values).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests
import sqlalchemy

from app.analytics.views import refresh_analyst_views
from app.cli import migrate
from app.config import load_config
from app.services import database_engine
from app.settings import Settings
from bench.stack import Gunicorn
from bench.synthetic_log import seed

KEY = "console-bench-key"
TABLES = ("config_versions", "decisions", "impressions", "rewards", "model_snapshots")
# synthetic_0 as bench/synthetic_log.py's second config version has it
SYNTHETIC_CONFIG = """
[experiments.synthetic_0]
policy = "linucb"
alpha = 0.5
epsilon = 0.02
arms = ["arm_0", "arm_1", "arm_2", "arm_3", "arm_4", "arm_5", "arm_6", "arm_7"]
reward = { default = 0.0, window_seconds = 900, min = 0.0, max = 1.0 }
holdout = 0.1
holdout_policy = "random"

[experiments.synthetic_0.features]
numeric = ["hour"]
categorical = { city = ["berlin", "hamburg", "munich"] }
"""
ROUTES = (
    "/experiments/synthetic_0/summary",
    "/experiments/synthetic_0/daily",
    "/experiments/synthetic_0/arms",
    "/experiments/synthetic_0/config-history",
    "/experiments/synthetic_0/what-if?epsilon=0.2",
    "/experiments/synthetic_0/what-if?alpha=2&epsilon=0.05",
    "/experiments/synthetic_0/what-if?policy=lin_ts",
    "/experiments/synthetic_0/what-if?policy=beta_ts",
    "/experiments/synthetic_0/what-if?epsilon=0.2&sample=20000",
    "/ui/",
    "/ui/experiments/synthetic_0",
)


def prepare(database_url: str, impressions: int, config_path: Path) -> dict[str, float]:
    """Migrate, empty and seed the database, give it the configured model id, refresh the views.

    Returns the seconds each step took.
    """
    migrate(Settings(database_url=database_url))
    engine = database_engine(database_url)
    timings = {}
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f"TRUNCATE {', '.join(TABLES)}"))
        started = time.perf_counter()
        seed(engine, impressions=impressions, days=30)
        timings["seed_s"] = time.perf_counter() - started
        model_id = load_config(str(config_path)).get("synthetic_0").model_id
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(
                sqlalchemy.text(
                    "UPDATE decisions SET model_id = :m WHERE experiment = 'synthetic_0'"
                ),
                {"m": model_id},
            )
        # the update left a dead copy of every decision row; a running service's autovacuum
        # would clean up too, later
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sqlalchemy.text("VACUUM ANALYZE decisions"))
        timings["model_id_s"] = time.perf_counter() - started
        started = time.perf_counter()
        refresh_analyst_views(engine)
        timings["refresh_views_s"] = time.perf_counter() - started
    finally:
        engine.dispose()
    return timings


def measure(base_url: str, paths: tuple[str, ...], count: int, warmup: int) -> dict[str, list]:
    """Milliseconds of ``count`` GETs of each path after ``warmup`` unmeasured ones.

    The paths take turns (one request of each, then again), so a burst of load from
    elsewhere on the box falls on every route alike.
    """
    found: dict[str, list[float]] = {path: [] for path in paths}
    with requests.Session() as http:
        http.auth = ("bench", KEY)  # HTTP Basic, as a browser signs in
        for round_ in range(warmup + count):
            for path in paths:
                started = time.perf_counter()
                response = http.get(base_url + path, timeout=30)
                elapsed = (time.perf_counter() - started) * 1000
                response.raise_for_status()
                if round_ >= warmup:
                    found[path].append(elapsed)
    return found


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values``, by the nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impressions", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=100, help="measured requests per route")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--database-url",
        default="postgresql://banditd:banditd@localhost:5432/banditd_console_bench",
        help="a database this benchmark may empty (default: banditd_console_bench)",
    )
    parser.add_argument("--redis-url", default="redis://localhost:6379/11")
    parser.add_argument("--skip-seed", action="store_true", help="reuse the seeded database")
    args = parser.parse_args(argv)

    out = Path(tempfile.mkdtemp(prefix="console-bench-"))
    config_path = out / "experiments.toml"
    config_path.write_text(SYNTHETIC_CONFIG)
    if not args.skip_seed:
        timings = prepare(args.database_url, args.impressions, config_path)
        print(", ".join(f"{k} {v:.1f}" for k, v in timings.items()), file=sys.stderr)
    env = {
        "BANDITD_CONFIG": str(config_path),
        "DATABASE_URL": args.database_url,
        "REDIS_URL": args.redis_url,
        "BANDITD_API_KEYS": KEY,
    }
    print(f"| route | p50 ms | p95 ms | max ms |  ({args.requests} requests each,", end="")
    print(f" {args.impressions:,} impressions) |\n|---|---:|---:|---:|")
    with Gunicorn("wsgi:app", 2, env, out) as server:
        base = f"http://127.0.0.1:{server.port}"
        load_before = os.getloadavg()[0]
        timings = measure(base, ROUTES, args.requests, args.warmup)
        for path, ms in timings.items():
            print(
                f"| `{path}` | {statistics.median(ms):.1f} | {percentile(ms, 0.95):.1f} "
                f"| {max(ms):.1f} |",
                flush=True,
            )
    print(f"load average (1 min) before {load_before:.1f}, after {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
