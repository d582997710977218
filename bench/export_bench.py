"""What ``banditd export`` costs: seconds and peak memory for a log of N impressions.

Creates a database of its own (``banditd_export_big``; needs root, to run
``psql`` as the ``postgres`` user), migrates it, writes a synthetic log of
``--impressions`` impressions over 30 days with their decisions and rewards
(bench/synthetic_log.py), then runs ``banditd export`` of the whole log as a
subprocess ``--runs`` times into one directory (the first run writes every
day, the others replace them). For each run: wall seconds, the process's
peak RSS (``wait4``), the load average when it started, rows per table and
file sizes. The database is dropped at the end unless ``--keep``::

    .venv/bin/python -m bench.export_bench --impressions 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from app.cli import migrate
from app.services import database_engine
from app.settings import Settings
from bench.synthetic_log import seed

DATABASE = "banditd_export_big"
ROLE = "banditd"
URL = "postgresql://banditd:banditd@localhost:5432/{database}"


def postgres(sql: str) -> None:
    """Run ``sql`` as the ``postgres`` superuser (CREATE/DROP DATABASE need it here)."""
    subprocess.run(
        ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        + ["-d", "postgres", "-c", sql],
        check=True,
        cwd="/",
    )


def export_once(url: str, since: str, until: str, out: Path) -> dict:
    """One ``banditd export`` subprocess: its summary, wall seconds, peak RSS and load."""
    load = os.getloadavg()
    with tempfile.TemporaryFile() as stdout:
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "export", "--experiment", "synthetic_0"]
            + ["--since", since, "--until", until, "--out", str(out)],
            env={**os.environ, "DATABASE_URL": url},
            stdout=stdout,
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise RuntimeError(f"banditd export exited {process.returncode}")
        stdout.seek(0)
        summary = json.loads(stdout.read())
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "load_average": [round(x, 2) for x in load],
        "rows": {t: s["rows"] for t, s in summary["tables"].items()},
        "parquet_mb": {t: round(s["parquet_bytes"] / 1e6, 1) for t, s in summary["tables"].items()},
        "postgres_mb": {t: round(s["read_bytes"] / 1e6, 1) for t, s in summary["tables"].items()},
    }


def main(argv: list[str] | None = None) -> int:
    """Seed, export ``--runs`` times, print each run and the best; returns the exit code."""
    parser = argparse.ArgumentParser(prog="bench.export_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--impressions", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database", default=DATABASE)
    parser.add_argument("--out", type=Path, help="export directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args(argv)

    url = URL.format(database=args.database)
    postgres(f"DROP DATABASE IF EXISTS {args.database}")
    postgres(f"CREATE DATABASE {args.database} OWNER {ROLE}")
    try:
        migrate(Settings(database_url=url))
        engine = database_engine(url)
        started = time.monotonic()
        log = seed(engine, impressions=args.impressions, days=args.days)
        engine.dispose()
        print(
            f"seeded {log.decisions:,} decisions, {log.impressions:,} impressions, "
            f"{log.rewards:,} rewards in {time.monotonic() - started:.1f} s",
            file=sys.stderr,
        )
        since = log.start.date().isoformat()
        until = (log.end.date() + timedelta(days=2)).isoformat()  # default rewards come later
        with tempfile.TemporaryDirectory(prefix="export-bench-") as scratch:
            out = args.out or Path(scratch)
            runs = [export_once(url, since, until, out) for _ in range(args.runs)]
        for n, run in enumerate(runs, 1):
            print(json.dumps({"run": n, **run}), flush=True)
        best = min(runs, key=lambda r: r["seconds"])
        print(
            json.dumps(
                {
                    "impressions": args.impressions,
                    "best_seconds": best["seconds"],
                    "load_average_of_best": best["load_average"],
                    "max_peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                    "rows": best["rows"],
                    "parquet_mb": best["parquet_mb"],
                }
            )
        )
    finally:
        if not args.keep:
            postgres(f"DROP DATABASE IF EXISTS {args.database}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
