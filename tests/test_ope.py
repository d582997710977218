"""Off-policy evaluation: estimators, target probabilities, coverage, and banditd evaluate."""

import argparse
import json
import textwrap

import numpy as np
import pytest

from app import evaluate as evaluate_cmd
from bandits import PolicyParams, ScoringState, prior, select, update
from bandits.ope import (
    BanditLog,
    beta_top_probabilities,
    doubly_robust,
    effective_sample_size,
    gaussian_top_probabilities,
    ips,
    snips,
    target_probabilities,
)
from bandits.simulation import ope_study
from tests.conftest import AUTH, rows


def _log(arms, props, rewards, dim=1):
    n = len(arms)
    return BanditLog(
        np.ones((n, dim)), np.array(arms), np.array(props, float), np.array(rewards, float)
    )


def test_estimators_match_hand_computed_values():
    log = _log([0, 1, 0, 1], [0.5, 0.5, 0.25, 0.75], [1.0, 0.0, 1.0, 1.0])
    target = np.array([[1.0, 0.0]] * 4)  # always arm 0
    w = np.array([2.0, 0.0, 4.0, 0.0])
    assert ips(log, target).value == pytest.approx(np.mean(w * log.rewards))  # 1.5
    assert snips(log, target).value == pytest.approx(1.0)  # (2 + 4) / (2 + 4)
    predicted = np.full((4, 2), 0.5)
    dr = doubly_robust(log, target, predicted).value
    assert dr == pytest.approx(np.mean(0.5 + w * (log.rewards - 0.5)))  # 0.5 + 0.75
    assert effective_sample_size(w) == pytest.approx(36 / 20)


def test_on_policy_weights_give_the_logged_mean_and_full_sample_size():
    rng = np.random.default_rng(0)
    arms = rng.integers(3, size=500)
    log = _log(arms, np.full(500, 1 / 3), rng.random(500) < 0.2 + 0.1 * arms)
    uniform = np.full((500, 3), 1 / 3)
    for est in (ips(log, uniform), snips(log, uniform)):
        assert est.value == pytest.approx(log.rewards.mean())
        assert est.ess == pytest.approx(500)
        assert est.low < est.value < est.high


def test_log_rejects_zero_propensities():
    with pytest.raises(ValueError, match="propensities"):
        _log([0], [0.0], [1.0])


def _trained_state(seed=0, arms=4, dim=3, n=300):
    rng = np.random.default_rng(seed)
    s = prior(arms, dim)
    theta = rng.normal(size=(arms, dim))
    for _ in range(n):
        x = np.concatenate(([1.0], rng.normal(size=dim - 1)))
        a = int(rng.integers(arms))
        update(s, a, x, float(theta[a] @ x + rng.normal()))
    return s, rng


@pytest.mark.parametrize(
    "policy,params",
    [
        ("linucb", PolicyParams(alpha=0.7, epsilon=0.2)),
        ("epsilon_greedy", PolicyParams(epsilon=0.3)),
        ("random", PolicyParams()),
    ],
)
def test_exact_target_probabilities_equal_the_policys_own_propensities(policy, params):
    state, rng = _trained_state()
    X = np.hstack([np.ones((50, 1)), rng.normal(size=(50, 2))])
    probs = target_probabilities(policy, state, X, params, rng)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    for i, x in enumerate(X):
        sel = select(policy, state, x, rng, params)
        assert probs[i, sel.arms[0]] == pytest.approx(sel.propensities[0], rel=1e-12)


@pytest.mark.parametrize(
    "policy,params,exact",
    [
        ("linucb", PolicyParams(alpha=0.7, epsilon=0.2), False),
        ("epsilon_greedy", PolicyParams(epsilon=0.3), False),
        ("random", PolicyParams(), False),
        ("lin_ts", PolicyParams(v=1.5, epsilon=0.1), True),
        ("beta_ts", PolicyParams(epsilon=0.1), True),
    ],
)
def test_candidates_restrict_the_target_to_the_arms_its_request_named(policy, params, exact):
    state, rng = _trained_state(3, arms=5)
    X = np.hstack([np.ones((40, 1)), rng.normal(size=(40, 2))])
    allowed = rng.random((40, 5)) < 0.6
    allowed[0] = [False, True, False, False, False]  # one candidate
    allowed[1] = True
    probs = target_probabilities(policy, state, X, params, rng, exact=exact, candidates=allowed)
    assert (probs[~allowed] == 0).all()
    for i in range(40):
        sub = allowed[i]
        if not sub.any():
            assert (probs[i] == 0).all()
            continue
        alone = target_probabilities(  # the same policy over a state of only those arms
            policy, _arms(state, sub), X[i : i + 1], params, rng, exact=exact
        )[0]
        np.testing.assert_allclose(probs[i, sub], alone, rtol=1e-9, atol=1e-12)


def test_monte_carlo_thompson_probabilities_respect_candidates():
    state, rng = _trained_state(4, arms=5)
    X = np.hstack([np.ones((5, 1)), rng.normal(size=(5, 2))])
    allowed = np.array([[1, 1, 0, 0, 1]] * 5, dtype=bool)
    params = PolicyParams(v=1.5, epsilon=0.1, draws=20000)
    mc = target_probabilities("lin_ts", state, X, params, rng, candidates=allowed)
    exact = target_probabilities("lin_ts", state, X, params, rng, exact=True, candidates=allowed)
    assert (mc[:, 2:4] == 0).all()
    np.testing.assert_allclose(mc, exact, atol=0.01)


def _arms(state, keep: np.ndarray) -> ScoringState:
    return ScoringState(
        A_inv=state.A_inv[keep],
        theta=state.theta[keep],
        n=state.n[keep],
        successes=state.successes[keep],
        failures=state.failures[keep],
    )


def test_thompson_target_probabilities_match_how_often_the_policy_picks_each_arm():
    state, rng = _trained_state(1)
    x = np.array([1.0, 0.3, -0.2])
    params = PolicyParams(v=2.0, epsilon=0.1, draws=20000)
    mc = target_probabilities("lin_ts", state, x[None, :], params, rng)[0]
    exact = target_probabilities("lin_ts", state, x[None, :], params, rng, exact=True)[0]
    picks = (
        np.bincount(
            [
                select("lin_ts", state, x, rng, PolicyParams(v=2.0, epsilon=0.1, draws=10)).arms[0]
                for _ in range(4000)
            ],
            minlength=4,
        )
        / 4000
    )
    np.testing.assert_allclose(exact, mc, atol=0.01)
    np.testing.assert_allclose(exact, picks, atol=0.03)


def test_gaussian_quadrature_matches_a_million_draws():
    rng = np.random.default_rng(3)
    mean, sd = rng.normal(size=5), 0.05 + rng.random(5)
    draws = rng.normal(mean, sd, size=(1_000_000, 5))
    mc = np.bincount(draws.argmax(axis=1), minlength=5) / 1_000_000
    p = gaussian_top_probabilities(mean, sd)
    assert p.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(p, mc, atol=2e-3)


def test_beta_quadrature_matches_a_million_draws():
    rng = np.random.default_rng(4)
    a, b = 1 + rng.integers(0, 30, 4), 1 + rng.integers(0, 60, 4)
    draws = rng.beta(a, b, size=(1_000_000, 4))
    mc = np.bincount(draws.argmax(axis=1), minlength=4) / 1_000_000
    np.testing.assert_allclose(beta_top_probabilities(a, b), mc, atol=2e-3)


def test_intervals_cover_the_true_value_close_to_the_nominal_rate():
    # 95% intervals from 300 logged decisions of lin_ts through bandits.select. Over
    # 3,000 seeds each target and estimator covered 91-95% (the random target lowest:
    # weights up to 20, ESS ~165, a skewed IPS that normal intervals undercover), 93%
    # on average per estimator. Over 400 seeds a coverage near 0.91 has a binomial sd
    # of 0.014: the floor of 0.86 is 3.5 sd below it, and resampled 400-seed sets
    # failed this test 0.1% of the time (a 0.90 floor on 50 seeds: half the time).
    result = ope_study.coverage(range(400), n=300)
    for est in ("ips", "snips", "dr"):
        for target, row in result.items():
            assert row[est] >= 0.86, (target, est, row)
        assert np.mean([row[est] for row in result.values()]) >= 0.90, (est, result)


def test_thompson_propensities_match_the_quadrature_reference():
    # lin_ts logs quadrature propensities; the 2,001-point reference agrees to ~1e-15
    err = ope_study.ts_propensity_error(1000, contexts=300)
    assert err["mean_abs"] < 1e-12
    assert err["p99_rel"] < 1e-10
    assert abs(err["weight_bias"]) < 1e-10
    assert err["clipped"] == 0.0


# --- banditd evaluate, against the Postgres log --------------------------------------

UNIFORM_TOML = """
[experiments.sim]
policy = "random"
arms = ["a", "b", "c"]
reward = { default = 0.0, window_seconds = 900 }

[experiments.sim.features]
numeric = ["f"]
"""


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    evaluate_cmd.add_arguments(parser)
    return parser.parse_args(["--experiment", "sim", "--json", *argv])


@pytest.fixture
def uniform_log(config_file, settings, client, worker):
    """240 decisions of a uniform policy; arm b always pays 1, a and c pay 0."""
    config_file.write_text(textwrap.dedent(UNIFORM_TOML))
    rng = np.random.default_rng(5)
    for _ in range(240):
        body = {"experiment": "sim", "context": {"f": float(rng.random())}}
        answer = client.post("/choose", json=body, headers=AUTH).get_json()
        arm = answer["arms"][0]["arm"]
        reward = {"decision_id": answer["decision_id"], "arm": arm, "reward": float(arm == "b")}
        assert client.post("/reward", json=reward, headers=AUTH).status_code == 202
    worker.run(until_idle=True)
    return settings


def test_evaluate_estimates_a_greedy_config_from_a_uniform_log(uniform_log, engine, capsys):
    assert rows(engine, "SELECT count(*) AS n FROM impression_rewards")[0]["n"] == 240
    args = _args("--set", "policy=epsilon_greedy", "--set", "epsilon=0")
    assert evaluate_cmd.run(args, uniform_log) == 0
    report = json.loads(capsys.readouterr().out)
    assert 110 <= report["decisions"] <= 130  # the window is the second half
    assert report["params_rewards"] == 240 - report["decisions"]
    assert report["target"]["policy"] == "epsilon_greedy"
    for est in report["estimates"]:  # greedy on what it learned picks b: value 1
        assert est["low"] <= 1.0 <= est["high"] and est["value"] > 0.8


def test_evaluate_of_the_logging_policy_recovers_the_logged_mean(uniform_log, capsys):
    assert evaluate_cmd.run(_args(), uniform_log) == 0
    report = json.loads(capsys.readouterr().out)
    ips_est = report["estimates"][0]
    assert ips_est["value"] == pytest.approx(report["logged_mean_reward"])
    assert ips_est["ess"] == pytest.approx(report["decisions"])


def test_evaluate_gives_the_target_the_candidates_each_request_named(
    config_file, settings, client, worker, engine, capsys
):
    """Requests name 2 of the 3 arms: the logging policy's own weights are then exactly 1."""
    config_file.write_text(textwrap.dedent(UNIFORM_TOML))
    rng = np.random.default_rng(6)
    for i in range(120):
        named = [["a", "b"], ["b", "c"], ["a", "c"]][i % 3]
        body = {"experiment": "sim", "context": {"f": float(rng.random())}, "candidates": named}
        answer = client.post("/choose", json=body, headers=AUTH).get_json()
        arm = answer["arms"][0]["arm"]
        assert answer["arms"][0]["propensity"] == 0.5
        reward = {"decision_id": answer["decision_id"], "arm": arm, "reward": float(arm == "b")}
        assert client.post("/reward", json=reward, headers=AUTH).status_code == 202
    worker.run(until_idle=True)
    logged = rows(engine, "SELECT candidates FROM decisions ORDER BY decided_at LIMIT 2")
    assert [r["candidates"] for r in logged] == [["a", "b"], ["b", "c"]]

    assert evaluate_cmd.run(_args(), settings) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mean_weight"] == pytest.approx(1.0)  # 0.5 / 0.5 on every row
    assert report["estimates"][0]["value"] == pytest.approx(report["logged_mean_reward"])


def test_evaluate_rejects_an_unknown_override(config_file, settings, capsys):
    config_file.write_text(textwrap.dedent(UNIFORM_TOML))
    args = _args("--set", "ridge=3")
    assert evaluate_cmd.run(args, settings) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_evaluate_with_live_parameters_reads_the_model_store(uniform_log, capsys):
    args = _args("--params", "live", "--set", "policy=linucb", "--set", "alpha=0")
    assert evaluate_cmd.run(args, uniform_log) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["params"] == "live" and report["params_rewards"] == 240
    assert report["estimates"][1]["value"] > 0.8  # snips: the live model knows b pays
