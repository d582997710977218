"""Through HTTP, the bandit beats a random holdout, and lift_daily's interval says so.

The synthetic linear environment (bandits.simulation) is played through a real
gunicorn and ``banditd worker`` with ``holdout = 0.1``; the lift the view
reports is then checked against a bootstrap of the same outcomes.
"""

from __future__ import annotations

import concurrent.futures
import json

import numpy as np
import pytest
import requests

from app.analytics.views import refresh_analyst_views
from bandits.simulation.environments import SyntheticLinear
from tests.conftest import poll, rows
from tests.service_processes import running_service

EXPERIMENT = "lift"
ROUNDS = 6000
THREADS = 4
SEED = 20261204
ENV = SyntheticLinear(n_arms=5, dim=3, low=0.05, base_spread=0.4, context_spread=0.3)
CONFIG = f"""
[experiments.{EXPERIMENT}]
policy = "linucb"
alpha = 0.3
holdout = 0.1
holdout_policy = "random"
arms = [{", ".join(f'"arm{a}"' for a in range(ENV.n_arms))}]
reward = {{ default = 0.0, window_seconds = 3600, min = 0.0, max = 1.0 }}
features = {{ numeric = [{", ".join(f'"f{i}"' for i in range(ENV.dim))}] }}
"""


def play(base_url: str, episode, rounds: range) -> int:
    """Play ``rounds`` of ``episode`` through the service; returns how many were rewarded."""
    session = requests.Session()
    session.headers["Authorization"] = "Bearer test-key"
    for t in rounds:
        body = {
            "experiment": EXPERIMENT,
            "context": {f"f{i}": float(v) for i, v in enumerate(episode.features[t])},
            "unit_id": f"user-{t}",
        }
        answer = session.post(f"{base_url}/choose", json=body, timeout=10).json()
        arm = answer["arms"][0]["arm"]
        value = float(episode.rewards[t, int(arm[3:])])
        reward = {"decision_id": answer["decision_id"], "arm": arm, "reward": value}
        assert session.post(f"{base_url}/reward", json=reward, timeout=10).status_code == 202
    session.close()
    return len(rounds)


def bootstrap_lift(policy: np.ndarray, holdout: np.ndarray, draws: int, rng) -> np.ndarray:
    """Lift (mean difference) of ``draws`` bootstrap resamples of both groups."""
    p = rng.choice(policy, size=(draws, policy.size)).mean(axis=1)
    h = rng.choice(holdout, size=(draws, holdout.size)).mean(axis=1)
    return p - h


@pytest.mark.e2e
def test_the_bandit_beats_a_random_holdout_and_the_view_agrees_with_a_bootstrap(
    tmp_path, engine, redis_client, request
):
    episode = ENV.episode(ROUNDS, np.random.default_rng(SEED))
    with running_service(CONFIG, tmp_path, request) as svc:
        chunks = [range(i, ROUNDS, THREADS) for i in range(THREADS)]
        with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
            assert sum(pool.map(lambda r: play(svc.base_url, episode, r), chunks)) == ROUNDS

        def all_final():
            count = rows(
                engine,
                "SELECT count(*) AS n FROM outcomes WHERE experiment = :e AND reward IS NOT NULL",
                e=EXPERIMENT,
            )
            return count[0]["n"] == ROUNDS

        poll(all_final, timeout=60, interval=0.2)

    refresh_analyst_views(engine)
    outcomes = rows(
        engine,
        "SELECT holdout, reward FROM outcomes WHERE experiment = :e AND position = 0",
        e=EXPERIMENT,
    )
    policy = np.array([r["reward"] for r in outcomes if not r["holdout"]])
    holdout = np.array([r["reward"] for r in outcomes if r["holdout"]])
    assert abs(holdout.size / ROUNDS - 0.1) < 0.02, holdout.size
    days = rows(engine, "SELECT * FROM lift_daily WHERE experiment = :e", e=EXPERIMENT)
    assert len(days) == 1, days  # one day's run (it could straddle midnight UTC: then rerun)
    view = days[0]
    assert view["policy_mean"] == pytest.approx(policy.mean())
    assert view["holdout_mean"] == pytest.approx(holdout.mean())
    assert view["lift"] > 0 and view["ci_low"] > 0, json.dumps(view, default=str)

    lifts = bootstrap_lift(policy, holdout, 4000, np.random.default_rng(SEED))
    low, high = np.percentile(lifts, [2.5, 97.5])
    width = high - low
    print(
        f"\nlift_daily: policy {view['policy_mean']:.4f} (n {policy.size}), holdout "
        f"{view['holdout_mean']:.4f} (n {holdout.size}), lift {view['lift']:.4f} "
        f"[{view['ci_low']:.4f}, {view['ci_high']:.4f}]; bootstrap [{low:.4f}, {high:.4f}]"
    )
    # the normal interval of the view and the bootstrap's agree within a tenth of their width
    assert view["ci_low"] == pytest.approx(low, abs=0.1 * width)
    assert view["ci_high"] == pytest.approx(high, abs=0.1 * width)
