"""Slates: per-slot rewards, and position weights that learn attractiveness, not click rate."""

import numpy as np
import pytest

from app.config import ConfigError
from app.model_store import ModelStore
from bandits import arm_prior, update
from tests.conftest import EXPERIMENTS_TOML, choose, reward, rows
from tests.test_config import experiment, rewrite

WEIGHTED = EXPERIMENTS_TOML.replace(
    'policy = "linucb"', 'policy = "linucb"\nposition_weights = [1.0, 0.5]'
)


def test_position_weights_change_the_model_not_just_the_version():
    plain = experiment()
    weighted = experiment(position_weights=[1.0, 0.6, 0.3])
    assert weighted.model_id != plain.model_id
    assert [weighted.position_weight(p) for p in range(5)] == [1.0, 0.6, 0.3, 0.3, 0.3]
    assert plain.position_weight(3) == 1.0


@pytest.mark.parametrize("weights", [[0.0], [1.5], ["high"], "1.0"])
def test_invalid_position_weights_are_rejected(weights):
    with pytest.raises(ConfigError, match="position_weights"):
        experiment(position_weights=weights)


@pytest.fixture
def weighted(config_file):
    rewrite(config_file, WEIGHTED)
    return config_file


def test_rewards_learn_with_their_slot_weight(
    weighted, app, client, worker, clock, redis_client, engine
):
    decision = choose(client, context={"hour": 2}, k=2).get_json()
    top, second = (a["arm"] for a in decision["arms"])
    reward(client, decision["decision_id"], second, 1.0)  # clicked in slot 1 (weight 0.5)
    clock.advance(901)  # the top slot gets the default reward, with weight 1.0
    worker.run(until_idle=True)

    x = np.array([1.0, 2.0, 0.0, 0.0])
    model_id = app.extensions["banditd"].config.current().get("home_feed").model_id
    store = ModelStore(redis_client)
    for arm, value, weight in ((second, 1.0, 0.5), (top, 0.0, 1.0)):
        expected = arm_prior(4, 1.0)
        update(expected, 0, weight * x, value)
        learned, _ = store.load_learning("home_feed", model_id, arm, 4, 1.0)
        np.testing.assert_allclose(learned.A, expected.A)
        np.testing.assert_allclose(learned.theta, expected.theta)
    logged = rows(
        engine,
        "SELECT arm, position, reward, reward_kind FROM impression_rewards ORDER BY position",
    )
    assert [(r["arm"], r["position"], r["reward_kind"]) for r in logged] == [
        (top, 0, "default"),
        (second, 1, "explicit"),
    ]


FORGETFUL = EXPERIMENTS_TOML.replace('policy = "linucb"', 'policy = "linucb"\nforgetting = 0.9')


def test_forgetting_is_applied_by_the_worker_as_configured(
    config_file, app, client, worker, redis_client
):
    rewrite(config_file, FORGETFUL)
    sent = []
    for hour in (1, 2, 3):
        decision = choose(client, context={"hour": hour}, candidates=["job_kitchen"]).get_json()
        reward(client, decision["decision_id"], "job_kitchen", 1.0)
        sent.append(np.array([1.0, float(hour), 0.0, 0.0]))
    worker.run(until_idle=True)

    expected = arm_prior(4, 1.0)
    for x in sent:
        update(expected, 0, x, 1.0, discount=0.9, ridge=1.0)
    model_id = app.extensions["banditd"].config.current().get("home_feed").model_id
    learned, _ = ModelStore(redis_client).load_learning(
        "home_feed", model_id, "job_kitchen", 4, 1.0
    )
    np.testing.assert_allclose(learned.A, expected.A)
    np.testing.assert_allclose(learned.b, expected.b)
    np.testing.assert_allclose(learned.A_inv, np.linalg.inv(expected.A), rtol=1e-9)


def test_forgetting_keeps_the_model():
    assert experiment(forgetting=0.99).model_id == experiment().model_id


@pytest.mark.parametrize("value", [0.0, 0.4, 1.5, "fast"])
def test_invalid_forgetting_is_rejected(value):
    with pytest.raises(ConfigError, match="forgetting"):
        experiment(forgetting=value)
