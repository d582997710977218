"""`make bench`: measure banditd on this box and write bench/out/*.json and docs/BENCHMARKS.md.

Run from the repository root with the bench's own Redis db and Postgres
database in REDIS_URL / DATABASE_URL (bench/run.sh sets them up)::

    .venv/bin/python -m bench.run [--quick] [--only PHASE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import redis

from app.services import database_engine
from bench import item_choose, learning_lag, metrics_overhead, phases, report, steady
from bench.saturation import WrkSettings
from bench.stack import ROOT, sync_config
from chaos.machine import cpu_model, memory_gib

PHASES = {
    "throughput_2w": lambda b: phases.throughput(b, 2),
    "throughput_4w": lambda b: phases.throughput(b, 4),
    "throughput_4w_worker": lambda b: phases.throughput(b, 4, update_worker=True),
    "steady_load": steady.steady_load,
    "worker_drain": phases.worker_drain,
    "freshness": phases.freshness_phase,
    "cost_growth": phases.cost_growth,
    "memory": phases.memory_phase,
    "metrics_cost": metrics_overhead.phase,
    "item_choose": item_choose.phase,
    "learning_lag": learning_lag.phase,
}
TEMPLATE = ROOT / "bench" / "BENCHMARKS.md.in"
DOC = ROOT / "docs" / "BENCHMARKS.md"


def _sh(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout.strip()
    except OSError:
        return ""


def machine() -> dict:
    """What the figures were measured on."""
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib(),
        "kernel": platform.release(),
        "os": _sh("sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"),
        "python": platform.python_version(),
        "redis": client.info("server")["redis_version"],
        "redis_aof": client.config_get("appendonly").get("appendonly"),
        "postgres": _sh("sh", "-c", "psql --version | cut -d' ' -f3"),
        "wrk": _sh("sh", "-c", "wrk -v 2>&1 | head -1 | cut -d' ' -f2"),
    }


def code() -> dict:
    """Which code was measured: the commit, and whether the tree had local changes."""
    changed = _sh("git", "status", "--porcelain", "--", "app", "bandits", "wsgi.py")
    return {
        "commit": _sh("git", "rev-parse", "--short", "HEAD") or "(not a git checkout)",
        "local changes in app/, bandits/": len(changed.splitlines()) if changed else 0,
    }


def load_average() -> str:
    """The 1/5/15-minute load averages: how busy the box was besides us."""
    return " / ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv: list[str] | None = None) -> int:
    """Run the phases, print the tables, write the JSON and docs/BENCHMARKS.md."""
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short phases, for trying it out")
    parser.add_argument("--only", nargs="+", choices=sorted(PHASES), help="run only these phases")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/BENCHMARKS.md")
    parser.add_argument(
        "--serving",
        choices=("config", "sync"),
        default="config",
        help="gunicorn.conf.py (default), or the sync workers it replaced (for comparison)",
    )
    parser.add_argument(
        "--new-connections",
        action="store_true",
        help='wrk sends "Connection: close": a TCP connection per request, as with sync workers',
    )
    parser.add_argument(
        "--from-json", type=Path, help="measure nothing: print and document this results file"
    )
    args = parser.parse_args(argv)
    if args.from_json:
        results = json.loads(args.from_json.read_text())
        print(report.text(results))
        report.write_markdown(results, TEMPLATE, DOC)
        return 0

    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    quick = args.quick
    bench = phases.Bench(
        client=redis.Redis.from_url(os.environ["REDIS_URL"]),
        engine=database_engine(os.environ["DATABASE_URL"]),
        env={
            "REDIS_URL": os.environ["REDIS_URL"],
            "DATABASE_URL": os.environ["DATABASE_URL"],
            "BANDITD_CONFIG": str(ROOT / "bench" / "experiments.toml"),
            "BANDITD_API_KEYS": os.environ.get("BENCH_API_KEY", "bench-key"),
        },
        api_key=os.environ.get("BENCH_API_KEY", "bench-key"),
        out=out,
        rng=np.random.default_rng(6),
        wrk=WrkSettings(
            threads=2,
            connections=32,
            warmup_seconds=1.0 if quick else 2.0,
            seconds=2.0 if quick else 4.0,
            new_connections=args.new_connections,
        ),
        rounds=2 if quick else 3,
        fixed_seconds=3.0 if quick else 10.0,
        drain_events=20_000 if quick else 200_000,
        freshness_seconds=5.0 if quick else 20.0,
        grid_seconds=0.5 if quick else 2.5,
        grid_requests=50 if quick else 400,
        gunicorn_config=sync_config(out) if args.serving == "sync" else None,
        steady_seconds=4.0 if quick else 10.0,
        steady_backlog=40_000 if quick else 100_000,
        lag_seeds=2 if quick else 4,
        lag_rounds=500 if quick else 3_000,
    )
    started = time.monotonic()
    stamp = datetime.now(timezone.utc)
    results: dict = {
        "meta": {
            "started": stamp.strftime("%Y-%m-%d %H:%M UTC"),
            "command": "make bench" + (" (quick)" if quick else ""),
            "serving": "sync workers" if args.serving == "sync" else "gunicorn.conf.py",
            "wrk_new_connections": args.new_connections,
            "machine": machine(),
            "code": code(),
            "load": f"load average at start {load_average()}",
        }
    }
    json_path = out / f"bench-{stamp.strftime('%Y%m%dT%H%M%SZ')}.json"
    for name, phase in PHASES.items():
        if args.only and name not in args.only:
            continue
        t0 = time.monotonic()
        print(f"bench: {name} ...", flush=True)
        results[name] = phase(bench)
        results[name]["phase_seconds"] = round(time.monotonic() - t0, 1)
        print(
            f"bench: {name} done in {time.monotonic() - t0:.0f}s (load {load_average()})",
            flush=True,
        )
        json_path.write_text(json.dumps(results, indent=1))
    results["meta"]["seconds"] = round(time.monotonic() - started, 1)
    results["meta"]["load"] += f", at end {load_average()}"
    results["targets"] = report.targets(results)
    json_path.write_text(json.dumps(results, indent=1))
    (out / "latest.json").write_text(json.dumps(results, indent=1))
    print()
    print(report.text(results))
    print(f"\nbench: results in {json_path.relative_to(ROOT)}", end="")
    comparison = args.serving != "config" or args.new_connections  # not what make run runs
    if not args.no_doc and not args.only and not comparison:
        report.write_markdown(results, TEMPLATE, DOC)
        print(f" and {DOC.relative_to(ROOT)}", end="")
    print(f"; took {results['meta']['seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
