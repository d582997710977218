"""`make chaos`: banditd under load through every fault; then the log audited, the model verified.

Runs against a Redis and a Postgres of its own (chaos/instances.py; the shared
servers are never touched): gunicorn (2 web workers) and two ``banditd worker``
processes, a load generator at a modest fixed rate, and, one after the other,
``--kills`` SIGKILLs of the worker holding the lease, a ``--pg-down`` second
Postgres stop, a Redis crash and restart from its AOF, ``--stalls`` SIGSTOPs of
the lease holder past its lease; then the log is audited against every
acknowledgement, ``banditd rebuild --verify`` compares the model with the log,
and finally Redis loses all its data and ``banditd rebuild`` restores the model.

Writes chaos/out/chaos-<time>.json and chaos/out/latest.json and rewrites
docs/RELIABILITY.md from them. Exit status 0 if nothing acknowledged was lost or
duplicated and every verify passed::

    .venv/bin/python -m chaos.run [--pairs 10000] [--kills 20] [--pg-down 30] ...
    .venv/bin/python -m chaos.run --from-json chaos/out/latest.json   # re-render the doc only
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from app.services import database_engine, redis_client
from chaos import report
from chaos.audit import learned_total, live_arms, rebuild, wait_for_log
from chaos.cluster import markdown as cluster_markdown
from chaos.cluster import summary as cluster_summary
from chaos.cluster import run_cluster
from chaos.faults import (
    Supervisor,
    WorkerFaults,
    postgres_outage,
    redis_restart,
    wait_until_logged,
)
from chaos.instances import own_stores
from chaos.load import Ledger, LoadGenerator, experiment_toml
from chaos.poison import PoisonInjector
from chaos.machine import machine
from tests.conftest import API_KEY
from tests.service_processes import Service, replace_atomically, start_service

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "chaos" / "out"
EXPERIMENT = "chaos"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chaos.run", description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=10_000, help="least choose+reward pairs")
    parser.add_argument("--rate", type=float, default=60.0, help="pairs/s, all threads together")
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs of the lease holder")
    parser.add_argument(
        "--stalls", type=int, default=4, help="SIGSTOPs of the holder past its lease"
    )
    parser.add_argument("--workers", type=int, default=2, help="banditd worker processes")
    parser.add_argument("--pg-down", type=float, default=30.0, help="seconds Postgres is stopped")
    parser.add_argument("--redis-down", type=float, default=5.0, help="seconds Redis is down")
    parser.add_argument("--fsync", choices=("always", "everysec"), default="always")
    parser.add_argument("--window", type=float, default=2.0, help="reward window, seconds")
    parser.add_argument("--after-pairs", type=int, default=500, help="pairs after the rebuild")
    parser.add_argument(
        "--poison", type=int, default=25, help="poisoned entries written into the stream"
    )
    parser.add_argument("--seed", type=int, default=20241125)
    parser.add_argument(
        "--cluster-kills", type=int, default=3,
        help="masters killed in the Redis Cluster run (chaos/cluster.py; 0: no cluster run)",
    )  # fmt: skip
    parser.add_argument("--from-json", type=Path, help="only re-render the doc from this file")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "RELIABILITY.md")
    return parser.parse_args(argv)


def _restarter(lock: threading.Lock, svc: Service):
    """``svc.replace_worker`` for two threads (the fault injector, the supervisor) at once."""

    def restart(proc):
        with lock:
            if proc.poll() is None or proc not in svc.workers():
                return proc  # alive, or replaced already
            return svc.replace_worker(proc)

    return restart


def _stop_workers(svc: Service, planned: set[int]) -> None:
    for proc in svc.workers():
        planned.add(proc.pid)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in svc.workers():
        proc.wait(timeout=30)


def run_chaos(args: argparse.Namespace, workdir: Path) -> dict:
    """Run every phase; returns the results (also on a failed check)."""
    result: dict = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("from_json", "doc")}
    }
    result["settings"]["experiment"] = EXPERIMENT
    phases: dict = {}
    result["phases"] = phases
    config = workdir / "experiments.toml"
    logs = workdir / "logs"
    logs.mkdir(parents=True)
    replace_atomically(config, experiment_toml(EXPERIMENT, window_seconds=args.window))
    with own_stores(workdir / "stores", fsync=args.fsync) as (redis_server, postgres):
        svc = start_service(config, logs, redis_url=redis_server.url(0), database_url=postgres.url)
        engine = database_engine(postgres.url)
        client = redis_client(redis_server.url(0))
        lock = threading.Lock()
        restart = _restarter(lock, svc)
        ledger = Ledger()
        load = LoadGenerator(
            svc.base_url, API_KEY, EXPERIMENT, ledger,
            threads=args.threads, rate=args.rate, seed=args.seed,
        )  # fmt: skip
        faults = WorkerFaults(
            client, EXPERIMENT, svc.workers, restart, seed=args.seed, engine=engine, ledger=ledger
        )
        supervisor = Supervisor(svc.workers, restart, faults.planned)
        poison = PoisonInjector(client, EXPERIMENT, count=args.poison, seed=args.seed + 3)
        try:
            for _ in range(args.workers - 1):
                svc.add_worker()
            supervisor.start()
            started = time.monotonic()
            load.start()
            poison.start()
            step(f"load started; {args.poison} poisoned entries will be written into the stream")
            step("killing the lease holder", args.kills, "times")
            phases["worker_kills"] = faults.run(kills=args.kills)
            step(f"stopping Postgres for {args.pg_down:g} s")
            exits = len(supervisor.exits)
            phases["postgres_outage"] = postgres_outage(
                postgres, engine, svc.base_url, ledger, args.pg_down
            )
            phases["postgres_outage"]["worker_exits"] = len(supervisor.exits) - exits
            step(f"crashing Redis for {args.redis_down:g} s")
            exits = len(supervisor.exits)
            phases["redis_restart"] = redis_restart(
                redis_server, svc.base_url, ledger, args.redis_down
            )
            with ledger.lock:
                acknowledged = list(ledger.decisions)
            caught_up = wait_until_logged(engine, acknowledged, timeout=120)
            phases["redis_restart"]["all_in_postgres_after_s"] = (
                None if caught_up is None else round(caught_up, 1)
            )
            phases["redis_restart"]["worker_exits"] = len(supervisor.exits) - exits
            if args.stalls:
                step(f"stalling the lease holder past its lease {args.stalls} times")
                faults.seed += 1
                faults.events = []
                phases["worker_stalls"] = faults.run(kills=0, stalls=args.stalls)
            while ledger.pairs < args.pairs and load.running:
                time.sleep(0.5)
            load.stop()
            poison.stop()
            result["load_seconds"] = round(time.monotonic() - started, 1)
            step(f"load stopped after {ledger.pairs} pairs; waiting for the log")
            checked, drained, settled = wait_for_log(
                engine, client, EXPERIMENT, ledger, timeout=180
            )
            verify = rebuild(svc.env, EXPERIMENT, verify=True)
            result["after_faults"] = {
                "ledger": ledger.summary(),
                "audit": checked.as_dict(),
                "settled": settled,
                "log_complete_after_s": round(drained, 1),
                "learned_rewards": learned_total(client, EXPERIMENT),
                "verify": verify.__dict__,
                "poison": poison.summary(),
            }
            step("wiping Redis, then banditd rebuild")
            phases["redis_loss"] = redis_loss(svc, redis_server, client, faults.planned, restart)
            step(f"{args.after_pairs} more pairs after the rebuild")
            more = LoadGenerator(
                svc.base_url, API_KEY, EXPERIMENT, ledger, threads=args.threads,
                rate=args.rate, max_pairs=ledger.pairs + args.after_pairs, seed=args.seed + 7,
            )  # fmt: skip
            more.start()
            more.join(timeout=600)
            final, drained, settled = wait_for_log(engine, client, EXPERIMENT, ledger, timeout=120)
            final_verify = rebuild(svc.env, EXPERIMENT, verify=True)
            result["final"] = {
                "ledger": ledger.summary(),
                "audit": final.as_dict(),
                "settled": settled,
                "learned_rewards": learned_total(client, EXPERIMENT),
                "verify": final_verify.__dict__,
            }
        finally:
            supervisor.stop_event.set()
            load.stop_event.set()
            poison.stop_event.set()
            result["unplanned_worker_exits"] = supervisor.exits
            svc.stop()
            engine.dispose()
            client.close()
            svc.save_logs(OUT / "logs")
    result["verdict"] = verdict(result)
    return result


def redis_loss(svc: Service, redis_server, client, planned: set[int], restart) -> dict:
    """Stop the workers, wipe Redis, ``banditd rebuild``, compare, start the workers again."""
    _stop_workers(svc, planned)
    before = live_arms(client, EXPERIMENT)
    redis_server.wipe()
    empty = live_arms(client, EXPERIMENT) == {}
    started = time.monotonic()
    restored = rebuild(svc.env, EXPERIMENT, verify=False)
    took = time.monotonic() - started
    after = live_arms(client, EXPERIMENT)
    verify = rebuild(svc.env, EXPERIMENT, verify=True)
    for proc in list(svc.workers()):
        restart(proc)
    differences = [
        abs(a - b)
        for key in set(before) | set(after)
        for a, b in zip(
            [before.get(key, (None, []))[0], *before.get(key, (0, []))[1]],
            [after.get(key, (None, []))[0], *after.get(key, (0, []))[1]],
        )
        if a is not None and b is not None
    ]
    return {
        "fault": "Redis data lost entirely (server killed, AOF deleted, started empty), "
        "workers stopped, then `banditd rebuild`",
        "empty_after_wipe": empty,
        "arms_before": len(before),
        "arms_restored": len(after),
        "rewards_before": sum(n for n, _ in before.values()),
        "rewards_restored": sum(n for n, _ in after.values()),
        "same_arms": set(before) == set(after),
        "max_difference_to_before": max(differences, default=0.0),
        "rebuild": restored.__dict__,
        "rebuild_took_s": round(took, 2),
        "verify": verify.__dict__,
    }


def verdict(result: dict) -> dict:
    """Pass/fail of every promise, and why."""
    problems = []
    for name in ("after_faults", "final"):
        part = result.get(name)
        if part is None:
            problems.append(f"{name}: not reached")
            continue
        a = part["audit"]
        if not part["settled"] or a["lost_total"] or a["duplicated_total"]:
            problems.append(
                f"{name}: lost {a['lost_total']}, duplicated {a['duplicated_total']}; "
                + "; ".join(a["examples"][:3])
            )
        if part["verify"]["returncode"] != 0:
            differs = [
                " ".join(line.split()[1:4])
                for line in part["verify"]["output"].splitlines()
                if line.endswith("DIFFERS")
            ]
            problems.append(
                f"{name}: `rebuild --verify` exit {part['verify']['returncode']}, "
                f"max difference {part['verify']['max_difference']}; differing arms "
                f"(arm, n log, n live): {differs}"
            )
        if part["ledger"]["http_500"]:
            problems.append(f"{name}: {part['ledger']['http_500']} answers 500")
        if part["ledger"]["unexpected"]:
            problems.append(f"{name}: unexpected answers {part['ledger']['unexpected'][:3]}")
    poison = result.get("after_faults", {}).get("poison")
    if poison and not poison["injected"] == poison["dead_letters"] == poison["dead_lettered_total"]:
        problems.append(
            f"poison: {poison['injected']} injected, {poison['dead_letters']} dead letters "
            f"({poison['dead_lettered_total']} ever): each should be there exactly once"
        )
    loss = result["phases"].get("redis_loss")
    if loss and (loss["rebuild"]["returncode"] or loss["verify"]["returncode"]):
        problems.append(
            f"redis_loss: rebuild exit {loss['rebuild']['returncode']}, verify exit "
            f"{loss['verify']['returncode']}"
        )
    exits = result.get("unplanned_worker_exits", [])
    if exits:
        statuses = sorted({e["status"] for e in exits})
        problems.append(
            f"{len(exits)} worker processes exited on their own (status {statuses}) between "
            f"{exits[0]['at_s']} s and {exits[-1]['at_s']} s into the run; each was restarted "
            "(see chaos/out/logs/worker.log)"
        )
    if result.get("cluster"):
        problems.extend(f"cluster run: {p}" for p in result["cluster"]["verdict"]["problems"])
    return {"ok": not problems, "problems": problems}


def step(*words) -> None:
    print(time.strftime("%H:%M:%S"), "chaos:", *words, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point; see the module docstring."""
    args = parse_args(argv)
    if args.from_json:
        result = json.loads(args.from_json.read_text())
        result["verdict"] = verdict(result)
    else:
        OUT.mkdir(parents=True, exist_ok=True)
        begun = time.monotonic()
        result = {
            "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": shlex.join(
                [".venv/bin/python", "-m", "chaos.run", *(sys.argv[1:] if argv is None else argv)]
            ),
            "machine_before": machine(),
        }
        with tempfile.TemporaryDirectory(prefix="banditd-chaos-") as tmp:
            Path(tmp).chmod(0o755)  # the postgres user must reach its cluster below it
            result.update(run_chaos(args, Path(tmp)))
            if args.cluster_kills:
                step("cluster run: 2 API instances, 3 workers, 3 masters with a replica each")
                result["cluster"] = run_cluster(
                    Path(tmp) / "cluster",
                    kills=args.cluster_kills,
                    keep_logs=OUT / "logs",
                    seed=args.seed,
                    step=lambda *words: step("cluster:", *words),
                )
                result["verdict"] = verdict(result)
        result["machine_after"] = machine()
        result["seconds"] = round(time.monotonic() - begun, 1)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        text = json.dumps(result, indent=2, default=str)
        (OUT / f"chaos-{stamp}.json").write_text(text)
        (OUT / "latest.json").write_text(text)
    args.doc.write_text(report.render(result) + cluster_markdown(result.get("cluster")))
    print(report.summary(result))
    if result.get("cluster"):
        print(cluster_summary(result["cluster"]))
    return 0 if result["verdict"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
