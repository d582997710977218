"""``banditd report`` gives what the views and the raw log say, in Markdown and JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from app.analytics.views import refresh_analyst_views
from app.cli import main
from tests.conftest import EXPERIMENTS_TOML, choose, reward, rows
from tests.test_config import rewrite

HOLDOUT_TOML = EXPERIMENTS_TOML.replace(
    'policy = "linucb"\n', 'policy = "linucb"\nholdout = 0.3\n', 1
)


def play(client, n: int, rng: np.random.Generator, start: int) -> None:
    """``n`` decisions, each rewarded: job_kitchen pays more often."""
    for i in range(n):
        body = choose(client, unit_id=f"u{start + i}", context={"hour": int(rng.integers(24))})
        arm = body.get_json()["arms"][0]["arm"]
        value = float(rng.random() < (0.6 if arm == "job_kitchen" else 0.2))
        assert reward(client, body.get_json()["decision_id"], arm, value).status_code == 202


@pytest.fixture
def logged(client, worker, config_file, engine, settings, monkeypatch):
    rng = np.random.default_rng(4)
    rewrite(config_file, HOLDOUT_TOML)
    play(client, 240, rng, 0)
    worker.run(until_idle=True)
    rewrite(config_file, HOLDOUT_TOML.replace("alpha = 1.0", "alpha = 0.2"))
    play(client, 160, rng, 1000)
    worker.run(until_idle=True)
    refresh_analyst_views(engine)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("REDIS_URL", settings.redis_url)


def welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    lift = a.mean() - b.mean()
    half = 1.959963984540054 * math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    return lift, lift - half, lift + half


def test_report_json_equals_the_raw_log(logged, engine, capsys):
    assert main(["report", "--experiment", "home_feed", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)

    raw = rows(
        engine,
        "SELECT d.policy, d.config_version, i.arm, r.reward FROM impressions i "
        "JOIN decisions d USING (decision_id) "
        "JOIN rewards r ON r.decision_id = i.decision_id AND r.arm = i.arm",
    )
    held = np.array([r["reward"] for r in raw if r["policy"] == "holdout"])
    bandit = np.array([r["reward"] for r in raw if r["policy"] != "holdout"])
    assert report["decisions"] == {"policy": bandit.size, "holdout": held.size}
    assert bandit.size + held.size == 400
    lift, low, high = welch(bandit, held)
    assert report["lift"]["lift"] == pytest.approx(lift)
    assert report["lift"]["ci_low"] == pytest.approx(low)
    assert report["lift"]["ci_high"] == pytest.approx(high)
    assert report["lift"]["lift_relative"] == pytest.approx(lift / held.mean())

    for arm in report["arms"]:
        group = [
            r["reward"]
            for r in raw
            if r["arm"] == arm["arm"] and (r["policy"] == "holdout") == (arm["group"] == "holdout")
        ]
        assert arm["impressions"] == arm["rewarded"] == len(group)
        assert arm["mean_reward"] == pytest.approx(np.mean(group))

    [change] = report["changes"]  # the version before it was the first: not a change
    assert "alpha" in change["changed"], change["changed"]
    after = [r for r in raw if r["config_version"] == change["config_version"]]
    after_top = [r["reward"] for r in after]
    assert change["reward_after"]["n"] == len(after_top)
    assert change["reward_after"]["mean"] == pytest.approx(np.mean(after_top))
    before = [r["reward"] for r in raw if r["config_version"] != change["config_version"]]
    assert change["reward_before"]["n"] == len(before)


def test_report_markdown_and_errors(logged, capsys):
    assert main(["report", "--experiment", "home_feed"]) == 0
    text = capsys.readouterr().out
    assert "## Lift over the holdout" in text and "| job_kitchen |" in text
    assert "Config changes in the period" in text
    assert main(["report", "--experiment", "nope"]) == 1
    assert main(["report", "--experiment", "home_feed", "--since", "yesterday"]) == 2
