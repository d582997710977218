"""Slow clients: connections dribbling a request at 1 byte/s while probes time /healthz and /choose.

Starts the service as ``make run`` does (gunicorn with gunicorn.conf.py, and
``banditd worker``) against the bench's Redis db and Postgres database, then
for ``--seconds`` keeps ``--dribblers`` connections sending a request one byte
a second (half dribble their headers, half send headers at once and dribble a
body; a connection the server closes is opened again at once, as an attacker
would), while probes alternate ``GET /healthz`` and ``POST /choose``, each on
a new connection, on a fixed schedule (``--interval``). It prints how many
probes answered 200 within 1 s, and the latency p50/p99/max from the time each
probe was due::

    .venv/bin/python -m bench.slow_clients                  # the serving setup of gunicorn.conf.py
    .venv/bin/python -m bench.slow_clients --setup sync     # the old one: 2 sync workers
    .venv/bin/python -m bench.slow_clients --setup gthread:16

Run from the repository root with REDIS_URL / DATABASE_URL set as bench/run.sh
sets them (defaults: Redis db 13, database banditd_bench). tests/test_slow_clients.py
runs :func:`siege` against the e2e service.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import redis

from bench.client import Endpoint, HttpError, call
from bench.openloop import percentiles
from bench.stack import sync_config

WITHIN = 1.0  # seconds: the answer time the issue asks of >= 99% of probes
PROBE_TIMEOUT = 5.0  # a probe not answered by then counts as not answered (latency = this)
BODY_LENGTH = 60_000  # under the API's 64 KiB limit, so only time can refuse it


@dataclass(frozen=True)
class Target:
    """Where the service listens, and what a probe sends."""

    host: str
    port: int
    api_key: str
    choose_body: bytes


@dataclass
class Dribbled:
    """What the dribbling connections did."""

    connections: int = 0  # opened, counting re-opens
    bytes_sent: int = 0
    closed_by_server: int = 0  # EOF, a reset, or an answer (400, 408, 413...) before we were done
    refused: int = 0  # connect failed or timed out


@dataclass
class Probes:
    """Each probe's endpoint, seconds from its due time to its answer, and status (0: none)."""

    rows: list[tuple[str, float, int]] = field(default_factory=list)

    def summary(self) -> dict:
        """Count, share answered 200 within 1 s, latency percentiles (ms): overall, per path."""
        out = {"all": _summary(self.rows)}
        for path in sorted({p for p, _, _ in self.rows}):
            out[path] = _summary([r for r in self.rows if r[0] == path])
        return out


def _summary(rows: list[tuple[str, float, int]]) -> dict:
    ok = sum(1 for _, s, status in rows if status == 200 and s <= WITHIN)
    latency = percentiles(np.array([s * 1000 for _, s, _ in rows]))
    return {
        "probes": len(rows),
        "within_1s": ok,
        "share_within_1s": round(ok / len(rows), 4) if rows else None,
        "unanswered": sum(1 for _, _, status in rows if status == 0),
        "non_200": sum(1 for _, _, status in rows if status not in (0, 200)),
        "p50_ms": latency["p50"],
        "p99_ms": latency["p99"],
        "max_ms": latency["max"],
    }


def _dribble_bytes(kind: str, target: Target) -> tuple[bytes, bytes]:
    """(sent at once, then sent a byte a second) for a header or a body dribbler."""
    host = f"Host: {target.host}:{target.port}\r\n"
    if kind == "headers":
        endless = b"x" * 100_000  # longer than any run: the headers never end
        return b"", f"POST /choose HTTP/1.1\r\n{host}X-Slow: ".encode() + endless
    head = (
        f"POST /choose HTTP/1.1\r\n{host}Authorization: Bearer {target.api_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {BODY_LENGTH}\r\n\r\n"
    ).encode()
    return head, b"{" + b" " * (BODY_LENGTH - 1)


async def dribble(target: Target, kind: str, until: float, rate: float, seen: Dribbled) -> None:
    """Until ``until`` (loop time), keep one connection sending its request at ``rate`` bytes/s."""
    loop = asyncio.get_running_loop()
    at_once, slow = _dribble_bytes(kind, target)
    while loop.time() < until:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                reader, writer = await asyncio.open_connection(target.host, target.port)
        except (OSError, TimeoutError):
            seen.refused += 1
            await asyncio.sleep(1 / rate)
            continue
        seen.connections += 1
        try:
            writer.write(at_once)
            for i in range(len(slow)):
                writer.write(slow[i : i + 1])
                await writer.drain()
                seen.bytes_sent += 1
                left = until - loop.time()
                if left <= 0:
                    return
                # the pause between bytes is also when we notice the server closing on us
                try:
                    async with asyncio.timeout(min(1 / rate, left)):
                        await reader.read(4096)  # b"" (EOF) or an answer: either way, done
                except TimeoutError:
                    continue
                seen.closed_by_server += 1
                break
        except (ConnectionError, OSError):
            seen.closed_by_server += 1
        finally:
            writer.close()


async def probe(target: Target, path: str, due: float, probes: Probes) -> None:
    """One probe on a new connection: record seconds from ``due`` to the answer, and its status."""
    loop = asyncio.get_running_loop()
    if path == "/healthz":
        raw = Endpoint(target.host, target.port, path, "GET").request()
    else:
        endpoint = Endpoint(
            target.host, target.port, path, "POST", {"Authorization": f"Bearer {target.api_key}"}
        )
        raw = endpoint.request(target.choose_body)
    status = 0
    try:
        status, _ = await call(Endpoint(target.host, target.port, path), raw, PROBE_TIMEOUT)
    except (HttpError, OSError, TimeoutError):
        pass
    elapsed = loop.time() - due if status else PROBE_TIMEOUT
    probes.rows.append((path, elapsed, status))


async def siege(
    target: Target,
    *,
    dribblers: int = 8,
    seconds: float = 15.0,
    interval: float = 0.05,
    head_start: float = 1.0,
    rate: float = 1.0,
) -> dict:
    """Dribble ``dribblers`` connections for ``seconds``; probe every ``interval`` meanwhile.

    Half the dribblers (rounded up) dribble headers, the rest a body. Probes
    start ``head_start`` seconds in and alternate /healthz and /choose; every
    probe due before the dribbling ends is sent on time, whatever the earlier
    ones are still waiting for.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    until = start + seconds
    kinds = ["headers" if i % 2 == 0 else "body" for i in range(dribblers)]
    seen = {kind: Dribbled() for kind in set(kinds)}
    slow = [asyncio.create_task(dribble(target, k, until, rate, seen[k])) for k in kinds]
    probes = Probes()
    sent = []
    due = start + head_start
    paths = ("/healthz", "/choose")
    while due < until:
        await asyncio.sleep(max(0.0, due - loop.time()))
        sent.append(asyncio.create_task(probe(target, paths[len(sent) % 2], due, probes)))
        due += interval
    await asyncio.gather(*slow, *sent)
    return {
        "dribblers": dribblers,
        "seconds": seconds,
        "rate_bytes_per_s": rate,
        "probe_interval_s": interval,
        "dribbled": {kind: vars(d) for kind, d in sorted(seen.items())},
        "probes": probes.summary(),
    }


def format_result(name: str, result: dict) -> str:
    """A few lines: the probes overall and per path, and what the dribblers did."""
    lines = [
        f"{name}: {result['dribblers']} dribblers at {result['rate_bytes_per_s']:g} byte/s "
        f"for {result['seconds']:g} s, a probe every {result['probe_interval_s'] * 1000:.0f} ms"
    ]
    for path, s in result["probes"].items():
        share = s["share_within_1s"]
        lines.append(
            f"  {path:9} probes {s['probes']:4}  200 within 1 s {s['within_1s']:4} "
            f"({100 * share:5.1f}%)  unanswered {s['unanswered']:3}  "
            f"p50 {s['p50_ms']:8.1f} ms  p99 {s['p99_ms']:8.1f} ms  max {s['max_ms']:8.1f} ms"
        )
    for kind, d in result["dribbled"].items():
        lines.append(
            f"  dribbling {kind:7}: {d['connections']} connections, {d['bytes_sent']} bytes sent, "
            f"{d['closed_by_server']} closed by the server, {d['refused']} refused"
        )
    return "\n".join(lines)


def setup_args(setup: str, out: Path) -> tuple[Path | None, list[str]]:
    """(config file, extra gunicorn options) for a ``--setup`` name.

    ``config``: gunicorn.conf.py as it is. ``sync``: what scripts/run.sh ran before
    gunicorn.conf.py (gunicorn's defaults: sync workers). ``gthread:N`` and
    ``gevent``: gunicorn.conf.py with that worker class instead.
    """
    if setup == "config":
        return None, []
    if setup == "sync":
        return sync_config(out), []
    if setup.startswith("gthread:"):
        return None, ["--worker-class", "gthread", "--threads", setup.partition(":")[2]]
    if setup == "gevent":
        return None, ["--worker-class", "gevent"]
    raise ValueError(f"unknown setup {setup!r}")


def main(argv: list[str] | None = None) -> int:
    """Start the service, run the siege once per ``--setup``, print (and save) the figures."""
    from app.services import database_engine
    from bench import configs, seed
    from bench.stack import ROOT, Gunicorn, UpdateWorker

    parser = argparse.ArgumentParser(prog="bench.slow_clients", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--setup", action="append", help="config (default), sync, gthread:N, gevent"
    )
    parser.add_argument("--dribblers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between probes")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn processes")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    api_key = "bench-key"
    env = {
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://localhost:6379/13"),
        "DATABASE_URL": os.environ.get(
            "DATABASE_URL", "postgresql://banditd:banditd@localhost:5432/banditd_bench"
        ),
        "BANDITD_CONFIG": str(configs.MAIN_CONFIG),
        "BANDITD_API_KEYS": api_key,
    }
    rng = np.random.default_rng(17)
    exps = configs.experiments(configs.MAIN_CONFIG)
    seed.reset(redis.Redis.from_url(env["REDIS_URL"]), database_engine(env["DATABASE_URL"]))
    seed.seed_arms(redis.Redis.from_url(env["REDIS_URL"]), exps["bench_linucb"], rng)
    body = configs.choose_bodies(exps["bench_linucb"], rng, n=1)[0]

    results = {}
    for setup in args.setup or ["config"]:
        config, extra = setup_args(setup, out)
        with (
            UpdateWorker(env, out),
            Gunicorn("wsgi:app", args.workers, env, out, config=config, extra=extra) as api,
        ):
            target = Target("127.0.0.1", api.port, api_key, body)
            t0 = time.monotonic()
            result = asyncio.run(
                siege(
                    target, dribblers=args.dribblers, seconds=args.seconds, interval=args.interval
                )
            )
            result["setup"] = setup
            result["workers"] = args.workers
            result["wall_seconds"] = round(time.monotonic() - t0, 1)
        results[setup] = result
        print(format_result(f"{setup} ({args.workers} processes)", result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
