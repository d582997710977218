"""Thompson sampling: the sampled scores follow the posterior; lin_ts propensities are exact."""

import numpy as np
import pytest
from scipy.special import ndtr

from bandits import PolicyParams, beta_ts, lin_ts, prior, update
from bandits.ope import gaussian_top_probabilities


def test_lin_ts_scores_follow_gaussian_posterior_predictive():
    rng = np.random.default_rng(11)
    state = prior(3, 2, ridge=2.0)
    for _ in range(30):
        update(state, int(rng.integers(3)), rng.normal(size=2), float(rng.normal()))
    x = np.array([1.0, -0.4])
    v = 0.5
    mean = np.array([np.linalg.solve(state.A[a], state.b[a]) @ x for a in range(3)])
    var = np.array([v**2 * x @ np.linalg.solve(state.A[a], x) for a in range(3)])

    n_calls = 20_000
    samples = np.empty((n_calls, 3))
    params = PolicyParams(v=v, draws=1)
    for i in range(n_calls):
        sel = lin_ts.select(state, x, rng, params, k=3)
        samples[i, sel.arms] = sel.scores
        assert sel.estimated

    se = np.sqrt(var / n_calls)
    assert np.all(np.abs(samples.mean(axis=0) - mean) < 5 * se)
    np.testing.assert_allclose(samples.var(axis=0), var, rtol=0.05)


def test_lin_ts_with_zero_scale_is_greedy():
    state = prior(3, 1)
    for arm, reward in enumerate([0.1, 0.9, 0.5]):
        update(state, arm, np.ones(1), reward)
    sel = lin_ts.select(state, np.ones(1), np.random.default_rng(0), PolicyParams(v=0.0), k=3)
    assert sel.arms.tolist() == [1, 2, 0]
    np.testing.assert_allclose(sel.propensities, 1.0)


def test_lin_ts_top_probability_is_exact_for_two_arms_at_any_spread_ratio():
    rng = np.random.default_rng(21)
    for _ in range(300):
        mean = rng.normal(size=2) * 10.0 ** rng.uniform(-3, 0)
        sd = 10.0 ** rng.uniform(-4, 0, size=2)  # ratios up to 1e4 either way
        exact = ndtr((mean[0] - mean[1]) / np.hypot(sd[0], sd[1]))
        assert lin_ts.top_probability(mean, sd, 0, np.array([1])) == pytest.approx(exact, abs=1e-10)


def _spread_case(name, rng):
    if name == "a wide arm among narrow ones":  # a new arm in a trained catalogue
        return 0.01 * rng.normal(size=8), np.r_[1.0, np.full(7, 0.01)]
    if name == "two wide arms among narrow ones":
        return 0.01 * rng.normal(size=8), np.r_[1.0, 0.3, np.full(6, 0.001)]
    if name == "near tie":
        return 1e-3 * rng.normal(size=8), 0.1 * (1.0 + 1e-3 * rng.normal(size=8))
    return 0.3 * rng.normal(size=8), 10.0 ** rng.uniform(-3, 0, size=8)  # three decades


@pytest.mark.parametrize(
    "case",
    [
        "a wide arm among narrow ones",
        "two wide arms among narrow ones",
        "near tie",
        "spreads over three decades",
    ],
)
def test_lin_ts_top_probability_matches_a_million_draws(case):
    rng = np.random.default_rng(22)
    mean, sd = _spread_case(case, rng)
    arms = np.arange(8)
    p = np.array([lin_ts.top_probability(mean, sd, a, np.delete(arms, a)) for a in arms])
    draws = mean + sd * rng.standard_normal((1_000_000, 8))
    freq = np.bincount(draws.argmax(axis=1), minlength=8) / 1_000_000
    assert p.sum() == pytest.approx(1.0, abs=1e-10)
    # a 256-point grid over +-8 sd was off by up to 6e-3 here; 5 standard errors is 2.5e-3
    assert np.all(np.abs(p - freq) <= 5 * np.sqrt(p * (1 - p) / 1_000_000) + 1e-6)


def test_lin_ts_slot_propensities_are_top_probabilities_among_the_unplaced():
    rng = np.random.default_rng(23)
    state = prior(7, 3)
    for _ in range(200):  # arm 6 stays new: its score is far wider than the others'
        x = np.r_[1.0, rng.normal(size=2)]
        a = int(rng.integers(6))
        update(state, a, x, float(rng.random() < 0.2 + 0.1 * a))
    x = np.array([1.0, 0.2, -0.5])
    params = PolicyParams(v=0.5, epsilon=0.1, draws=1000)
    cand = np.array([6, 0, 2, 3, 5])
    mean = state.theta[cand] @ x
    sd = params.v * np.sqrt([x @ state.A_inv[a] @ x for a in cand])
    for _ in range(20):
        sel = lin_ts.select(state, x, rng, params, k=3, candidates=cand)
        left = list(cand)
        for j, arm in enumerate(sel.arms):
            rows = [cand.tolist().index(a) for a in left]
            top = gaussian_top_probabilities(mean[rows], sd[rows])[left.index(arm)]
            expected = 0.9 * max(top, 0.5 / 1000) + 0.1 / len(left)
            assert sel.propensities[j] == pytest.approx(expected, rel=1e-8)
            left.remove(arm)


def test_beta_ts_scores_follow_beta_posterior_and_ignore_context():
    rng = np.random.default_rng(12)
    state = prior(2, 4)
    state.successes[:] = [3.0, 0.5]
    state.failures[:] = [1.0, 6.0]
    a, b = 1 + state.successes, 1 + state.failures
    mean = a / (a + b)
    var = a * b / ((a + b) ** 2 * (a + b + 1))

    n_calls = 20_000
    samples = np.empty((n_calls, 2))
    params = PolicyParams(draws=1)
    for i in range(n_calls):
        sel = beta_ts.select(state, None, rng, params, k=2)
        samples[i, sel.arms] = sel.scores

    assert np.all(np.abs(samples.mean(axis=0) - mean) < 5 * np.sqrt(var / n_calls))
    np.testing.assert_allclose(samples.var(axis=0), var, rtol=0.05)
