"""Forgetting: the discounted update of bandits.update (pure, no service)."""

import numpy as np
import pytest

from bandits import prior, update


def _stream(seed: int, n: int, dim: int, arms: int = 1):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield int(rng.integers(arms)), rng.normal(size=dim), float(rng.random() < 0.3)


def test_discount_one_is_bit_for_bit_the_plain_update():
    plain, same = prior(3, 4), prior(3, 4)
    for arm, x, r in _stream(0, 300, 4, arms=3):
        update(plain, arm, x, r)
        update(same, arm, x, r, discount=1.0, ridge=5.0)
    for name in ("A", "A_inv", "b", "theta", "n", "successes", "failures"):
        np.testing.assert_array_equal(getattr(plain, name), getattr(same, name))


def test_discounted_statistics_match_the_documented_recursion():
    gamma, ridge, dim = 0.9, 2.0, 3
    s = prior(1, dim, ridge)
    A, b, succ = ridge * np.eye(dim), np.zeros(dim), 0.0
    for n, (_, x, r) in enumerate(_stream(1, 50, dim)):
        update(s, 0, x, r, discount=gamma, ridge=ridge)
        restore = np.zeros((dim, dim))
        restore[n % dim, n % dim] = ridge * (1 - gamma**dim)
        A = gamma * A + restore + np.outer(x, x)
        b = gamma * b + r * x
        succ = gamma * succ + r
    np.testing.assert_allclose(s.A[0], A, rtol=1e-12)
    np.testing.assert_allclose(s.b[0], b, rtol=1e-12)
    np.testing.assert_allclose(s.successes[0], succ, rtol=1e-12)
    np.testing.assert_allclose(s.theta[0], np.linalg.solve(A, b), rtol=1e-9)
    assert s.n[0] == 50


def test_inverse_stays_exact_and_bounded_when_a_feature_is_never_seen():
    # Plain discounting would shrink A's never-seen direction as ridge * gamma^n and
    # overflow A_inv after ~70,000 updates at gamma = 0.99; the restored prior keeps it.
    gamma, ridge, dim = 0.99, 1.0, 4
    s = prior(1, dim, ridge)
    rng = np.random.default_rng(2)
    for _ in range(20_000):
        x = np.array([1.0, rng.random(), rng.random(), 0.0])  # feature 3 is always 0
        update(s, 0, x, float(rng.random() < 0.1), discount=gamma, ridge=ridge)
    assert np.isfinite(s.A_inv).all()
    assert ridge * gamma ** (dim - 1) <= s.A[0, 3, 3] <= 2 * ridge
    np.testing.assert_allclose(s.A_inv[0] @ s.A[0], np.eye(dim), atol=1e-9)
    assert np.linalg.eigvalsh(s.A[0]).min() >= ridge * gamma ** (dim - 1) - 1e-9


def test_replaying_the_same_rewards_rebuilds_the_same_state():
    first, second = prior(2, 3, 0.5), prior(2, 3, 0.5)
    events = list(_stream(3, 400, 3, arms=2))
    for state in (first, second):
        for arm, x, r in events:
            update(state, arm, x, r, discount=0.97, ridge=0.5)
    for name in ("A", "A_inv", "b", "theta", "n", "successes", "failures"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))


def test_forgetting_tracks_a_reward_that_changes():
    rng = np.random.default_rng(4)
    stationary, forgetful = prior(1, 1), prior(1, 1)
    x = np.ones(1)
    for t in range(4000):
        r = float(rng.random() < (0.8 if t < 2000 else 0.2))
        update(stationary, 0, x, r)
        update(forgetful, 0, x, r, discount=0.99)
    assert abs(forgetful.theta[0, 0] - 0.2) < 0.1  # about the last 100 rewards
    assert stationary.theta[0, 0] > 0.45  # still half the old rate
    assert forgetful.successes[0] + forgetful.failures[0] < 101  # Beta counts forget too


def test_only_the_updated_arm_forgets():
    s = prior(2, 2)
    for arm, x, r in _stream(5, 50, 2, arms=2):
        update(s, arm, x, r)
    other = {name: getattr(s, name)[0].copy() for name in ("A", "A_inv", "b", "theta")}
    update(s, 1, np.ones(2), 1.0, discount=0.5)
    for name, before in other.items():
        np.testing.assert_array_equal(getattr(s, name)[0], before)


@pytest.mark.parametrize("discount", [0.0, -0.5, 1.5, float("nan")])
def test_discount_outside_zero_one_is_rejected(discount):
    with pytest.raises(ValueError, match="discount"):
        update(prior(1, 2), 0, np.ones(2), 1.0, discount=discount)


def test_discount_needs_a_valid_ridge():
    with pytest.raises(ValueError, match="ridge"):
        update(prior(1, 2), 0, np.ones(2), 1.0, discount=0.9, ridge=0.0)
