"""Thompson sampling: the sampled scores follow the posterior."""

import numpy as np

from bandits import PolicyParams, beta_ts, lin_ts, prior, update


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
