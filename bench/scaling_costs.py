"""What one event and one arm cost in Redis and Postgres, for docs/SCALING.md.

Runs against a Redis db and a Postgres database of its own (both emptied):

1. records ``--decisions`` decisions (one slot shown each) and explicit
   rewards for half of them through the API's own Lua scripts
   (:mod:`bench.seed`), then drains them with an in-process ``Worker``;
   reports Redis CPU (``INFO cpu`` of the server, user + sys) per event while
   recording and while the worker drained, Redis memory per decision waiting
   for its reward window, and Postgres bytes per decision, impression and
   reward (``pg_total_relation_size`` of every partition: heap, TOAST and
   indexes) with the mean per event;
2. saves ``--arms`` arms at d = 8, 32 and 64 (:func:`bench.seed.seed_arms`)
   and reports Redis memory per arm (``used_memory`` before and after).

    .venv/bin/python -m bench.scaling_costs --redis-url redis://localhost:6379/9 \\
        --database-url postgresql://banditd:banditd@localhost:5432/banditd_e4_scratch

Timings are CPU seconds of the Redis server, which the box's other load
moves less than wall time; memory and bytes do not depend on it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import threading
import time
import types

import numpy as np
import redis
import sqlalchemy

from app.cli import HOUSEKEEPING_SECONDS, migrate
from app.choosing import new_decision_id
from app.config import config_from_text, load_config
from app.event_log import EventLog, encode
from app.events import DecisionEvent, Impression, RewardEvent
from app.retention.keeper import apply_retention
from app.services import build_services, database_engine
from app.settings import Settings
from app.worker import Worker
from bench import seed
from bench.configs import MAIN_CONFIG, context

LOG_TABLES = ("decisions", "impressions", "rewards")
UNPARTITIONED_COMMIT = "ea4820fbc2d45704eb13689fa4bf718844d22669"  # the last before 0005
ARMS_TOML = """
[experiments.arms_d{d}]
policy = "linucb"
arms = [{arms}]
[experiments.arms_d{d}.features]
numeric = [{numeric}]
"""


def redis_cpu(client: redis.Redis) -> float:
    """The Redis server's CPU seconds so far (user + sys, all its threads)."""
    cpu = client.info("cpu")
    return cpu["used_cpu_user"] + cpu["used_cpu_sys"]


def table_bytes(engine, table: str) -> tuple[int, int]:
    """Bytes on disk of every partition of ``table`` (heap, TOAST, indexes), and its rows."""
    with engine.connect() as conn:
        size = conn.execute(
            sqlalchemy.text(
                "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits "
                "WHERE inhparent = CAST(:t AS regclass)"
            ),
            {"t": table},
        ).scalar()
        count = conn.execute(sqlalchemy.text(f"SELECT count(*) FROM {table}")).scalar()
    return int(size), int(count)


def event_costs(client: redis.Redis, engine, settings: Settings, decisions: int) -> dict:
    """Record, drain and measure ``decisions`` decisions and rewards for half of them."""
    exp = load_config(str(MAIN_CONFIG)).get("bench_linucb")
    rng = np.random.default_rng(15)
    seed.seed_arms(client, exp, rng)
    arms = [exp.arms[i % len(exp.arms)] for i in range(decisions)]
    memory0, cpu0 = client.info("memory")["used_memory"], redis_cpu(client)
    ids = seed.record_decisions(client, exp, arms, rng)
    memory1, cpu1 = client.info("memory")["used_memory"], redis_cpu(client)
    rewarded = decisions // 2
    accepted = seed.record_rewards(client, exp, list(zip(ids, arms))[:rewarded], rng)
    cpu2 = redis_cpu(client)
    worker = Worker.from_services(build_services(settings), block_ms=10)
    start = time.perf_counter()
    try:
        processed = worker.run(until_idle=True)
    finally:
        worker.close()
    drain_seconds = time.perf_counter() - start
    cpu3 = redis_cpu(client)
    memory3 = client.info("memory")["used_memory"]
    sizes = {t: table_bytes(engine, t) for t in LOG_TABLES}
    events = decisions + accepted
    log_bytes = sum(size for size, _ in sizes.values())
    return {
        "decisions": decisions,
        "rewards": accepted,
        "stream_entries_processed": processed,
        "redis_cpu_us_per_decision_recorded": round((cpu1 - cpu0) / decisions * 1e6, 1),
        "redis_cpu_us_per_reward_recorded": round((cpu2 - cpu1) / max(accepted, 1) * 1e6, 1),
        "redis_cpu_us_per_event_drained": round((cpu3 - cpu2) / events * 1e6, 1),
        "drain_seconds": round(drain_seconds, 2),
        "redis_bytes_per_decision_recorded": round((memory1 - memory0) / decisions),
        "redis_bytes_per_decision_after_drain": round((memory3 - memory0) / decisions),
        "postgres_bytes_per_row": {
            t: round(size / count) if count else None for t, (size, count) in sizes.items()
        },
        "postgres_rows": {t: count for t, (_, count) in sizes.items()},
        "postgres_bytes_per_event": round(log_bytes / events),
    }


def arm_costs(client: redis.Redis, arms: int) -> dict:
    """Redis memory per arm at d = 8, 32 and 64, ``arms`` arms each."""
    out = {}
    for d in (8, 32, 64):
        toml = ARMS_TOML.format(
            d=d,
            arms=", ".join(f'"a{i}"' for i in range(arms)),
            numeric=", ".join(f'"f{i}"' for i in range(d - 1)),
        )
        exp = config_from_text(toml, "arms").get(f"arms_d{d}")
        before = client.info("memory")["used_memory"]
        seed.seed_arms(client, exp, np.random.default_rng(d))
        out[f"d={d}"] = round((client.info("memory")["used_memory"] - before) / arms)
    return out


def previous_release_writer(commit: str):
    """``app/event_log.py`` as of ``commit`` (git), as a module: the unpartitioned log's writer."""
    source = subprocess.run(
        ["git", "show", f"{commit}:app/event_log.py"], check=True, capture_output=True, text=True
    ).stdout
    module = types.ModuleType("event_log_before_partitioning")
    exec(compile(source, f"{commit[:7]}:app/event_log.py", "exec"), module.__dict__)
    return module


def log_batches(batches: int, start_ms: int, spacing_ms: int = 1) -> list[list[tuple]]:
    """Stream batches of 1,000 decisions (one slot shown) and 1,000 explicit rewards of them."""
    exp = load_config(str(MAIN_CONFIG)).get("bench_linucb")
    rng = np.random.default_rng(3)
    contexts = [context(exp, rng) for _ in range(64)]
    encoded = []
    seq = 0
    for b in range(batches):
        entries = []
        for i in range(1000):
            ms = start_ms + (b * 1000 + i) * spacing_ms
            decision_id = new_decision_id(exp.name, ms)
            arm = exp.arms[i % len(exp.arms)]
            c = contexts[i % 64]
            entries.append(
                (
                    f"{ms}-0".encode(),
                    DecisionEvent(
                        decision_id=decision_id,
                        experiment=exp.name,
                        decided_ms=ms,
                        config_version=exp.version,
                        policy=exp.policy,
                        model_id=exp.model_id,
                        request_id=None,
                        context=c,
                        features=exp.features.encode(c),
                        impressions=(Impression(arm, 0, 0.5, 0.95),),
                        propensity_estimated=False,
                    ),
                )
            )
            seq += 1
            entries.append(
                (
                    f"{ms}-{seq}".encode(),
                    RewardEvent(
                        decision_id=decision_id,
                        experiment=exp.name,
                        arm=arm,
                        reward=1.0,
                        kind="explicit",
                        received_ms=ms + 10,
                        features=np.zeros(1),
                        model_id=exp.model_id,
                        ridge=1.0,
                        reward_min=0.0,
                        reward_max=1.0,
                    ),
                )
            )
        encoded.append(entries)
    return encoded


def log_write_ab(partitioned_url: str, unpartitioned_url: str, batches: int, rounds: int) -> dict:
    """Events/s of ``EventLog.write_encoded``: the partitioned log against the one before it.

    The same batches (1,000 decisions of one slot and 1,000 rewards of them, like
    the worker's under a backlog) are written into a database at the head
    revision with the current writer, and into one at revision 0004 with the
    writer of the commit before migration 0005, in alternating rounds.
    """
    encoded = log_batches(batches, int(time.time() * 1000))
    old = previous_release_writer(UNPARTITIONED_COMMIT)
    targets = {
        "partitioned (head)": (partitioned_url, "head", EventLog, encode),
        "unpartitioned (0004)": (unpartitioned_url, "0004", old.EventLog, old.encode),
    }
    rates: dict[str, list[float]] = {name: [] for name in targets}
    for url, revision, _, _ in targets.values():
        migrate(Settings(database_url=url), revision)
    for _ in range(rounds):
        for name, (url, _, writer, encoder) in targets.items():
            engine = database_engine(url)
            with engine.begin() as conn:
                conn.execute(sqlalchemy.text("TRUNCATE decisions, impressions, rewards"))
            log = writer(engine)
            data = [encoder(entries) for entries in encoded]
            start = time.perf_counter()
            for batch in data:
                log.write_encoded(batch)
            rates[name].append(round(batches * 2000 / (time.perf_counter() - start)))
            engine.dispose()
    return rates


def migration_and_drop(url: str, per_day: int, days: int) -> dict:
    """Seconds to migrate a log of the previous release to 0005, and to drop a day of it.

    ``days`` days of ``per_day`` decisions and as many rewards are written at
    revision 0004 by the previous release's writer; then ``alembic upgrade
    head`` is timed, and then retention (1 day) dropping the oldest day.
    """
    migrate(Settings(database_url=url), "0004")
    engine = database_engine(url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("TRUNCATE decisions, impressions, rewards"))
    old = previous_release_writer(UNPARTITIONED_COMMIT).EventLog(engine)
    now = time.time()
    first = int((now // 86_400 - days) * 86_400_000) + 3_600_000
    for day in range(days):
        for batch in log_batches(per_day // 1000, first + day * 86_400_000, spacing_ms=50):
            old.write(batch)
    rows = per_day * days
    sizes = {t: table_bytes_plain(engine, t) for t in LOG_TABLES}
    engine.dispose()
    start = time.perf_counter()
    migrate(Settings(database_url=url), "head")
    migrated = time.perf_counter() - start
    engine = database_engine(url)
    with engine.begin() as conn:  # a snapshot after every reward: the oldest day may go
        conn.execute(
            sqlalchemy.text(
                "INSERT INTO model_snapshots SELECT 'bench_linucb', max(stream_ms) + 1, 0, 'm', "
                "'arm00', now(), 1, 1, 0, '\\x00', '\\x00', '{0}', '{0}' FROM rewards"
            )
        )
    config = load_config(str(MAIN_CONFIG))
    start = time.perf_counter()
    done = apply_retention(engine, config, float(days - 1), dt.datetime.now(dt.timezone.utc))
    dropped = time.perf_counter() - start
    engine.dispose()
    return {
        "decisions": rows,
        "rewards": rows,
        "bytes_before": sizes,
        "upgrade_seconds": round(migrated, 1),
        "retention_seconds": round(dropped, 2),
        "retention": done.describe(),
    }


def table_bytes_plain(engine, table: str) -> int:
    """Bytes on disk of an unpartitioned ``table`` (heap, TOAST, indexes)."""
    with engine.connect() as conn:
        return conn.execute(
            sqlalchemy.text("SELECT pg_total_relation_size(CAST(:t AS regclass))"), {"t": table}
        ).scalar()


def many_experiments(settings: Settings, client: redis.Redis, count: int, tmp: str) -> dict:
    """Seconds of a worker pass over ``count`` experiments with nothing to read, and its Redis
    CPU; then what a running worker costs while all of them are idle.

    The first pass takes every lease and creates every stream's group; the
    next ones are a full pass (``Worker.step``: leases renewed, windows
    closed, each stream read). A running worker (``Worker.run``, as ``banditd
    worker`` runs it) does that only every housekeeping interval and reads
    only streams with news in between.
    """
    toml = "".join(
        f'[experiments.e{i:04d}]\npolicy = "linucb"\narms = ["a", "b"]\n' for i in range(count)
    )
    with open(tmp, "w") as out:
        out.write(toml)
    client.flushdb()
    settings = Settings(
        config_path=tmp, redis_url=settings.redis_url, database_url=settings.database_url
    )
    worker = Worker.from_services(build_services(settings), block_ms=10)
    try:
        start = time.perf_counter()
        worker.step()
        first = time.perf_counter() - start
        passes = []
        cpu0 = redis_cpu(client)
        for _ in range(5):
            start = time.perf_counter()
            worker.step()
            passes.append(round(time.perf_counter() - start, 3))
        cpu = (redis_cpu(client) - cpu0) / 5
    finally:
        worker.close()
    running = idle_running_worker(settings, client)
    client.flushdb()
    return {
        "experiments": count,
        "first_pass_seconds": round(first, 2),
        "idle_pass_seconds": passes,
        "redis_cpu_seconds_per_idle_pass": round(cpu, 3),
        **running,
    }


def idle_running_worker(settings: Settings, client: redis.Redis, seconds: float = 10.0) -> dict:
    """Share of a core that a running worker and Redis use while every stream is idle."""
    worker = Worker.from_services(
        build_services(settings),
        linger_ms=settings.worker_linger_ms,
        housekeeping_seconds=HOUSEKEEPING_SECONDS,
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        time.sleep(4.0)  # every lease taken, every group made
        cpu0, redis0 = time.process_time(), redis_cpu(client)
        time.sleep(seconds)
        worker_cpu, redis_cpu_used = time.process_time() - cpu0, redis_cpu(client) - redis0
    finally:
        worker.request_stop()
        thread.join(30)
        worker.close()
    return {
        "running_worker_core_share": round(worker_cpu / seconds, 3),
        "running_worker_redis_core_share": round(redis_cpu_used / seconds, 3),
    }


def main() -> None:
    """Measure and print the costs as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--arms", type=int, default=2_000)
    parser.add_argument(
        "--log-write-ab",
        metavar="DATABASE_URL",
        help="instead: write the same batches into --database-url (head) and this database "
        "(migrated to 0004, emptied) in alternating rounds and print events/s of each",
    )
    parser.add_argument(
        "--migration",
        type=int,
        metavar="PER_DAY",
        help="instead: time migration 0005 of --database-url holding 3 days of PER_DAY "
        "decisions and rewards written by the previous release, then a retention drop",
    )
    parser.add_argument(
        "--experiments",
        type=int,
        metavar="N",
        help="instead: time an idle worker's pass over N experiments",
    )
    args = parser.parse_args()
    if args.experiments:
        settings = Settings(redis_url=args.redis_url, database_url=args.database_url)
        client = redis.Redis.from_url(args.redis_url)
        tmp = "/tmp/scaling_costs_experiments.toml"
        print(json.dumps(many_experiments(settings, client, args.experiments, tmp), indent=2))
        return
    if args.migration:
        print(json.dumps(migration_and_drop(args.database_url, args.migration, 3), indent=2))
        return
    if args.log_write_ab:
        print(json.dumps(log_write_ab(args.database_url, args.log_write_ab, 20, 3), indent=2))
        return
    settings = Settings(
        config_path=str(MAIN_CONFIG), redis_url=args.redis_url, database_url=args.database_url
    )
    migrate(settings)
    client = redis.Redis.from_url(args.redis_url)
    engine = database_engine(args.database_url)
    client.flushdb()
    seed.reset(client, engine)
    result = {"events": event_costs(client, engine, settings, args.decisions)}
    client.flushdb()
    result["redis_bytes_per_arm"] = arm_costs(client, args.arms)
    client.flushdb()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
