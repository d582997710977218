"""Reported propensities: consistent, and equal to how often arms are really chosen."""

import itertools

import numpy as np
import pytest

from bandits import POLICIES, PolicyParams, prior, select, update
from bandits.slate import sampled_propensities, slot_probabilities

N_ARMS = 4
X = np.array([1.0, 0.3])
EXACT = {"linucb", "epsilon_greedy", "random", "squarecb"}
PARAMS = {
    "linucb": PolicyParams(alpha=0.5, epsilon=0.2),
    "epsilon_greedy": PolicyParams(epsilon=0.3),
    "random": PolicyParams(),
    "lin_ts": PolicyParams(v=1.0, epsilon=0.1, draws=200),
    "beta_ts": PolicyParams(draws=200),
    "squarecb": PolicyParams(gamma_scale=3.0, epsilon=0.1),
}


def learned_state():
    """Four arms whose posteriors overlap, so every policy gives each arm a real chance."""
    rng = np.random.default_rng(5)
    state = prior(N_ARMS, 2)
    for arm, rate in enumerate([0.2, 0.35, 0.5, 0.4]):
        for _ in range(6):
            update(state, arm, np.array([1.0, rng.uniform(-1, 1)]), float(rng.random() < rate))
    return state


@pytest.fixture(scope="module", params=sorted(POLICIES))
def slot_zero_run(request):
    """20,000 seeded single-arm choices: which arm, and the propensity reported for it."""
    name = request.param
    state, rng = learned_state(), np.random.default_rng(2013)
    n_calls = 20_000
    arms = np.empty(n_calls, dtype=int)
    props = np.empty(n_calls)
    for i in range(n_calls):
        sel = select(name, state, X, rng, PARAMS[name])
        arms[i], props[i] = sel.arms[0], sel.propensities[0]
        assert sel.estimated == (name not in EXACT)
    return name, arms, props


def test_slot_zero_propensities_over_all_arms_sum_to_one(slot_zero_run):
    name, arms, props = slot_zero_run
    assert set(arms) == set(range(N_ARMS)), "every arm should have been chosen"
    per_arm = np.array([props[arms == a].mean() for a in range(N_ARMS)])
    if name in EXACT:
        for a in range(N_ARMS):  # exact propensities do not vary between calls
            assert np.ptp(props[arms == a]) < 1e-12
        assert per_arm.sum() == pytest.approx(1.0, abs=1e-12)
    else:
        assert per_arm.sum() == pytest.approx(1.0, abs=0.02)


def test_choice_frequencies_match_reported_propensities(slot_zero_run):
    _, arms, props = slot_zero_run
    freq = np.bincount(arms, minlength=N_ARMS) / arms.size
    per_arm = np.array([props[arms == a].mean() for a in range(N_ARMS)])
    np.testing.assert_allclose(freq, per_arm, atol=0.015)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_slate_of_three_is_distinct_ranked_with_valid_propensities(name):
    state, rng = learned_state(), np.random.default_rng(1)
    greedy = PolicyParams(alpha=0.5, draws=100)  # epsilon 0: every slot is the best remaining
    for params in (greedy, PARAMS[name]):
        for _ in range(50):
            sel = select(name, state, X, rng, params, k=3)
            assert sel.arms.shape == sel.scores.shape == sel.propensities.shape == (3,)
            assert len(set(sel.arms.tolist())) == 3
            assert set(sel.arms.tolist()) <= set(range(N_ARMS))
            assert np.all((sel.propensities > 0) & (sel.propensities <= 1))
            if params is greedy and name != "squarecb":  # squarecb draws every slot
                assert np.all(np.diff(sel.scores) <= 0)


@pytest.mark.parametrize("name", ["linucb", "random"])
def test_product_of_exact_slot_propensities_is_slate_probability(name):
    state, rng = learned_state(), np.random.default_rng(9)
    params = PolicyParams(alpha=0.5, epsilon=0.3)
    n_calls = 20_000
    counts, reported = {}, {}
    for _ in range(n_calls):
        sel = select(name, state, X, rng, params, k=2)
        slate = tuple(sel.arms.tolist())
        counts[slate] = counts.get(slate, 0) + 1
        reported[slate] = float(np.prod(sel.propensities))
    assert set(counts) == set(itertools.permutations(range(N_ARMS), 2))
    assert sum(reported.values()) == pytest.approx(1.0, abs=1e-12)
    for slate, count in counts.items():
        assert count / n_calls == pytest.approx(reported[slate], abs=0.01)


def test_random_policy_propensity_is_one_over_remaining_exactly():
    sel = select(
        "random",
        prior(6, 1),
        X,
        np.random.default_rng(0),
        PolicyParams(epsilon=0.7),
        k=4,
        candidates=np.array([5, 0, 2, 3, 4]),
    )
    assert sel.propensities.tolist() == [1 / 5, 1 / 4, 1 / 3, 1 / 2]
    assert sel.scores.tolist() == [0.0] * 4


def test_exact_slot_probabilities_sum_to_one_with_ties_and_placed_arms():
    scores = np.array([0.5, 0.9, 0.9, 0.1, 0.9])
    remaining = np.array([True, True, False, True, True])
    probs = slot_probabilities(scores, remaining, epsilon=0.25)
    assert probs.sum() == pytest.approx(1.0, abs=1e-15)
    np.testing.assert_allclose(
        probs, [0.25 / 4, 0.75 / 2 + 0.25 / 4, 0.0, 0.25 / 4, 0.75 / 2 + 0.25 / 4]
    )


def test_monte_carlo_estimates_over_all_arms_sum_to_one():
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(500, 4))
    draws[:50] = 0.0  # tied draws share their win
    for eps in (0.0, 0.4):
        slot0 = [sampled_propensities(draws, np.array([a]), eps)[0] for a in range(4)]
        assert sum(slot0) == pytest.approx(1.0, abs=1e-12)
        slot1 = [sampled_propensities(draws, np.array([2, a]), eps)[1] for a in (0, 1, 3)]
        assert sum(slot1) == pytest.approx(1.0, abs=1e-12)


def test_monte_carlo_estimate_is_clipped_so_ips_weight_stays_finite():
    draws = np.column_stack([np.ones(100), np.zeros(100)])  # arm 1 never wins
    assert sampled_propensities(draws, np.array([1]), 0.0)[0] == 0.5 / 100
    assert sampled_propensities(draws, np.array([1]), 0.5)[0] == 0.5 * 0.5 / 100 + 0.5 / 2


def test_monte_carlo_estimate_does_not_modify_draws():
    draws = np.random.default_rng(0).normal(size=(50, 3))
    before = draws.copy()
    sampled_propensities(draws, np.array([0, 1, 2]), 0.1)
    np.testing.assert_array_equal(draws, before)
