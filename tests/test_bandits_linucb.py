"""LinUCB and epsilon-greedy scoring, learning, ties and candidate subsets."""

import numpy as np
import pytest

from bandits import POLICIES, PolicyParams, epsilon_greedy, linucb, prior, select, update


def learned_state(n_arms=4, dim=3, n_updates=60, seed=0):
    rng = np.random.default_rng(seed)
    state = prior(n_arms, dim, ridge=1.5)
    for _ in range(n_updates):
        update(state, int(rng.integers(n_arms)), rng.normal(size=dim), float(rng.normal()))
    return state


def scores_by_arm(selection, n_arms):
    out = np.full(n_arms, np.nan)
    out[selection.arms] = selection.scores
    return out


def test_linucb_scores_equal_direct_solve_per_arm():
    state = learned_state()
    x = np.array([1.0, 0.3, -0.8])
    alpha = 0.7
    sel = linucb.select(state, x, np.random.default_rng(0), PolicyParams(alpha=alpha), k=4)
    expected = [
        np.linalg.solve(state.A[a], state.b[a]) @ x
        + alpha * np.sqrt(x @ np.linalg.solve(state.A[a], x))
        for a in range(4)
    ]
    np.testing.assert_allclose(scores_by_arm(sel, 4), expected, rtol=1e-10)
    assert np.all(np.diff(sel.scores) <= 0), "slate is not ranked best first"


def test_epsilon_greedy_scores_are_ridge_estimates():
    state = learned_state()
    x = np.array([1.0, -0.2, 0.4])
    sel = epsilon_greedy.select(state, x, np.random.default_rng(0), PolicyParams(), k=4)
    expected = [np.linalg.solve(state.A[a], state.b[a]) @ x for a in range(4)]
    np.testing.assert_allclose(scores_by_arm(sel, 4), expected, rtol=1e-10)


def test_linucb_prefers_better_arm():
    rng = np.random.default_rng(7)
    true_theta = np.array([[0.2, 0.1, 0.0], [0.5, -0.3, 0.1], [0.1, 0.6, 0.3]])
    state = prior(3, 3)
    params = PolicyParams(alpha=0.5)
    for _ in range(600):
        x = np.array([1.0, *rng.uniform(-1, 1, size=2)])
        arm = int(linucb.select(state, x, rng, params).arms[0])
        update(state, arm, x, float(true_theta[arm] @ x + 0.1 * rng.normal()))
    for x in ([1.0, -0.9, 0.0], [1.0, 0.9, 0.5], [1.0, 0.0, -0.9]):
        x = np.array(x)
        chosen = linucb.select(state, x, rng, PolicyParams(alpha=0.0)).arms[0]
        assert chosen == np.argmax(true_theta @ x)


def test_linucb_does_not_change_state():
    state = learned_state()
    before = {name: getattr(state, name).copy() for name in ("A_inv", "theta", "n")}
    linucb.select(state, np.ones(3), np.random.default_rng(0), PolicyParams(epsilon=0.5), k=3)
    for name, arr in before.items():
        np.testing.assert_array_equal(getattr(state, name), arr)


def test_linucb_ties_are_broken_uniformly_with_propensity_one_over_k():
    n_arms, n_calls = 5, 20_000
    state = prior(n_arms, 2)  # every arm scores alpha * |x|
    x = np.array([1.0, 0.5])
    rng = np.random.default_rng(3)
    counts = np.zeros(n_arms)
    for _ in range(n_calls):
        sel = linucb.select(state, x, rng, PolicyParams())
        assert sel.propensities[0] == pytest.approx(1 / n_arms, abs=1e-15)
        counts[sel.arms[0]] += 1
    np.testing.assert_allclose(counts / n_calls, 1 / n_arms, atol=0.012)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_candidates_restrict_choice_to_the_subset(name):
    state = learned_state()
    x = np.array([1.0, 0.3, -0.8])
    params = PolicyParams(epsilon=0.3, draws=50)
    rng = np.random.default_rng(4)
    subset = np.array([3, 1])
    seen = set()
    for _ in range(200):
        sel = select(name, state, x, rng, params, candidates=subset)
        seen.add(int(sel.arms[0]))
    assert seen == {1, 3}
    sel = select(name, state, x, rng, params, k=2, candidates=subset)
    assert sorted(sel.arms.tolist()) == [1, 3]


@pytest.mark.parametrize("name", sorted(POLICIES))
@pytest.mark.parametrize(
    "k, candidates",
    [
        (0, None),
        (5, None),
        (3, [0, 1]),
        (1, []),
        (1, [0, 0]),
        (1, [4]),
        (1, [-1]),
        (1, [0.0, 1.0]),
        (1, [[0, 1]]),
        (1.5, None),
        (True, None),
    ],
)
def test_invalid_k_or_candidates_raise_value_error(name, k, candidates):
    state = learned_state()
    cand = None if candidates is None else np.array(candidates)
    with pytest.raises(ValueError):
        select(
            name, state, np.ones(3), np.random.default_rng(0), PolicyParams(), k=k, candidates=cand
        )


@pytest.mark.parametrize("name", ["linucb", "lin_ts", "epsilon_greedy"])
def test_context_of_wrong_length_raises_value_error(name):
    with pytest.raises(ValueError):
        select(name, learned_state(), np.ones(2), np.random.default_rng(0), PolicyParams())


def test_unknown_policy_raises_value_error():
    with pytest.raises(ValueError, match="unknown policy"):
        select("ucb9000", learned_state(), np.ones(3), np.random.default_rng(0), PolicyParams())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alpha": -1.0},
        {"alpha": np.inf},
        {"epsilon": 1.5},
        {"epsilon": np.nan},
        {"v": -0.1},
        {"draws": 0},
        {"draws": 2.5},
        {"draws": True},
    ],
)
def test_policy_params_reject_out_of_range_values(kwargs):
    with pytest.raises(ValueError):
        PolicyParams(**kwargs)
