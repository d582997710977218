"""The simulation suite: environments, runner, peers, banditd simulate (in-process and HTTP)."""

import argparse
import textwrap
import tomllib

import numpy as np
import pytest

from app import simulate
from app.config import parse_config
from bandits import PolicyParams, prior
from bandits.simulation import (
    Drifting,
    SyntheticLinear,
    banditd_factory,
    lineup,
    markdown_table,
    run,
)
from bandits.simulation.runner import seed_streams
from tests.conftest import AUTH, rows

# rates 10-90%: a strong signal, so a few hundred rounds tell policies apart
EASY = {"n_arms": 3, "dim": 2, "low": 0.1, "base_spread": 0.5, "context_spread": 0.3}


def test_synthetic_click_rates_stay_between_5_and_15_percent():
    ep = SyntheticLinear().episode(5000, np.random.default_rng(0))
    assert ep.features.shape == (5000, 5) and ep.means.shape == (5000, 5)
    assert 0.05 <= ep.means.min() and ep.means.max() <= 0.15
    assert set(np.unique(ep.rewards)) <= {0.0, 1.0}
    assert 0.05 < ep.rewards.mean() < 0.15
    assert len(set(ep.means.argmax(axis=1))) > 1  # the best arm depends on the context


def test_episodes_are_reproducible_from_the_seed():
    a = SyntheticLinear().episode(100, seed_streams(3)[0])
    b = SyntheticLinear().episode(100, seed_streams(3)[0])
    np.testing.assert_array_equal(a.rewards, b.rewards)
    np.testing.assert_array_equal(a.features, b.features)


def test_drifting_changes_the_best_arm_halfway():
    ep = Drifting(**EASY).episode(1000, np.random.default_rng(1))
    before, after = ep.means[:500].argmax(axis=1), ep.means[500:].argmax(axis=1)
    assert np.bincount(before).argmax() != np.bincount(after).argmax()


def test_digits_is_a_ten_arm_bandit_paying_for_the_true_class():
    pytest.importorskip("sklearn")
    from bandits.simulation import Digits

    ep = Digits().episode(300, np.random.default_rng(2))
    assert ep.features.shape == (300, 20) and ep.n_arms == 10
    np.testing.assert_array_equal(ep.rewards, ep.means)
    np.testing.assert_array_equal(ep.means.sum(axis=1), 1.0)


class Oracle:
    """Knows the episode: picks the best arm of each round in turn."""

    def __init__(self, env, rounds, seed):
        self.best = env.episode(rounds, seed_streams(seed)[0]).means.argmax(axis=1)
        self.t = -1

    def choose(self, z):
        self.t += 1
        return int(self.best[self.t])

    def learn(self, z, arm, reward):
        pass


def test_an_oracle_has_zero_regret_and_earns_the_optimum():
    env = SyntheticLinear()
    result = run(env, "oracle", lambda k, d, rng, seed: Oracle(env, 400, seed), 400, [0, 1])
    np.testing.assert_array_equal(result.regret, 0.0)
    assert result.mean_reward.mean() == pytest.approx(result.best.mean())
    summary = result.summary()
    assert summary["seeds"] == 2 and summary["rounds"] == 400
    assert summary["rounds_per_second"] > 0


def test_linucb_learns_far_better_than_random():
    env = SyntheticLinear(**EASY)
    linucb = run(env, "linucb", banditd_factory("linucb", PolicyParams(alpha=0.3)), 600, [0, 1, 2])
    uniform = run(env, "random", banditd_factory("random"), 600, [0, 1, 2])
    assert linucb.regret.max() < 0.5 * uniform.regret.min()
    table = markdown_table([linucb, uniform])
    assert "| synthetic | linucb | 600 × 3 |" in table


def test_forgetting_recovers_after_the_change_and_never_forgetting_does_not():
    env = Drifting(**EASY)
    params = PolicyParams(alpha=0.3)
    stationary = run(env, "linucb", banditd_factory("linucb", params), 2000, [0, 1, 2])
    forgetful = run(
        env, "linucb γ", banditd_factory("linucb", params, discount=0.98), 2000, [0, 1, 2]
    )
    assert forgetful.second_half.mean() > stationary.second_half.mean() + 0.02


def test_lineup_adds_forgetting_and_only_installed_peers():
    names = [e.name for e in lineup("drifting", installed={"mabwiser": False, "vw": True})]
    assert "banditd linucb α=0.3 γ=0.99" in names
    assert any(n.startswith("VW") for n in names)
    assert not any(n.startswith("MABWiser") for n in names)
    assert all(e.stationary for e in lineup("synthetic", peers=False) if "γ" not in e.name)


@pytest.mark.parametrize("peer", ["mabwiser_linucb", "mabwiser_lints", "vw_squarecb", "vw_egreedy"])
def test_peers_play_and_learn(peer):
    from bandits.simulation import peers

    library = "mabwiser" if peer.startswith("mabwiser") else "vowpalwabbit"
    pytest.importorskip(library)
    factory = {
        "mabwiser_linucb": lambda: peers.mabwiser_factory("linucb", 0.3),
        "mabwiser_lints": lambda: peers.mabwiser_factory("lints", 0.1),
        "vw_squarecb": lambda: peers.vw_factory("--squarecb"),
        "vw_egreedy": lambda: peers.vw_factory("--epsilon 0.05"),
    }[peer]()
    env = SyntheticLinear(**EASY)
    learned = run(env, peer, factory, 600, [0])
    uniform = run(env, "random", banditd_factory("random"), 600, [0])
    assert learned.regret[0] < uniform.regret[0]


def _sim_args(*argv):
    parser = argparse.ArgumentParser()
    simulate.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_simulate_command_prints_the_table(settings, capsys, tmp_path):
    out = tmp_path / "table.md"
    args = _sim_args(
        "--env", "synthetic", "--rounds", "200", "--seeds", "2", "--no-peers", "--output", str(out)
    )
    assert simulate.run(args, settings) == 0
    printed = capsys.readouterr().out
    assert "| synthetic | banditd linucb α=0.3 | 200 × 2 |" in printed
    assert out.read_text() == printed.rstrip("\n") + "\n"


def test_print_config_is_a_valid_experiments_file(settings, capsys):
    args = _sim_args("--print-config", "--env", "synthetic", "--seeds", "2")
    assert simulate.run(args, settings) == 0
    config = parse_config(tomllib.loads(capsys.readouterr().out))
    assert sorted(config.experiments) == [
        "sim_synthetic_lin_ts_a1_e0_v0p1_0",
        "sim_synthetic_lin_ts_a1_e0_v0p1_1",
        "sim_synthetic_linucb_a0p3_e0_v1_0",
        "sim_synthetic_linucb_a0p3_e0_v1_1",
    ]
    exp = config.experiments["sim_synthetic_linucb_a0p3_e0_v1_0"]
    assert exp.params.alpha == 0.3 and exp.features.dim == 6 and len(exp.arms) == 5


class FlaskTransport:
    """The service through Flask's test client; the worker runs every ``lag`` rewards."""

    def __init__(self, client, worker, lag):
        self.client, self.worker, self.lag, self.rewards = client, worker, lag, 0

    def post(self, path, body):
        response = self.client.post(path, json=body, headers=AUTH)
        assert response.status_code in (200, 202), response.get_json()
        if path == "/reward":
            self.rewards += 1
            if self.rewards % self.lag == 0:
                self.worker.run(until_idle=True)
        return response.get_json()


def test_through_the_service_every_round_is_logged_and_learned(
    config_file, settings, client, worker, engine
):
    # How well the service learns is measured over thousands of rounds (tests/test_e2e.py,
    # docs/LEARNING.md); 300 rounds are too few for a learning bound that cannot flake.
    env = SyntheticLinear(**EASY)
    spec = simulate.PolicySpec.parse("linucb:alpha=0.3")
    config_file.write_text(textwrap.dedent(simulate.experiments_toml("t_", [env], [spec], [0])))
    [(sync, remote)] = simulate.compare_through_service(
        FlaskTransport(client, worker, lag=10), [env], [spec], {env.name: 300}, (0,), "t_"
    )
    worker.run(until_idle=True)
    assert rows(engine, "SELECT count(*) AS n FROM decisions")[0]["n"] == 300
    assert rows(engine, "SELECT count(*) AS n FROM rewards WHERE kind = 'explicit'")[0]["n"] == 300
    assert len(remote.mean_reward) == len(sync.mean_reward) == 1
    assert "| synthetic | linucb α=0.3 |" in simulate.ratio_table([(sync, remote)])


def test_policy_spec_rejects_unknown_policies_and_knobs():
    with pytest.raises(ValueError, match="unknown policy"):
        simulate.PolicySpec.parse("ucb2")
    with pytest.raises(ValueError, match="knobs"):
        simulate.PolicySpec.parse("linucb:gamma=0.9")


def test_toml_round_trips_through_tomllib():
    text = simulate.experiments_toml(
        "x_", [SyntheticLinear()], [simulate.PolicySpec.parse("random")], [0]
    )
    assert "x_synthetic_random_a1_e0_v1_0" in tomllib.loads(text)["experiments"]


def test_targets_table_pairs_banditd_best_with_every_stationary_peer_on_drift():
    env = Drifting(**EASY)
    params = PolicyParams(alpha=0.3)
    results = [
        run(env, "banditd linucb", banditd_factory("linucb", params), 600, [0, 1]),
        run(
            env,
            "banditd linucb γ=0.98",
            banditd_factory("linucb", params, discount=0.98),
            600,
            [0, 1],
        ),
        run(env, "peer uniform", banditd_factory("random"), 600, [0, 1]),
    ]
    table = simulate.targets_table([simulate.per_seed(r) for r in results])
    lines = table.splitlines()
    assert len(lines) == 4  # header, rule, mean reward vs best peer, second half vs the one peer
    assert "| drifting | mean reward |" in lines[2] and "peer uniform" in lines[2]
    assert "| drifting | second half | banditd linucb γ=0.98" in lines[3]
    assert lines[3].endswith("| 2 of 2 |")


def test_delayed_rewards_are_learned_late_and_pending_updates_end_at_the_sync_state():
    from bandits.simulation import BanditdAgent

    rng = np.random.default_rng(6)
    params = PolicyParams(alpha=0.3)
    sync = BanditdAgent("linucb", 3, 2, np.random.default_rng(0), params)
    late = BanditdAgent("linucb", 3, 2, np.random.default_rng(0), params, delay=5)
    pending = BanditdAgent("linucb", 3, 2, np.random.default_rng(0), params, delay=5, pending=True)
    for _ in range(40):
        z = rng.random(2)
        arm = pending.choose(z)
        reward = float(rng.random() < 0.5)
        for agent in (sync, late, pending):
            agent.learn(z, arm, reward)
    assert late.state.n.sum() == 35  # five rewards still queued
    assert pending.state.n.sum() == 40  # every context learned when it was chosen
    pending.flush()
    late.flush()
    for agent in (late, pending):
        np.testing.assert_allclose(agent.state.A, sync.state.A, rtol=1e-12)
        np.testing.assert_allclose(agent.state.b, sync.state.b, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(agent.state.theta, sync.state.theta, rtol=1e-9, atol=1e-12)


def test_the_items_study_plays_the_item_models_through_the_service(
    config_file, settings, client, worker, engine
):
    from app.item_models import study as items_study
    from bandits.simulation.item_world import ItemWorld

    world = ItemWorld()
    config_file.write_text(items_study.experiments_toml("t_", world, [0], 1.0))
    results = items_study.compare(
        world, 300, [0], 1.0, transport=FlaskTransport(client, worker, lag=10), prefix="t_"
    )
    worker.run(until_idle=True)
    assert {"random", "disjoint", "shared_linucb", "http_shared_linucb", "http_disjoint"} <= set(
        results
    )
    # every round of both service agents is logged and learned; the shared one by its features
    assert rows(engine, "SELECT count(*) AS n FROM decisions")[0]["n"] == 600
    assert rows(engine, "SELECT count(*) AS n FROM rewards WHERE kind = 'explicit'")[0]["n"] == 600
    logged = rows(
        engine,
        "SELECT count(*) AS n FROM impressions WHERE experiment = 't_items_shared_linucb_s0' "
        "AND cardinality(item_vector) = 6",
    )
    assert logged[0]["n"] == 300
    report = items_study.report(results, world, 300)
    assert "| http_shared_linucb |" in report and "Targets:" in report


def test_the_forgetting_study_compares_auto_with_every_fixed_factor_on_every_world(capsys):
    from bandits.simulation import forgetting_study

    assert forgetting_study.main(["--seeds", "1", "--rounds", "300", "--processes", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| world")]
    assert len(rows) == len(forgetting_study.WORLDS) * len(forgetting_study.POLICIES)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        sides = len(forgetting_study.SIDE_BY_SIDE)
        none, *fixed, auto, over_none, over_best = (float(c) for c in cells[2 : -1 - sides])
        assert len(fixed) == len(forgetting_study.FIXED)
        assert over_none == pytest.approx(auto / none, abs=3e-3)  # of the 4-digit means
        assert over_best == pytest.approx(auto / max(fixed), abs=3e-3)
        oracle = cells[-1 - sides]
        assert (oracle != "") == cells[0].startswith("drifting")  # the oracle's ceiling
        assert all(0.5 < float(c) < 2.0 for c in cells[-sides:])  # ratios to the best fixed


def test_the_oracle_forgets_everything_at_the_change_and_nothing_else():
    from bandits.simulation.forgetting_study import ResetAtChange

    rng = np.random.default_rng(0)
    agent = ResetAtChange("linucb", 2, 1, rng, PolicyParams(alpha=0.3))
    agent.change = 3
    z = np.array([0.5])
    for _ in range(3):
        agent.learn(z, agent.choose(z), 1.0)
    learned = agent.state.A.copy()
    # the priors' traces (2 arms x 2 columns) and three updates of x = (1, 0.5), none forgotten
    assert np.einsum("aii->", learned) == pytest.approx(4.0 + 3 * 1.25)
    agent.choose(z)  # round 3: the change
    assert np.array_equal(agent.state.A, prior(2, 2).A)


def test_side_by_side_chooses_with_the_factor_that_predicts_the_latest_rewards_best():
    from bandits.simulation.side_by_side import FACTORS, SideBySide

    z = np.array([0.5])
    for scope in ("arm", "experiment"):
        greedy = PolicyParams(alpha=0.01)
        agent = SideBySide("linucb", 3, 1, np.random.default_rng(0), greedy, scope=scope)
        for _ in range(300):  # arm 0 pays nothing, then always; arm 1 half
            agent.learn(z, 0, 0.0)
            agent.learn(z, 1, 0.5)
        for _ in range(60):
            agent.learn(z, 0, 1.0)
        fastest = FACTORS.index(min(FACTORS))
        assert agent.picked[0] == fastest
        if scope == "experiment":
            assert list(agent.picked) == [fastest] * 3
        else:  # arm 2 never learned: it keeps the first factor, and the view holds its prior
            assert agent.picked[2] == 0
            assert np.array_equal(agent.view.A[2], prior(1, 2).A[0])
            assert np.array_equal(agent.view.theta[0], agent.states[fastest].theta[0])
        # arm 0's latest rewards (1) beat arm 1's (0.5) only under the fast factor
        assert agent.choose(z) == 0
        assert float(agent.states[0].theta[0] @ [1.0, 0.5]) < 0.5


def _result(env, agent, mean_reward, second_half):
    return {
        "environment": env,
        "agent": agent,
        "mean_reward": float(np.mean(mean_reward)),
        "second_half": float(np.mean(second_half)),
        "per_seed": {"mean_reward": mean_reward, "second_half": second_half},
    }


def test_service_peers_table_pairs_each_service_run_with_the_best_peer():
    remote = [
        _result("drifting", "linucb HTTP, async", [0.10, 0.12], [0.20, 0.22]),
        _result("synthetic", "squarecb HTTP, async", [0.30, 0.30], [0.3, 0.3]),
    ]
    peers = [
        _result("drifting", "VW a", [0.11, 0.11], [0.10, 0.10]),  # best mean reward
        _result("drifting", "VW b", [0.05, 0.05], [0.25, 0.19]),  # best second half
        _result("synthetic", "VW a", [0.20, 0.30], [0.3, 0.3]),
    ]
    lines = simulate.service_peers_table(remote, peers).splitlines()[2:]
    assert lines == [
        "| drifting | mean reward | linucb HTTP, async (0.1100) | VW a (0.1100) | 1.000 "
        "| +0.0000 ± 0.0141 | 1 of 2 |",
        "| drifting | second half | linucb HTTP, async (0.2100) | VW b (0.2200) | 0.955 "
        "| -0.0100 ± 0.0566 | 1 of 2 |",
        "| synthetic | mean reward | squarecb HTTP, async (0.3000) | VW a (0.2500) | 1.200 "
        "| +0.0500 ± 0.0707 | 1 of 2 |",
    ]


def test_peers_for_a_service_run_play_the_same_episodes_as_the_suite():
    env = SyntheticLinear(**EASY)
    [result] = [
        r
        for r in simulate.run_peers([env], {env.name: 60}, (0, 1), {"vw": True})
        if r.agent == "VW squarecb"
    ]
    suite = run(env, "VW squarecb", lineup_entry(env.name, "VW squarecb").build(), 60, (0, 1))
    np.testing.assert_array_equal(result.mean_reward, suite.mean_reward)


def lineup_entry(env_name, name):
    return next(e for e in lineup(env_name) if e.name == name)


def test_an_unknown_peer_library_is_refused(settings, capsys):
    args = _sim_args("--env", "synthetic", "--peers", "vw,nosuchlib")
    assert simulate.run(args, settings) == 2
    assert "no peer library named 'nosuchlib' (known: mabwiser, vw)" in capsys.readouterr().err


@pytest.mark.parametrize("url", ["ftp://x", "http://", "http://host:port"])
def test_a_url_that_is_not_http_host_port_is_refused(settings, capsys, url):
    args = _sim_args("--url", url, "--env", "synthetic", "--seeds", "1", "--rounds", "5")
    assert simulate.run(args, settings) == 2
    assert f"--url must be http://host:port, got {url!r}" in capsys.readouterr().err
