"""update_many learns exactly what update learns one reward at a time, bit for bit."""

import numpy as np
import pytest

from app.events import RewardEvent
from app.learner import learn_reward, learn_rewards
from bandits import LearningState, arm_prior, prior, update
from bandits.batch_learning import update_many

FIELDS = ("A_inv", "theta", "n", "successes", "failures", "A", "b")


def _rewards(rng, m, n_arms, dim, *, skew=1.0, forgetting=False):
    weights = rng.random(n_arms) ** skew
    arms = rng.choice(n_arms, size=m, p=weights / weights.sum())
    X = rng.normal(size=(m, dim)) * rng.choice([0.0, 1.0, 30.0], size=(m, 1))
    rewards = rng.choice([0.0, 1.0, -2.5, 7.25], size=m)
    successes = rng.random(m)
    discounts = rng.choice([1.0, 0.99, 0.5], size=m) if forgetting else np.ones(m)
    ridges = rng.choice([1.0, 0.3, 4.0], size=m)
    return arms, X, rewards, successes, discounts, ridges


def _one_at_a_time(state, arms, X, rewards, successes, discounts, ridges):
    for i in range(len(arms)):
        update(
            state,
            int(arms[i]),
            X[i],
            float(rewards[i]),
            success=float(successes[i]),
            discount=float(discounts[i]),
            ridge=float(ridges[i]),
        )


def _assert_identical(a, b):
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


@pytest.mark.parametrize("dim", [1, 5, 32])
@pytest.mark.parametrize("forgetting", [False, True])
@pytest.mark.parametrize("skew", [0.0, 1.0, 6.0])  # 6: a few arms take most rewards
def test_a_batch_equals_its_rewards_one_at_a_time(dim, forgetting, skew):
    rng = np.random.default_rng(dim * 100 + forgetting * 10 + int(skew))
    n_arms = 40
    batched, single = prior(n_arms, dim), prior(n_arms, dim)
    for _ in range(4):  # later batches start from learned, discounted states
        rewards = _rewards(rng, 600, n_arms, dim, skew=skew, forgetting=forgetting)
        update_many(
            batched,
            rewards[0],
            rewards[1],
            rewards[2],
            successes=rewards[3],
            discounts=rewards[4],
            ridges=rewards[5],
        )
        _one_at_a_time(single, *rewards)
        _assert_identical(batched, single)
    assert batched.n.sum() == 2400


def test_default_successes_and_discounts_are_updates_defaults():
    rng = np.random.default_rng(7)
    arms, X, rewards, *_ = _rewards(rng, 300, 10, 6)
    batched, single = prior(10, 6), prior(10, 6)
    update_many(batched, arms, X, rewards)
    for i in range(len(arms)):
        update(single, int(arms[i]), X[i], float(rewards[i]))
    _assert_identical(batched, single)


def test_an_empty_batch_changes_nothing():
    state = prior(3, 2)
    update_many(state, np.array([], dtype=int), np.zeros((0, 2)), np.zeros(0))
    _assert_identical(state, prior(3, 2))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(arms=np.array([0, 3])), "out of range"),
        (dict(arms=np.array([0.7, 1.9])), "integer"),
        (dict(X=np.array([[1.0, np.nan], [0.0, 1.0]])), "X must be finite"),
        (dict(X=np.zeros((2, 3))), "need arms"),
        (dict(rewards=np.array([1.0, np.inf])), "rewards must be finite"),
        (dict(successes=np.array([0.5, 1.5])), "successes"),
        (dict(discounts=np.array([1.0, 0.0])), "discounts"),
        (dict(discounts=np.array([0.9, 1.0]), ridges=np.array([0.0, 1.0])), "ridge"),
    ],
)
def test_bad_input_is_rejected_before_anything_changes(change, message):
    state = prior(3, 2)
    args = dict(arms=np.array([0, 1]), X=np.eye(2), rewards=np.array([1.0, 0.0]))
    args.update(change)
    with pytest.raises(ValueError, match=message):
        update_many(state, **args)
    _assert_identical(state, prior(3, 2))


def test_the_workers_batch_learning_equals_the_rebuilds_one_reward_at_a_time():
    """learn_rewards (the worker) against learn_reward on one-arm states (banditd rebuild),
    with position weights, forgetting, reward ranges and ridges varying between rewards."""
    rng = np.random.default_rng(11)
    n_arms, dim = 12, 6
    events, arms = [], []
    for i in range(500):
        arm = int(rng.integers(n_arms))
        low = float(rng.choice([0.0, -1.0]))
        events.append(
            RewardEvent(
                decision_id=f"d{i}",
                experiment="e",
                arm=f"a{arm}",
                reward=float(rng.choice([low, 0.3, 1.0, 4.0])),
                kind="explicit",
                received_ms=i,
                features=np.frombuffer(rng.normal(size=dim).tobytes()),  # read-only, as decoded
                model_id="m",
                ridge=float(rng.choice([1.0, 0.5])),
                reward_min=low,
                reward_max=float(rng.choice([1.0, 5.0])),
                weight=float(rng.choice([1.0, 0.5, 0.3])),
                forgetting=float(rng.choice([1.0, 0.99])),
            )
        )
        arms.append(arm)
    batched = prior(n_arms, dim)
    learn_rewards(batched, arms, events)
    singles = [arm_prior(dim) for _ in range(n_arms)]
    for arm, e in zip(arms, events):
        learn_reward(
            singles[arm],
            e.features,
            e.reward,
            ridge=e.ridge,
            reward_min=e.reward_min,
            reward_max=e.reward_max,
            weight=e.weight,
            forgetting=e.forgetting,
        )
    stacked = LearningState(**{f: np.concatenate([getattr(s, f) for s in singles]) for f in FIELDS})
    _assert_identical(batched, stacked)


def test_a_batch_refuses_a_reward_too_large_for_its_arm_and_never_learns_it():
    rng = np.random.default_rng(5)
    arms = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    X = rng.random((10, 3))
    X[7] = [1.0, 1e15, 0.0]  # arm 2's second reward
    rewards = rng.random(10)
    batch, single = prior(5, 3), prior(5, 3)
    with pytest.raises(ValueError, match="too large for the arm's model"):
        update_many(batch, arms, X, rewards)
    with pytest.raises(ValueError, match="too large for the arm's model"):
        for i in range(10):
            update(single, int(arms[i]), X[i], float(rewards[i]))
    # the batch stopped at the step of arm 2's second reward: every first reward learned (one
    # at a time got further: arms 0 and 1's second rewards come before it), arm 2 as before it
    assert batch.n.tolist() == [1.0] * 5 and single.n.tolist() == [2.0, 2.0, 1.0, 1.0, 1.0]
    np.testing.assert_array_equal(batch.A_inv[2], single.A_inv[2])
    np.testing.assert_array_equal(batch.theta[2], single.theta[2])
