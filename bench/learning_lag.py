"""What learning asynchronously through the service costs in reward (issue 11's async ÷ sync).

gunicorn (gunicorn.conf.py, 2 workers, as `make run`) and ``banditd worker``
serve one fresh experiment per environment, policy and seed, the tables
``banditd simulate --print-config`` writes. The simulation's episodes are played
through ``POST /choose`` and ``POST /reward`` while the worker learns
asynchronously, and in process by the same policy learning after every round
(``banditd simulate --url``'s comparison, :mod:`app.simulate_service`). The
target is the mean expected reward through the service over the one in process,
per seed, at least 0.98 on ``digits`` and ``synthetic``.
"""

from __future__ import annotations

from app.simulate_service import (
    DEFAULT_HTTP_POLICIES,
    HttpTransport,
    PolicySpec,
    compare_through_service,
    experiments_toml,
)
from bandits.simulation import ENVIRONMENTS
from bench import seed
from bench.stack import Gunicorn, UpdateWorker

ENVS = ("digits", "synthetic")
API_WORKERS = 2
PREFIX = "lag_"
GOAL = 0.98


def phase(b) -> dict:
    """Async ÷ sync mean reward per environment and policy (``DEFAULT_HTTP_POLICIES``)."""
    seed.reset(b.client, b.engine)
    envs = [ENVIRONMENTS[name]() for name in ENVS]
    specs = [PolicySpec.parse(p) for p in DEFAULT_HTTP_POLICIES]
    seeds = tuple(range(b.lag_seeds))
    rounds = {env.name: b.lag_rounds for env in envs}
    config = b.out / "learning-lag.toml"
    config.write_text(experiments_toml(PREFIX, envs, specs, seeds))
    env = {**b.env, "BANDITD_CONFIG": str(config)}
    with (
        UpdateWorker(env, b.out) as worker,
        Gunicorn("wsgi:app", API_WORKERS, env, b.out, config=b.gunicorn_config) as api,
    ):
        transport = HttpTransport(f"http://127.0.0.1:{api.port}", b.api_key)
        try:
            pairs = compare_through_service(transport, envs, specs, rounds, seeds, PREFIX)
        finally:
            transport.close()
        if not worker.alive():
            raise RuntimeError(f"the worker stopped; see {worker.log_path}")
    rows = []
    for sync, remote in pairs:
        per_seed = remote.mean_reward / sync.mean_reward
        rows.append(
            {
                "environment": sync.environment,
                "policy": sync.agent.replace(" in-process, sync", ""),
                "sync": float(sync.mean_reward.mean()),
                "async": float(remote.mean_reward.mean()),
                "ratio_per_seed": [round(float(r), 4) for r in per_seed],
                "ratio_mean": round(float(per_seed.mean()), 4),
                "ratio_sd": round(float(per_seed.std(ddof=1)), 4) if per_seed.size > 1 else 0.0,
                "http_rounds_per_s": round(remote.rounds_per_second),
            }
        )
    return {
        "api_workers": API_WORKERS,
        "seeds": len(seeds),
        "rounds": b.lag_rounds,
        "rows": rows,
        "retries": transport.retries,
    }


def targets(lag: dict | None, target) -> list[dict]:
    """The async ÷ sync target per environment and policy (``target`` makes a row)."""
    if not lag:
        return []
    return [
        target(
            f"async over HTTP ÷ in-process sync, {r['policy']} on {r['environment']} "
            f"(mean of {lag['seeds']} seeds × {lag['rounds']:,} rounds), issue 11",
            r["ratio_mean"],
            GOAL,
            ">=",
            "x",
        )
        for r in lag["rows"]
    ]


def table(lag: dict) -> tuple[str, list[str], list[list[str]]]:
    """The comparison as a report table."""
    return (
        f"Learning through the service (async, HTTP, {lag['api_workers']} API processes and the "
        f"worker) against in process (sync): {lag['seeds']} seeds × {lag['rounds']:,} rounds, "
        "mean expected reward per round",
        ["environment", "policy", "sync", "async", "ratio per seed", "mean ± sd", "HTTP rounds/s"],
        [
            [
                r["environment"],
                r["policy"],
                f"{r['sync']:.4f}",
                f"{r['async']:.4f}",
                " / ".join(f"{v:.3f}" for v in r["ratio_per_seed"]),
                f"{r['ratio_mean']:.3f} ± {r['ratio_sd']:.3f}",
                f"{r['http_rounds_per_s']:,}",
            ]
            for r in lag["rows"]
        ],
    )
