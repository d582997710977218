"""Saturation throughput with wrk (closed loop, several connections, fixed duration).

wrk keeps every connection busy, so the server runs flat out; only its request
rate is used (wrk's own latency figures suffer from coordinated omission; the
latency figures come from :mod:`bench.openloop`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA = Path(__file__).absolute().parent / "lua" / "post.lua"


@dataclass(frozen=True)
class WrkSettings:
    """wrk's threads and connections, and how long to warm up and to measure."""

    threads: int = 2
    connections: int = 32
    warmup_seconds: float = 2.0
    seconds: float = 10.0
    # "Connection: close" on every request: a TCP connection per request even where the
    # server keeps connections open (gevent does; the sync workers never did)
    new_connections: bool = False


def write_bodies(path: Path, bodies: list[bytes]) -> Path:
    """Write one JSON body per line for the wrk script; returns ``path``."""
    path.write_bytes(b"\n".join(bodies) + b"\n")
    return path


def wrk(url: str, bodies: Path, seconds: float, settings: WrkSettings, api_key: str = "") -> dict:
    """Run wrk against ``url`` POSTing ``bodies``; the summary its script prints, plus req/s."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (make bench installs it with apt-get)")
    cmd = [
        "wrk",
        "-t",
        str(settings.threads),
        "-c",
        str(settings.connections),
        "-d",
        f"{seconds:g}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        url,
    ]
    env = {
        **os.environ,
        "BENCH_BODIES": str(bodies),
        "BENCH_THREADS": str(settings.threads),
        "BENCH_API_KEY": api_key,
        "BENCH_CONNECTION_CLOSE": "1" if settings.new_connections else "",
    }
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    line = next((s for s in out.splitlines() if s.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    summary = json.loads(line[len("WRK_JSON ") :])
    summary["rps"] = round(summary["requests"] / (summary["duration_us"] / 1e6), 1)
    summary["errors"] = sum(
        v for k, v in summary.items() if k.endswith("_errors") or k == "timeouts"
    )
    return summary


def saturate(
    url: str,
    warm_bodies: Path,
    bodies: Path,
    settings: WrkSettings,
    api_key: str = "",
) -> dict:
    """Warm up with ``warm_bodies``, then measure with ``bodies``; the measured summary."""
    if settings.warmup_seconds > 0:
        wrk(url, warm_bodies, settings.warmup_seconds, settings, api_key)
    result = wrk(url, bodies, settings.seconds, settings, api_key)
    result.update(threads=settings.threads, connections=settings.connections)
    return result
