"""The shared and hybrid item models: their algebra, propensities, determinism and forgetting."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from bandits.features import FeatureSpec
from bandits.item_models import (
    ItemLayout,
    hybrid_add_arms,
    hybrid_moments,
    hybrid_prior,
    hybrid_reset_arm,
    hybrid_update,
    learned_rewards,
    select_items,
    shared_moments,
    shared_prior,
    shared_update,
)
from bandits.policy import PolicyParams


def _events(n: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, dim)), rng.standard_normal(n)


def test_all_pairs_vector_is_context_cross_items_then_items_then_context():
    layout = ItemLayout.all_pairs(4, 3)
    x = np.array([1.0, 2.0, -1.0, 0.5])
    items = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]])
    phi = layout.features(x, items)
    assert layout.dim == 4 * (3 + 1) == phi.shape[1]
    for c in range(2):
        expected = np.concatenate((np.kron(x[1:], items[c]), items[c], x))
        np.testing.assert_array_equal(phi[c], expected)


def test_declared_pairs_shrink_the_vector():
    layout = ItemLayout(3, 2, ((1, 0),), context_alone=False)
    phi = layout.features(np.array([1.0, 5.0, 7.0]), np.array([[2.0, 3.0]]))
    assert layout.dim == 3
    np.testing.assert_array_equal(phi, [[10.0, 2.0, 3.0]])


@pytest.mark.parametrize(
    "x, items",
    [(np.ones(3), np.ones((2, 3))), (np.ones(2), np.ones((2, 2))), (np.ones(3), [[np.nan, 1.0]])],
)
def test_features_refuse_wrong_shapes_and_non_finite_values(x, items):
    with pytest.raises(ValueError):
        ItemLayout.all_pairs(3, 2).features(x, items)


def test_layout_from_specs_crosses_declared_features_column_by_column():
    ctx = FeatureSpec.from_mapping(["hour", "age"], {"city": ["berlin", "munich"]})
    job = FeatureSpec.from_mapping(["pay"], {"category": ["kitchen", "bar"]}, intercept=False)
    everything = ItemLayout.from_specs(ctx, job)
    assert everything.dim == ctx.dim * (job.dim + 1) == 20
    some = ItemLayout.from_specs(ctx, job, {"city": ["category"], "hour": ["pay"]})
    assert some.pairs == ((3, 1), (3, 2), (4, 1), (4, 2), (1, 0))
    assert some.dim == 5 + job.dim + ctx.dim


@pytest.mark.parametrize(
    "interactions, message",
    [({"weather": ["pay"]}, "'weather'"), ({"hour": ["colour"]}, "'colour'")],
)
def test_layout_from_specs_names_an_undeclared_feature(interactions, message):
    ctx = FeatureSpec.from_mapping(["hour"], {})
    job = FeatureSpec.from_mapping(["pay"], {}, intercept=False)
    with pytest.raises(ValueError, match=message):
        ItemLayout.from_specs(ctx, job, interactions)


def test_layout_from_specs_refuses_item_features_with_an_intercept():
    spec = FeatureSpec.from_mapping(["pay"], {})
    with pytest.raises(ValueError, match="intercept"):
        ItemLayout.from_specs(spec, spec)


def test_layout_refuses_pairs_out_of_range():
    with pytest.raises(ValueError, match="out of range"):
        ItemLayout(2, 2, ((2, 0),))


def test_shared_update_equals_direct_ridge_solve():
    phi, r = _events(200, 6)
    state = shared_prior(6, ridge=2.0)
    for p, reward in zip(phi, r):
        shared_update(state, p, reward)
    A = 2.0 * np.eye(6) + phi.T @ phi
    np.testing.assert_allclose(state.theta[0], np.linalg.solve(A, phi.T @ r), atol=1e-10)
    np.testing.assert_allclose(state.A[0], A, atol=1e-10)


def test_sherman_morrison_inverse_equals_inverse_of_A():
    phi, r = _events(300, 8, seed=1)
    state = shared_prior(8)
    for p, reward in zip(phi, r):
        shared_update(state, p, reward, discount=0.97)
    np.testing.assert_allclose(state.A_inv[0], np.linalg.inv(state.A[0]), atol=1e-10)
    mean, quad = shared_moments(state, phi[:5])
    np.testing.assert_allclose(mean, phi[:5] @ np.linalg.solve(state.A[0], state.b[0]))
    np.testing.assert_allclose(quad, [p @ np.linalg.solve(state.A[0], p) for p in phi[:5]])


def test_hybrid_follows_li_et_al_algorithm_2():
    """The paper's statistics and scores, computed with plain inverses, step by step."""
    rng = np.random.default_rng(3)
    K, d, D, alpha = 3, 3, 4, 0.7
    state = hybrid_prior(K, d, D)
    A0, b0 = np.eye(D), np.zeros(D)
    A = [np.eye(d) for _ in range(K)]
    B = [np.zeros((d, D)) for _ in range(K)]
    b = [np.zeros(d) for _ in range(K)]
    for _ in range(60):
        x, z = rng.standard_normal(d), rng.standard_normal((K, D))
        # lines 4-11: scores of every arm
        beta = np.linalg.solve(A0, b0)
        A0i = np.linalg.inv(A0)
        for a in range(K):
            Ai = np.linalg.inv(A[a])
            theta = Ai @ (b[a] - B[a] @ beta)
            s = (
                z[a] @ A0i @ z[a]
                - 2 * z[a] @ A0i @ B[a].T @ Ai @ x
                + x @ Ai @ x
                + x @ Ai @ B[a] @ A0i @ B[a].T @ Ai @ x
            )
            mean, quad = hybrid_moments(state, np.array([a]), x, z[a : a + 1])
            np.testing.assert_allclose(mean[0], z[a] @ beta + x @ theta, atol=1e-10)
            np.testing.assert_allclose(quad[0], s, atol=1e-10)
            p = select_items("linucb", mean, quad, rng, PolicyParams(alpha=alpha)).scores[0]
            np.testing.assert_allclose(p, z[a] @ beta + x @ theta + alpha * np.sqrt(s))
        # lines 17-23: learn the reward of one arm
        a, r = int(rng.integers(K)), float(rng.standard_normal())
        Ai = np.linalg.inv(A[a])
        A0 += B[a].T @ Ai @ B[a]
        b0 += B[a].T @ Ai @ b[a]
        A[a] += np.outer(x, x)
        B[a] += np.outer(x, z[a])
        b[a] += r * x
        Ai = np.linalg.inv(A[a])
        A0 += np.outer(z[a], z[a]) - B[a].T @ Ai @ B[a]
        b0 += r * z[a] - B[a].T @ Ai @ b[a]
        hybrid_update(state, a, x, z[a], r)
    np.testing.assert_allclose(state.shared.A[0], A0, atol=1e-9)
    np.testing.assert_allclose(state.shared.b[0], b0, atol=1e-9)
    np.testing.assert_allclose(state.shared.A_inv[0], np.linalg.inv(A0), atol=1e-9)
    for a in range(K):
        np.testing.assert_allclose(state.arms.A[a], A[a], atol=1e-9)
        np.testing.assert_allclose(state.B[a], B[a], atol=1e-9)
        np.testing.assert_allclose(state.arms.b[a], b[a], atol=1e-9)
    assert learned_rewards(state) == 60


def test_hybrid_is_one_ridge_regression_over_shared_and_per_arm_features():
    """Algorithm 2 is block elimination: the joint model over ``[phi, x e_a]`` with its priors."""
    rng = np.random.default_rng(9)
    K, d, D, ridge, arm_ridge = 3, 2, 4, 0.5, 5.0
    state = hybrid_prior(K, d, D, ridge, arm_ridge)
    rows, rewards = [], []
    for _ in range(80):
        a, x, phi = int(rng.integers(K)), rng.standard_normal(d), rng.standard_normal(D)
        r = float(rng.standard_normal())
        hybrid_update(state, a, x, phi, r)
        joint = np.zeros(D + K * d)
        joint[:D], joint[D + a * d : D + (a + 1) * d] = phi, x
        rows.append(joint)
        rewards.append(r)
    F = np.array(rows)
    M = np.diag(np.r_[np.full(D, ridge), np.full(K * d, arm_ridge)]) + F.T @ F
    w = np.linalg.solve(M, F.T @ np.array(rewards))
    x, phi = rng.standard_normal(d), rng.standard_normal((K, D))
    mean, quad = hybrid_moments(state, np.arange(K), x, phi)
    for a in range(K):
        joint = np.zeros(D + K * d)
        joint[:D], joint[D + a * d : D + (a + 1) * d] = phi[a], x
        assert mean[a] == pytest.approx(joint @ w, abs=1e-9)
        assert quad[a] == pytest.approx(joint @ np.linalg.solve(M, joint), abs=1e-9)


def test_hybrid_add_and_reset_arms_start_new_items_at_the_prior():
    rng = np.random.default_rng(4)
    state = hybrid_prior(2, 3, 5)
    for _ in range(10):
        hybrid_update(state, 1, rng.standard_normal(3), rng.standard_normal(5), 1.0)
    grown = hybrid_add_arms(state, 2)
    assert grown.B.shape == (4, 3, 5) and grown.arms.A.shape == (4, 3, 3)
    np.testing.assert_array_equal(grown.B[1], state.B[1])
    np.testing.assert_array_equal(grown.arms.A[3], np.eye(3))
    np.testing.assert_array_equal(grown.B[3], 0.0)
    hybrid_reset_arm(grown, 1)
    np.testing.assert_array_equal(grown.arms.A_inv[1], np.eye(3))
    np.testing.assert_array_equal(grown.B[1], 0.0)
    assert grown.arms.n[1] == 0 and learned_rewards(grown) == 10


def _frequencies(policy, mean, quad, params, runs, k=1):
    """Slot-0 counts and the reported propensity of each candidate over ``runs`` draws."""
    counts = np.zeros(mean.size)
    reported = np.full(mean.size, np.nan)
    for seed in range(runs):
        sel = select_items(policy, mean, quad, np.random.default_rng(seed), params, k=k)
        arm = int(sel.arms[0])
        counts[arm] += 1
        if not np.isnan(reported[arm]):
            assert sel.propensities[0] == pytest.approx(reported[arm], abs=1e-12)
        reported[arm] = sel.propensities[0]
    return counts, reported


def test_linucb_propensities_are_exact_with_ties_and_epsilon():
    mean = np.array([0.2, 0.5, 0.5, 0.1])
    params = PolicyParams(alpha=0.0, epsilon=0.2)
    counts, reported = _frequencies("linucb", mean, np.zeros(4), params, 4000)
    np.testing.assert_allclose(reported, [0.05, 0.45, 0.45, 0.05])
    for c, p in zip(counts, reported):
        assert binomtest(int(c), 4000, p).pvalue > 1e-4


def test_lin_ts_propensities_sum_to_one_and_match_the_chooser():
    mean = np.array([0.3, 0.5, 0.45, 0.1, 0.35])
    quad = np.array([0.04, 0.01, 0.09, 0.02, 0.05])
    counts, reported = _frequencies("lin_ts", mean, quad, PolicyParams(v=1.0), 3000)
    assert not np.isnan(reported).any()
    assert reported.sum() == pytest.approx(1.0, abs=1e-9)
    for c, p in zip(counts, reported):
        assert binomtest(int(c), 3000, p).pvalue > 1e-4


def test_squarecb_propensities_are_the_inverse_gap_weights():
    mean = np.array([0.3, 0.5, 0.45])
    sel = select_items(
        "squarecb", mean, np.zeros(3), np.random.default_rng(0), PolicyParams(), learned=100.0
    )
    gamma = 10.0 * np.sqrt(100.0)
    weights = 1.0 / (3 + gamma * (0.5 - mean))
    weights[1] = 1.0 - weights[0] - weights[2]
    assert sel.propensities[0] == pytest.approx(weights[int(sel.arms[0])])


def test_slates_take_distinct_candidates_with_slot_propensities():
    mean = np.array([0.3, 0.5, 0.45, 0.1])
    params = PolicyParams(alpha=0.0, epsilon=0.1)
    sel = select_items("linucb", mean, np.zeros(4), np.random.default_rng(2), params, k=3)
    assert len(set(sel.arms.tolist())) == 3
    assert all(0 < p <= 1 for p in sel.propensities)


def test_select_items_refuses_an_unknown_policy_and_bad_moments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown item policy"):
        select_items("beta_ts", np.zeros(2), np.zeros(2), rng, PolicyParams())
    with pytest.raises(ValueError, match="same length"):
        select_items("linucb", np.zeros(2), np.zeros(3), rng, PolicyParams())
    with pytest.raises(ValueError, match="finite"):
        select_items("linucb", np.array([0.0, np.nan]), np.zeros(2), rng, PolicyParams())


def _replay(seed: int, discount: float):
    rng = np.random.default_rng(seed)
    shared, hybrid = shared_prior(7), hybrid_prior(4, 3, 7)
    choices = []
    for _ in range(150):
        x, phi = rng.standard_normal(3), rng.standard_normal((4, 7))
        mean, quad = hybrid_moments(hybrid, np.arange(4), x, phi)
        sel = select_items("lin_ts", mean, quad, rng, PolicyParams())
        a, r = int(sel.arms[0]), float(rng.random())
        choices.append((a, float(sel.propensities[0])))
        shared_update(shared, phi[a], r, discount=discount)
        hybrid_update(hybrid, a, x, phi[a], r, discount=discount)
    return shared, hybrid, choices


@pytest.mark.parametrize("discount", [1.0, 0.95])
def test_replaying_the_same_events_gives_the_same_bits(discount):
    s1, h1, c1 = _replay(5, discount)
    s2, h2, c2 = _replay(5, discount)
    assert c1 == c2
    for a, b in ((s1, s2), (h1.shared, h2.shared), (h1.arms, h2.arms)):
        for field in ("A", "A_inv", "b", "theta", "n"):
            assert np.array_equal(getattr(a, field), getattr(b, field))
    assert np.array_equal(h1.B, h2.B)


def test_forgetting_weighs_old_rewards_by_the_discount():
    phi, r = _events(50, 4, seed=6)
    state = shared_prior(4)
    for p, reward in zip(phi, r):
        shared_update(state, p, reward, discount=0.9)
    weights = 0.9 ** np.arange(49, -1, -1)
    np.testing.assert_allclose(state.b[0], (weights * r) @ phi, atol=1e-12)
    np.testing.assert_allclose(state.A_inv[0], np.linalg.inv(state.A[0]), atol=1e-10)


def test_forgetting_follows_a_change_that_memory_does_not():
    phi = np.array([1.0, 0.5, -0.5])
    kept, forgetting = shared_prior(3), shared_prior(3)
    for reward in [0.0] * 300 + [1.0] * 100:
        shared_update(kept, phi, reward)
        shared_update(forgetting, phi, reward, discount=0.95)
    assert shared_moments(forgetting, phi[None])[0][0] > 0.95
    assert shared_moments(kept, phi[None])[0][0] < 0.3


def test_hybrid_forgetting_keeps_inverses_consistent():
    rng = np.random.default_rng(8)
    state = hybrid_prior(3, 3, 5)
    for _ in range(400):
        a = int(rng.integers(3))
        hybrid_update(state, a, rng.standard_normal(3), rng.standard_normal(5), 1.0, discount=0.9)
    np.testing.assert_allclose(
        state.shared.A_inv[0], np.linalg.inv(state.shared.A[0]), rtol=1e-8, atol=1e-10
    )
    for a in range(3):
        np.testing.assert_allclose(state.arms.A_inv[a], np.linalg.inv(state.arms.A[a]), atol=1e-10)
    assert np.isfinite(state.B).all() and np.abs(state.B).max() < 100


def test_hybrid_scoring_moments_equal_the_papers_from_theta_instead_of_b():
    from bandits.item_models import hybrid_scoring_moments
    from bandits.state import ScoringState

    rng = np.random.default_rng(11)
    state = hybrid_prior(5, 4, 9)
    for _ in range(50):
        x, phi = rng.standard_normal(4), rng.standard_normal(9)
        hybrid_update(state, int(rng.integers(5)), x, phi, float(rng.random()))
    arms, x, phi = np.array([3, 1, 4]), rng.standard_normal(4), rng.standard_normal((3, 9))

    def scoring(s, rows):
        return ScoringState(
            s.A_inv[rows], s.theta[rows], s.n[rows], s.successes[rows], s.failures[rows]
        )

    mean, quad = hybrid_moments(state, arms, x, phi)
    got = hybrid_scoring_moments(
        scoring(state.shared, [0]), scoring(state.arms, arms), state.B[arms], x, phi
    )
    np.testing.assert_allclose(got[0], mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got[1], quad, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "layout",
    [
        ItemLayout.all_pairs(6, 4),
        ItemLayout.all_pairs(5, 3, context_alone=False),
        ItemLayout(4, 3, ((1, 0), (3, 2))),
    ],
)
def test_shared_item_moments_equal_the_moments_of_the_full_vectors(layout):
    from bandits.item_models import shared_item_moments

    rng = np.random.default_rng(12)
    state = shared_prior(layout.dim)
    for _ in range(100):
        x = np.concatenate(([1.0], rng.standard_normal(layout.context_dim - 1)))
        phi = layout.features(x, rng.standard_normal((1, layout.item_dim)))[0]
        shared_update(state, phi, float(rng.random()))
    x = np.concatenate(([1.0], rng.standard_normal(layout.context_dim - 1)))
    items = rng.standard_normal((50, layout.item_dim))
    mean, quad = shared_moments(state, layout.features(x, items))
    fast_mean, fast_quad = shared_item_moments(state, layout, x, items)
    np.testing.assert_allclose(fast_mean, mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast_quad, quad, rtol=1e-12, atol=1e-12)
