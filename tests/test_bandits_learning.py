"""State priors, the rank-one update and reward rescaling."""

import numpy as np
import pytest

from bandits import LearningState, arm_prior, prior, rescale, update


def test_prior_is_ridge_identity_with_zero_estimates():
    s = prior(3, 2, ridge=4.0)
    assert isinstance(s, LearningState)
    np.testing.assert_array_equal(s.A, np.tile(4.0 * np.eye(2), (3, 1, 1)))
    np.testing.assert_array_equal(s.A_inv, np.tile(0.25 * np.eye(2), (3, 1, 1)))
    for arr, shape in [
        (s.b, (3, 2)),
        (s.theta, (3, 2)),
        (s.n, (3,)),
        (s.successes, (3,)),
        (s.failures, (3,)),
    ]:
        assert arr.shape == shape and arr.dtype == np.float64 and not arr.any()


def test_arm_prior_is_one_arm():
    s = arm_prior(5, ridge=2.0)
    assert s.A.shape == (1, 5, 5) and s.theta.shape == (1, 5)
    np.testing.assert_array_equal(s.A_inv[0], 0.5 * np.eye(5))


@pytest.mark.parametrize("args", [(-1, 2, 1.0), (2, -1, 1.0), (2, 2, 0.0), (2, 2, np.nan)])
def test_prior_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        prior(*args)


def test_sherman_morrison_matches_direct_inverse_after_many_updates():
    rng = np.random.default_rng(1)
    s = prior(3, 4, ridge=1.0)
    for _ in range(200):
        update(s, int(rng.integers(3)), rng.normal(size=4), float(rng.normal()))
    for a in range(3):
        np.testing.assert_allclose(s.A_inv[a], np.linalg.inv(s.A[a]), rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(
            s.theta[a], np.linalg.solve(s.A[a], s.b[a]), rtol=1e-8, atol=1e-12
        )
    assert s.n.sum() == 200


def test_update_changes_only_the_rewarded_arms_rows_in_place():
    rng = np.random.default_rng(2)
    s = prior(3, 3)
    for _ in range(20):
        update(s, int(rng.integers(3)), rng.normal(size=3), float(rng.random()))
    arrays = {
        name: getattr(s, name)
        for name in ("A", "A_inv", "b", "theta", "n", "successes", "failures")
    }
    before = {name: arr.copy() for name, arr in arrays.items()}
    x = np.array([1.0, -2.0, 0.5])
    update(s, 1, x, 0.7)
    for name, arr in arrays.items():
        assert getattr(s, name) is arr, f"{name} was reallocated"
        np.testing.assert_array_equal(arr[[0, 2]], before[name][[0, 2]])
        assert not np.array_equal(arr[1], before[name][1]), f"{name}[1] did not change"
    np.testing.assert_array_equal(s.A[1], before["A"][1] + np.outer(x, x))
    np.testing.assert_allclose(s.b[1], before["b"][1] + 0.7 * x)


def test_update_counts_clipped_reward_as_success_by_default():
    s = prior(2, 1)
    update(s, 0, np.ones(1), 2.5)
    update(s, 0, np.ones(1), -1.0)
    update(s, 0, np.ones(1), 0.25)
    assert s.n[0] == 3 and s.successes[0] == 1.25 and s.failures[0] == 1.75
    assert s.n[1] == s.successes[1] == s.failures[1] == 0


def test_update_uses_explicit_success():
    s = prior(1, 1)
    update(s, 0, np.ones(1), 40.0, success=0.4)
    assert s.successes[0] == 0.4 and s.failures[0] == 0.6
    assert s.b[0, 0] == 40.0


@pytest.mark.parametrize(
    "arm, x, reward, success",
    [
        (3, [1.0, 0.0], 1.0, None),
        (-1, [1.0, 0.0], 1.0, None),
        (0, [1.0], 1.0, None),
        (0, [1.0, np.nan], 1.0, None),
        (0, [1.0, 0.0], np.inf, None),
        (0, [1.0, 0.0], 1.0, 1.5),
    ],
)
def test_update_rejects_bad_input_without_changing_state(arm, x, reward, success):
    s = prior(3, 2)
    with pytest.raises(ValueError):
        update(s, arm, np.array(x), reward, success=success)
    fresh = prior(3, 2)
    for name in ("A", "A_inv", "b", "theta", "n", "successes", "failures"):
        np.testing.assert_array_equal(getattr(s, name), getattr(fresh, name))


@pytest.mark.parametrize(
    "reward, low, high, expected",
    [
        (3.0, 1.0, 5.0, 0.5),
        (1.0, 1.0, 5.0, 0.0),
        (5.0, 1.0, 5.0, 1.0),
        (-7.0, 1.0, 5.0, 0.0),
        (9.0, 1.0, 5.0, 1.0),
        (np.inf, 0.0, 1.0, 1.0),
        (2.0, 2.0, 2.0, 1.0),
        (3.0, 2.0, 2.0, 1.0),
        (1.9, 2.0, 2.0, 0.0),
    ],
)
def test_rescale_maps_range_onto_unit_interval(reward, low, high, expected):
    assert rescale(reward, low, high) == expected


@pytest.mark.parametrize(
    "reward, low, high",
    [
        (0.5, 1.0, 0.0),
        (np.nan, 0.0, 1.0),
        (0.5, -np.inf, 1.0),
        (0.5, 0.0, np.nan),
    ],
)
def test_rescale_rejects_bad_range_or_nan(reward, low, high):
    with pytest.raises(ValueError):
        rescale(reward, low, high)


def test_a_reward_too_large_for_the_model_is_refused_and_leaves_the_arm_as_it_was():
    from bandits.learning import MAX_LEVERAGE

    s = prior(2, 2)
    x = np.array([1.0, 1e15])
    before = [a.copy() for a in (s.A, s.A_inv, s.b, s.theta, s.n)]
    for _ in range(2):  # twice: the second once divided by zero (a NaN model)
        with pytest.raises(ValueError, match="too large for the arm's model"):
            update(s, 0, x, 1.0)
    for a, b in zip(before, (s.A, s.A_inv, s.b, s.theta, s.n)):
        np.testing.assert_array_equal(a, b)
    # as large as is accepted, and the model stays accurate (against a ridge of 1)
    x = np.array([1.0, 5e5])
    assert x @ x <= MAX_LEVERAGE
    for reward in (1.0, 0.0, 1.0):
        update(s, 0, x, reward)
    exact = np.linalg.solve(np.eye(2) + 3 * np.outer(x, x), 2 * x)
    np.testing.assert_allclose(s.theta[0], exact, rtol=1e-4)
    assert np.isfinite(s.A_inv).all() and (np.diagonal(s.A_inv, axis1=1, axis2=2) > 0).all()
