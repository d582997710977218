"""The holdout: a share of decisions made without the bandit, logged and learned from."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest

from app import keys
from app.config import ConfigError, config_from_text
from app.events import decode
from app.learning_settings import LearningSettings
from tests.conftest import EXPERIMENTS_TOML, choose, reward, rows
from tests.test_config import rewrite

ARMS = ["job_cleaning", "job_kitchen", "job_warehouse"]


def with_holdout(share: float, policy: str | None = None) -> str:
    """The test config with a holdout on home_feed."""
    lines = f"holdout = {share}\n" + (f'holdout_policy = "{policy}"\n' if policy else "")
    return EXPERIMENTS_TOML.replace('policy = "linucb"\n', 'policy = "linucb"\n' + lines, 1)


def logged_decisions(redis_client) -> dict[str, object]:
    """Decision id -> decoded decision event, from the stream (before the worker runs)."""
    events = (
        decode("home_feed", f, LearningSettings(redis_client))
        for _, f in redis_client.xrange(keys.stream("home_feed"))
    )
    return {e.decision_id: e for e in events if hasattr(e, "impressions")}


def test_the_holdout_share_lies_in_its_binomial_interval(client, config_file, redis_client):
    share, n = 0.2, 5000
    rewrite(config_file, with_holdout(share))
    for _ in range(n):
        assert choose(client, context={"hour": 3}).status_code == 200
    policies = [e.policy for e in logged_decisions(redis_client).values()]
    held = policies.count("holdout")
    assert set(policies) == {"holdout", "linucb"}
    margin = 3.3 * math.sqrt(n * share * (1 - share))  # 99.9% two-sided
    assert abs(held - n * share) < margin, held


def unit_groups(client, redis_client, units: int, rounds: int) -> dict[str, set[str]]:
    """unit -> the policies of its decisions, over ``rounds`` decisions per unit."""
    redis_client.delete(keys.stream("home_feed"))
    sent = {}
    for round_ in range(rounds):
        for unit in range(units):
            body = choose(client, unit_id=f"user-{unit}", context={"hour": round_}).get_json()
            sent[body["decision_id"]] = f"user-{unit}"
    groups: dict[str, set[str]] = {}
    for decision_id, event in logged_decisions(redis_client).items():
        assert event.unit_id == sent[decision_id]
        groups.setdefault(event.unit_id, set()).add(event.policy)
    return groups


def test_a_unit_stays_in_its_group(client, config_file, redis_client):
    rewrite(config_file, with_holdout(0.3))
    before = unit_groups(client, redis_client, units=80, rounds=4)
    assert all(len(g) == 1 for g in before.values()), before
    held_before = {u for u, g in before.items() if g == {"holdout"}}
    assert 10 < len(held_before) < 40, len(held_before)  # about 24 of 80

    # raising the share moves units into the holdout only, never out of it
    rewrite(config_file, with_holdout(0.5))
    after = unit_groups(client, redis_client, units=80, rounds=2)
    assert all(len(g) == 1 for g in after.values()), after
    held_after = {u for u, g in after.items() if g == {"holdout"}}
    assert held_before < held_after
    with pytest.raises(ConfigError):  # the share is capped at 0.5
        config_from_text(with_holdout(0.75), "test")


def test_random_holdout_propensities_are_exact(client, config_file, redis_client):
    rewrite(config_file, with_holdout(0.5, "random"))
    for _ in range(60):
        choose(client, k=2, context={"hour": 1})
        choose(client, k=2, candidates=["job_kitchen", "job_warehouse"], context={"hour": 1})
    holdout = [e for e in logged_decisions(redis_client).values() if e.policy == "holdout"]
    assert len(holdout) > 20
    for event in holdout:
        c = len(event.candidates) if event.candidates else len(ARMS)
        assert [i.propensity for i in event.impressions] == [1 / c, 1 / (c - 1)]
        assert [i.score for i in event.impressions] == [0.0, 0.0]
        assert not event.propensity_estimated
    firsts = {e.impressions[0].arm for e in holdout if e.candidates is None}
    assert firsts == set(ARMS), "uniform: every arm comes first sometimes"


def test_given_order_holdout_shows_the_requested_order(client, config_file, redis_client):
    rewrite(config_file, with_holdout(0.5, "given_order"))
    for _ in range(40):
        choose(client, k=2, candidates=["job_warehouse", "job_cleaning", "job_kitchen"])
        choose(client, k=2)
    holdout = [e for e in logged_decisions(redis_client).values() if e.policy == "holdout"]
    assert len(holdout) > 10
    for event in holdout:
        order = list(event.candidates) if event.candidates else ARMS  # else the config's order
        assert [i.arm for i in event.impressions] == order[:2]
        assert [i.propensity for i in event.impressions] == [1.0, 1.0]


def test_holdout_decisions_are_logged_and_learned_from(
    client, config_file, worker, redis_client, app, engine
):
    rewrite(config_file, with_holdout(0.5))
    learned = 0
    for unit in range(40):
        body = choose(client, unit_id=f"u{unit}", context={"city": "berlin"}).get_json()
        assert reward(client, body["decision_id"], body["arms"][0]["arm"], 1.0).status_code == 202
        learned += 1
    decisions_before_the_worker = list(logged_decisions(redis_client).values())
    assert {e.policy for e in decisions_before_the_worker} == {"holdout", "linucb"}
    worker.run(until_idle=True)
    services = app.extensions["banditd"]
    state = services.chooser.cache.scoring_state(services.config.current().get("home_feed"))
    assert state.n.sum() == learned
    logged = rows(engine, "SELECT unit_id, policy FROM decisions ORDER BY decided_at")
    assert {r["unit_id"] for r in logged} == {f"u{unit}" for unit in range(40)}
    streamed = {e.unit_id: e.policy for e in decisions_before_the_worker}
    assert {r["unit_id"]: r["policy"] for r in logged} == streamed


def test_without_a_holdout_the_config_version_does_not_change():
    plain = config_from_text(textwrap.dedent(EXPERIMENTS_TOML), "t").get("home_feed")
    zero = config_from_text(with_holdout(0.0), "t").get("home_feed")
    some = config_from_text(with_holdout(0.1, "given_order"), "t").get("home_feed")
    assert plain.version == zero.version and plain.holdout == 0.0
    assert some.version != plain.version and some.model_id == plain.model_id
    assert some.settings["holdout"] == 0.1 and some.settings["holdout_policy"] == "given_order"
    with pytest.raises(ConfigError, match="holdout_policy"):
        config_from_text(with_holdout(0.1, "best"), "t")
    assert np.isclose(some.holdout, 0.1)
