"""The cluster run of ``make chaos``: banditd spread over boxes, with Redis masters killed.

On loopback, as separate boxes would run it: a Redis Cluster of 3 masters and
3 replicas (chaos/cluster_nodes.py), a Postgres of its own, 2 API instances
(gunicorn, 2 web workers each) and 3 ``banditd worker`` processes sharing one
experiment per shard. Answers wait for one replica (the default on a cluster
with replicas). While load runs through both API instances, the master
serving one experiment after another is SIGKILLed; its replica takes over and
the killed node starts again as a replica. Then, per experiment, the log is
audited against every acknowledgement (chaos/audit.py: lost 0, duplicated 0)
and ``banditd rebuild --verify`` compares the live parameters with the log
replayed, which is what a single node computes from the same log.

Run alone (about a minute and a half)::

    .venv/bin/python -m chaos.cluster [--kills 3] [--rate 40] [--out chaos/out/cluster.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from redis.crc import key_slot

from app import keys
from app.services import database_engine, redis_client
from chaos.audit import rebuild, wait_for_log
from chaos.cluster_nodes import LoopbackCluster
from chaos.instances import OwnPostgres
from chaos.load import Ledger, LoadGenerator, experiment_toml
from tests.conftest import API_KEY
from tests.service_processes import Service, replace_atomically, start_service

ROOT = Path(__file__).resolve().parent.parent
SHARD_SLOTS = ((0, 5460), (5461, 10922), (10923, 16383))  # as redis-cli --cluster create splits


def one_per_shard(prefix: str = "cluster") -> list[str]:
    """Experiment names whose keys fall on each of the three shards, one name each."""
    names: dict[int, str] = {}
    i = 0
    while len(names) < len(SHARD_SLOTS):
        name = f"{prefix}_{i}"
        slot = key_slot(keys.stream(name).encode())
        shard = next(s for s, (lo, hi) in enumerate(SHARD_SLOTS) if lo <= slot <= hi)
        names.setdefault(shard, name)
        i += 1
    return [names[s] for s in sorted(names)]


def run_cluster(
    workdir: Path,
    *,
    kills: int = 3,
    rate: float = 40.0,
    pause: float = 3.0,
    window: float = 2.0,
    seed: int = 20261204,
    step=print,
    keep_logs: Path | None = None,
) -> dict:
    """Run the cluster phase under ``workdir``; the results (also when a check failed).

    ``keep_logs``: where to copy each API instance's logs (``cluster-api1-gunicorn.log``
    ...) before ``workdir`` goes.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # the postgres user must reach its cluster below it
    experiments = one_per_shard()
    result: dict = {
        "settings": {
            "kills": kills,
            "rate_pairs_per_s": rate,
            "api_instances": 2,
            "workers": 3,
            "experiments": experiments,
            "replicas_to_wait": 1,
        }
    }
    config = workdir / "experiments.toml"
    replace_atomically(
        config, "\n".join(experiment_toml(e, window_seconds=window) for e in experiments)
    )
    cluster = LoopbackCluster.start(workdir / "redis")
    postgres = OwnPostgres(workdir / "postgres")
    services: list[Service] = []
    loads: list[LoadGenerator] = []
    try:
        postgres.init()
        postgres.migrate()
        step(f"cluster on {cluster.ports}, Postgres on {postgres.port}; starting 2 API instances")
        for i in (1, 2):
            logs = workdir / f"api{i}"
            logs.mkdir()
            services.append(
                start_service(config, logs, redis_url=cluster.url, database_url=postgres.url)
            )
        services[0].add_worker()  # 3 workers: one per API instance, and one more
        ledgers = {e: Ledger() for e in experiments}
        per_generator = rate / (2 * len(experiments))
        for n, e in enumerate(experiments):
            for i, svc in enumerate(services):
                loads.append(
                    LoadGenerator(
                        svc.base_url, API_KEY, e, ledgers[e],
                        threads=2, rate=per_generator, seed=seed + 10 * n + i,
                    ).start()
                )  # fmt: skip
        started = time.monotonic()
        time.sleep(pause)
        failovers = []
        for k in range(kills):
            experiment = experiments[k % len(experiments)]
            step(f"killing the master of {experiment} ({k + 1}/{kills})")
            failovers.append(
                {"experiment": experiment, **cluster.fail_over(keys.stream(experiment))}
            )
            time.sleep(pause)
        for load in loads:
            load.stop()
        result["load_seconds"] = round(time.monotonic() - started, 1)
        result["failovers"] = failovers
        step("load stopped; auditing the log of each experiment")
        engine = database_engine(postgres.url)
        client = redis_client(cluster.url)
        result["experiments"] = {}
        for e in experiments:
            checked, drained, settled = wait_for_log(engine, client, e, ledgers[e], timeout=120)
            verify = rebuild(services[0].env, e, verify=True)
            result["experiments"][e] = {
                "ledger": ledgers[e].summary(),
                "audit": checked.as_dict(),
                "settled": settled,
                "log_complete_after_s": round(drained, 1),
                "verify": verify.__dict__,
            }
        engine.dispose()
        client.close()
    finally:
        for load in loads:
            load.stop_event.set()
        for i, svc in enumerate(services, 1):
            svc.stop()
            if keep_logs is not None:
                svc.save_logs(keep_logs, prefix=f"cluster-api{i}-")
        cluster.stop()
        postgres.close()
    result["verdict"] = verdict(result)
    return result


def verdict(result: dict) -> dict:
    """Pass/fail: per experiment nothing lost or duplicated, verify exit 0, no 500s."""
    problems = []
    if len(result.get("failovers", [])) < result["settings"]["kills"]:
        problems.append("not every planned master kill happened")
    for e, part in result.get("experiments", {}).items():
        a = part["audit"]
        if not part["settled"] or a["lost_total"] or a["duplicated_total"]:
            problems.append(
                f"{e}: lost {a['lost_total']}, duplicated {a['duplicated_total']}; "
                + "; ".join(a["examples"][:3])
            )
        if part["verify"]["returncode"] != 0:
            problems.append(f"{e}: rebuild --verify exit {part['verify']['returncode']}")
        if part["ledger"]["http_500"] or part["ledger"]["unexpected"]:
            problems.append(f"{e}: unexpected answers {part['ledger']['unexpected'][:3]}")
    if not result.get("experiments"):
        problems.append("the audit was not reached")
    return {"ok": not problems, "problems": problems}


def summary(result: dict) -> str:
    """A few lines for the terminal."""
    lines = [f"cluster run: {'ok' if result['verdict']['ok'] else 'FAILED'}"]
    for f in result.get("failovers", []):
        lines.append(
            f"  killed master {f['killed_master']} of {f['experiment']}: replica {f['promoted']}"
            f" serving after {f['failover_s']} s, old master a replica after"
            f" {f['rejoined_as_replica_s']} s"
        )
    for e, part in result.get("experiments", {}).items():
        ledger, a = part["ledger"], part["audit"]
        lines.append(
            f"  {e}: {ledger['decisions_accepted']} decisions and {ledger['rewards_accepted']}"
            f" rewards acknowledged, {ledger['http_503']} answers 503; lost {a['lost_total']},"
            f" duplicated {a['duplicated_total']}; rebuild --verify exit"
            f" {part['verify']['returncode']} (max difference {part['verify']['max_difference']})"
        )
    lines.extend(f"  problem: {p}" for p in result["verdict"]["problems"])
    return "\n".join(lines)


def markdown(result: dict | None) -> str:
    """The cluster run as a section of docs/RELIABILITY.md ("" when there was none)."""
    if not result:
        return ""
    s = result["settings"]
    out = [
        "",
        "## Redis Cluster: masters killed under load",
        "",
        f"{s['api_instances']} API instances (gunicorn, 2 web workers each), {s['workers']}"
        " `banditd worker` processes, a Redis Cluster of 3 masters with a replica each on"
        f" loopback, answers waiting for {s['replicas_to_wait']} replica; one experiment per"
        f" shard ({', '.join(s['experiments'])}), {s['rate_pairs_per_s']:g} choose+reward pairs/s"
        f" through both instances for {result.get('load_seconds', '?')} s; {s['kills']} masters"
        " SIGKILLed one after another (chaos/cluster.py). Verdict:"
        f" **{'passed' if result['verdict']['ok'] else 'FAILED'}**.",
        "",
        "| killed master | of | replica serving after | old master a replica again after |",
        "|---|---|---|---|",
    ]
    for f in result.get("failovers", []):
        out.append(
            f"| {f['killed_master']} | {f['experiment']} | {f['failover_s']} s"
            f" | {f['rejoined_as_replica_s']} s |"
        )
    out += [
        "",
        "| experiment | decisions acked | rewards acked | 503 | lost | duplicated"
        " | `rebuild --verify` |",
        "|---|---|---|---|---|---|---|",
    ]
    for e, part in result.get("experiments", {}).items():
        ledger, a, v = part["ledger"], part["audit"], part["verify"]
        out.append(
            f"| {e} | {ledger['decisions_accepted']} | {ledger['rewards_accepted']}"
            f" | {ledger['http_503']} | {a['lost_total']} | {a['duplicated_total']}"
            f" | exit {v['returncode']}, max difference {v['max_difference']} |"
        )
    out += [f"- problem: {p}" for p in result["verdict"]["problems"]]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m chaos.cluster", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--kills", type=int, default=3, help="masters SIGKILLed, one at a time")
    parser.add_argument("--rate", type=float, default=40.0, help="pairs/s over all experiments")
    parser.add_argument("--out", type=Path, default=ROOT / "chaos" / "out" / "cluster.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="banditd-cluster-") as tmp:
        Path(tmp).chmod(0o755)
        result = run_cluster(
            Path(tmp) / "run",
            kills=args.kills,
            rate=args.rate,
            step=lambda *w: print(time.strftime("%H:%M:%S"), "chaos cluster:", *w, flush=True),
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(summary(result))
    return 0 if result["verdict"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
