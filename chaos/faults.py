"""The faults: kill or stall the worker that holds the lease, stop Postgres, restart Redis.

Each fault runs while a :class:`chaos.load.LoadGenerator` keeps sending, and
returns what it measured (recovery times, what /readyz said) as plain dicts
for the report.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import redis
import requests
import sqlalchemy
from sqlalchemy.engine import Engine

from app import keys
from app.event_stream import GROUP
from chaos.instances import OwnPostgres, OwnRedis
from chaos.load import Ledger

LEASE_SECONDS = 5.0  # app/lease.py: a dead worker's lease expires after this


def consumer_of(pid: int) -> str:
    """The consumer (and lease holder) name ``banditd worker`` with this pid uses."""
    return f"{socket.gethostname()}-{pid}"


def lease_holder(client: redis.Redis, experiment: str) -> str | None:
    """Who holds the experiment's stream lease now, if anyone."""
    try:
        owner = client.get(keys.owner(experiment))
    except redis.RedisError:
        return None
    return owner.decode() if owner else None


@dataclass
class WorkerFaults:
    """Kill (SIGKILL) or stall (SIGSTOP past the lease) the lease holder at random moments.

    ``workers()`` gives the running worker processes, ``restart(proc)`` replaces a
    killed one. A fault is injected a random delay after a worker took the lease,
    so it lands while that worker works through the backlog that built up
    meanwhile. With ``engine`` and ``ledger``, each fault also measures how long
    until every decision acknowledged before it was in Postgres.
    """

    client: redis.Redis
    experiment: str
    workers: Callable[[], list[subprocess.Popen]]
    restart: Callable[[subprocess.Popen], subprocess.Popen]
    seed: int = 0
    delay: tuple[float, float] = (0.0, 0.5)  # seconds after the victim took the lease
    stall_seconds: float = LEASE_SECONDS + 2.0
    engine: Engine | None = None
    ledger: Ledger | None = None
    planned: set[int] = field(default_factory=set)  # pids killed on purpose
    _retaken_at: float = 0.0
    events: list[dict] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)

    def holder(self, timeout: float = 60.0) -> subprocess.Popen:
        """The worker process that holds the lease, waiting for one to take it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop_event.is_set():
            owner = lease_holder(self.client, self.experiment)
            for proc in self.workers():
                if proc.poll() is None and owner == consumer_of(proc.pid):
                    return proc
            time.sleep(0.02)
        raise TimeoutError(f"no worker took the lease of {self.experiment} within {timeout}s")

    def _pending(self, pid: int) -> int:
        try:
            info = self.client.xpending(keys.stream(self.experiment), GROUP)
        except redis.RedisError:
            return -1
        return next(
            (c["pending"] for c in info["consumers"] if c["name"].decode() == consumer_of(pid)), 0
        )

    def run(self, kills: int, stalls: int = 0) -> list[dict]:
        """Inject ``kills`` kills and ``stalls`` stalls in a seeded random order."""
        rng = np.random.default_rng(self.seed)
        plan = ["kill"] * kills + ["stall"] * stalls
        rng.shuffle(plan)
        started = time.monotonic()
        for what in plan:
            if self.stop_event.is_set():
                break
            victim = self.holder()
            took_lease = time.monotonic()
            self.stop_event.wait(float(rng.uniform(*self.delay)))
            if victim.poll() is not None:
                continue
            acknowledged = self._acknowledged()
            at = time.monotonic()
            if what == "kill":
                self.planned.add(victim.pid)
                pending = self._pending(victim.pid)  # delivered to it, not yet acknowledged
                victim.send_signal(signal.SIGKILL)
                victim.wait(timeout=10)
                self.restart(victim)
                next_holder = self.holder()
            else:
                victim.send_signal(signal.SIGSTOP)
                pending = self._pending(victim.pid)
                next_holder = self._taken_over(victim, at + self.stall_seconds)
                time.sleep(max(0.0, at + self.stall_seconds - time.monotonic()))
                victim.send_signal(signal.SIGCONT)
                next_holder = next_holder or self.holder()
            retaken = time.monotonic() - at if what == "kill" else self._retaken_at - at
            caught_up = None
            if self.engine is not None and acknowledged:
                waited = wait_until_logged(self.engine, acknowledged, timeout=60)
                caught_up = None if waited is None else round(time.monotonic() - at, 2)
            self.events.append(
                {
                    "fault": what,
                    "at_s": round(at - started, 2),
                    "pid": victim.pid,
                    "held_lease_for_s": round(at - took_lease, 2),
                    "its_pending_entries": pending,
                    "lease_taken_again_after_s": round(retaken, 2),
                    "new_holder_pid": next_holder.pid,
                    "logged_all_acknowledged_after_s": caught_up,
                }
            )
        return self.events

    def _taken_over(self, stalled: subprocess.Popen, until: float) -> subprocess.Popen | None:
        """The worker that takes the lease from ``stalled`` before ``until``, if one does."""
        self._retaken_at = until
        while time.monotonic() < until:
            owner = lease_holder(self.client, self.experiment)
            for proc in self.workers():
                if proc is not stalled and proc.poll() is None and owner == consumer_of(proc.pid):
                    self._retaken_at = time.monotonic()
                    return proc
            time.sleep(0.02)
        return None

    def _acknowledged(self) -> list[str]:
        if self.ledger is None:
            return []
        with self.ledger.lock:
            return list(self.ledger.decisions)


class Supervisor(threading.Thread):
    """Restart any worker that exits unplanned (what systemd or Kubernetes would do); log it."""

    def __init__(
        self,
        workers: Callable[[], list[subprocess.Popen]],
        restart: Callable[[subprocess.Popen], subprocess.Popen],
        planned: set[int],
    ) -> None:
        super().__init__(daemon=True, name="supervisor")
        self.workers = workers
        self.restart = restart
        self.planned = planned
        self.exits: list[dict] = []
        self.stop_event = threading.Event()
        self.started_at = time.monotonic()

    def run(self) -> None:
        while not self.stop_event.wait(0.25):
            for proc in self.workers():
                if proc.poll() is not None and proc.pid not in self.planned:
                    self.planned.add(proc.pid)
                    self.exits.append(
                        {
                            "pid": proc.pid,
                            "status": proc.returncode,
                            "at_s": round(time.monotonic() - self.started_at, 1),
                        }
                    )
                    self.restart(proc)


def _logged(engine: Engine, decision_ids: list[str]) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sqlalchemy.text("SELECT count(*) FROM decisions WHERE decision_id = ANY(:ids)"),
            {"ids": decision_ids},
        ).scalar_one()


def wait_until_logged(engine: Engine, decision_ids: list[str], timeout: float) -> float | None:
    """Seconds until every one of ``decision_ids`` is in Postgres; None if not within timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if _logged(engine, decision_ids) == len(decision_ids):
                return time.monotonic() - started
        except sqlalchemy.exc.OperationalError:
            pass
        time.sleep(0.1)
    return None


def retry_pauses(worker_log: Path) -> list[float]:
    """The backoff pauses a worker logged while a store was unavailable."""
    text = worker_log.read_text(errors="replace")
    return [float(p) for p in re.findall(r"retrying in ([\d.]+)s", text)]


def readiness(base_url: str) -> tuple[int | str, str]:
    """GET /readyz: (status code, ``status`` field)."""
    try:
        r = requests.get(base_url + "/readyz", timeout=5)
        return r.status_code, r.json().get("status", "")
    except (requests.RequestException, ValueError) as exc:
        return "no answer", type(exc).__name__


def postgres_outage(
    postgres: OwnPostgres,
    engine: Engine,
    base_url: str,
    ledger: Ledger,
    seconds: float,
    *,
    timeout: float = 120.0,
) -> dict:
    """Stop Postgres (a crash: ``pg_ctl -m immediate``) for ``seconds`` under load, then start it.

    Measures what /readyz said during the outage, how many requests were
    answered meanwhile, and how long after Postgres was back every decision
    acknowledged so far was in the log.
    """
    before = dict(ledger.statuses)
    postgres.stop("immediate")
    stopped = time.monotonic()
    ready: dict[str, int] = {}
    while time.monotonic() - stopped < seconds:
        code, status = readiness(base_url)
        ready[f"{code} {status}"] = ready.get(f"{code} {status}", 0) + 1
        time.sleep(0.5)
    during = {
        f"{route} {status}": n - before.get((route, status), 0)
        for (route, status), n in ledger.statuses.items()
        if n - before.get((route, status), 0)
    }
    restarting = time.monotonic()
    postgres.start()
    back = time.monotonic()
    with ledger.lock:
        acknowledged = list(ledger.decisions)
    recovered = wait_until_logged(engine, acknowledged, timeout=timeout)
    return {
        "fault": f"Postgres stopped for {seconds:g} s (pg_ctl stop -m immediate)",
        "down_s": round(back - stopped, 1),
        "readyz_during": ready,
        "answers_during": during,
        "postgres_start_took_s": round(back - restarting, 1),
        "decisions_acknowledged_by_then": len(acknowledged),
        "all_in_postgres_after_s": None if recovered is None else round(recovered, 1),
    }


def redis_restart(redis_server: OwnRedis, base_url: str, ledger: Ledger, seconds: float) -> dict:
    """Crash Redis (SIGKILL) under load, keep it down ``seconds``, start it from its AOF.

    Measures the answers while it is down (all 503 ``storage_unavailable``, and
    how fast), and how long after the restart ``/readyz`` is ready again.
    """
    before = dict(ledger.statuses)
    slowest_before = len(ledger.answered_503)
    redis_server.kill()
    killed = time.monotonic()
    ready: dict[str, int] = {}
    while time.monotonic() - killed < seconds:
        code, status = readiness(base_url)
        ready[f"{code} {status}"] = ready.get(f"{code} {status}", 0) + 1
        time.sleep(0.25)
    during = {
        f"{route} {status}": n - before.get((route, status), 0)
        for (route, status), n in ledger.statuses.items()
        if n - before.get((route, status), 0)
    }
    redis_server.start()
    back = time.monotonic()
    while readiness(base_url) != (200, "ready") and time.monotonic() - back < 60:
        time.sleep(0.05)
    ready_after = time.monotonic() - back
    latencies = sorted(ledger.answered_503[slowest_before:])
    return {
        "fault": f"Redis killed (SIGKILL) and restarted from its AOF after {seconds:g} s "
        f"(appendfsync {redis_server.fsync})",
        "down_s": round(back - killed, 1),
        "answers_during": during,
        "readyz_during": ready,
        "answers_503": len(latencies),
        "503_p50_ms": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
        "503_p95_ms": round(1000 * latencies[int(len(latencies) * 0.95)], 1) if latencies else None,
        "503_max_ms": round(1000 * latencies[-1], 1) if latencies else None,
        "ready_again_after_s": round(ready_after, 2),
    }
