"""SquareCB: inverse-gap weighting, its gamma schedule, slates, OPE, config, /choose and rebuild."""

import tomllib

import numpy as np
import pytest

from app.config import ConfigError, parse_config
from app.evaluate import target_experiment
from app.rebuild import verify
from bandits import PolicyParams, prior, select, update
from bandits.ope import target_probabilities
from bandits.squarecb import gamma, inverse_gap_probabilities
from tests.conftest import EXPERIMENTS_TOML, choose, reward


def learned_state(seed: int = 0, arms: int = 5, dim: int = 3, n: int = 300):
    rng = np.random.default_rng(seed)
    s = prior(arms, dim)
    for _ in range(n):
        a = int(rng.integers(arms))
        x = np.r_[1.0, rng.random(dim - 1)]
        update(s, a, x, float(rng.random() < 0.1 + 0.15 * a / arms))
    return s


def formula(pred: np.ndarray, g: float) -> np.ndarray:
    """The inverse-gap rule written out: 1 / (C + g * gap) off the best, the rest on it."""
    c = pred.size
    best = int(np.argmax(pred))
    p = np.array([1.0 / (c + g * (pred[best] - pred[a])) for a in range(c)])
    p[best] = 1.0 - (p.sum() - p[best])
    return p


def test_propensities_sum_to_one_and_equal_the_inverse_gap_formula():
    s = learned_state()
    x = np.array([1.0, 0.3, 0.8])
    g = gamma(s.n.sum(), 10.0, 0.5)
    pred = s.theta @ x
    p = inverse_gap_probabilities(pred, g)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(p, formula(pred, g), rtol=1e-12)
    for seed in range(20):
        sel = select("squarecb", s, x, np.random.default_rng(seed), PolicyParams())
        assert sel.propensities[0] == pytest.approx(p[sel.arms[0]], rel=1e-12)
        assert sel.scores[0] == pred[sel.arms[0]] and not sel.estimated


def test_draws_follow_the_propensities():
    s = learned_state(1)
    x = np.array([1.0, 0.5, 0.5])
    rng = np.random.default_rng(3)
    n = 20_000
    counts = np.bincount(
        [select("squarecb", s, x, rng, PolicyParams(gamma_scale=2.0)).arms[0] for _ in range(n)],
        minlength=5,
    )
    p = inverse_gap_probabilities(s.theta @ x, gamma(s.n.sum(), 2.0, 0.5))
    assert np.abs(counts / n - p).max() < 4.5 * np.sqrt(p * (1 - p) / n).max()


def test_gamma_grows_as_scale_times_t_to_the_exponent():
    assert gamma(0, 10.0, 0.5) == 0.0  # nothing learned: uniform
    assert gamma(400, 10.0, 0.5) == pytest.approx(200.0)
    assert gamma(1000, 3.0, 0.0) == 3.0
    x = np.array([1.0, 0.2, 0.9])
    young, old = learned_state(2, n=50), learned_state(2, n=5000)
    for s in (young, old):  # t is what the arms have learned, so the policy gets greedier
        params = PolicyParams(gamma_scale=7.0, gamma_exponent=0.7)
        sel = select("squarecb", s, x, np.random.default_rng(0), params, k=5)
        pred = s.theta @ x
        assert sel.propensities[0] == pytest.approx(
            formula(pred, 7.0 * s.n.sum() ** 0.7)[sel.arms[0]], rel=1e-12
        )
    uniform = select("squarecb", prior(4, 2), np.ones(2), np.random.default_rng(0), PolicyParams())
    assert uniform.propensities[0] == 0.25


def test_slates_are_drawn_slot_by_slot_over_the_remaining_arms():
    s = learned_state(4)
    x = np.array([1.0, 0.7, 0.1])
    params = PolicyParams(gamma_scale=3.0, epsilon=0.1)
    g = gamma(s.n.sum(), 3.0, 0.5)
    pred = s.theta @ x
    sel = select("squarecb", s, x, np.random.default_rng(5), params, k=5)
    left = list(range(5))
    for j, arm in enumerate(sel.arms):
        p = 0.9 * formula(pred[left], g) + 0.1 / len(left)
        assert sel.propensities[j] == pytest.approx(p[left.index(arm)], rel=1e-12)
        left.remove(arm)
    assert sel.propensities[-1] == 1.0 and sorted(sel.arms.tolist()) == list(range(5))
    sub = select("squarecb", s, x, np.random.default_rng(5), params, k=2, candidates=[4, 1, 2])
    assert set(sub.arms.tolist()) <= {1, 2, 4}
    assert sub.propensities[0] == pytest.approx(
        (0.9 * formula(pred[[4, 1, 2]], g) + 0.1 / 3)[[4, 1, 2].index(sub.arms[0])], rel=1e-12
    )


def test_the_same_seed_gives_the_same_slate():
    s = learned_state(6)
    x = np.array([1.0, 0.4, 0.4])
    a = select("squarecb", s, x, np.random.default_rng(9), PolicyParams(), k=3)
    b = select("squarecb", s, x, np.random.default_rng(9), PolicyParams(), k=3)
    assert a.arms.tolist() == b.arms.tolist()
    np.testing.assert_array_equal(a.propensities, b.propensities)


def test_off_policy_target_probabilities_are_the_policys_own():
    s = learned_state(7)
    rng = np.random.default_rng(8)
    X = np.c_[np.ones(30), rng.random((30, 2))]
    allowed = rng.random((30, 5)) < 0.7
    allowed[:, 0] = True
    params = PolicyParams(gamma_scale=5.0, epsilon=0.05)
    probs = target_probabilities("squarecb", s, X, params, rng, candidates=allowed)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    assert (probs[~allowed] == 0).all()
    for i in range(30):
        cand = np.flatnonzero(allowed[i])
        sel = select("squarecb", s, X[i], np.random.default_rng(i), params, candidates=cand)
        assert probs[i, sel.arms[0]] == pytest.approx(sel.propensities[0], rel=1e-12)


def config(extra: str, policy: str = "squarecb") -> dict:
    return tomllib.loads(f'[experiments.e]\npolicy = "{policy}"\narms = ["a", "b"]\n' + extra)


@pytest.mark.parametrize(
    "extra, message",
    [
        ("gamma_scale = -1", "experiments.e.gamma_scale must be >= 0.0, got -1"),
        ("gamma_exponent = 1.5", "experiments.e.gamma_exponent must be <= 1.0, got 1.5"),
        ('gamma_scale = "big"', "experiments.e.gamma_scale must be a finite number, got 'big'"),
        ("gamma_exponent = -0.1", "experiments.e.gamma_exponent must be >= 0.0, got -0.1"),
    ],
)
def test_bad_gamma_settings_are_refused_with_a_clear_message(extra, message):
    with pytest.raises(ConfigError) as err:
        parse_config(config(extra))
    assert message in str(err.value)


def test_squarecb_config_defaults_to_vowpal_wabbits_schedule_and_keeps_other_versions():
    exp = parse_config(config("")).get("e")
    assert (exp.params.gamma_scale, exp.params.gamma_exponent) == (10.0, 0.5)
    assert exp.settings["gamma_scale"] == 10.0 and exp.settings["gamma_exponent"] == 0.5
    tuned = parse_config(config("gamma_scale = 30\ngamma_exponent = 0.4")).get("e")
    assert tuned.params.gamma_scale == 30.0 and tuned.version != exp.version
    assert tuned.model_id == exp.model_id  # exploration knobs keep the learned model
    other = parse_config(config("", "linucb")).get("e")
    assert "gamma_scale" not in other.settings  # existing configs keep their versions


def test_evaluate_can_target_squarecb_with_its_own_gamma():
    exp = parse_config(config("", "linucb")).get("e")
    target = target_experiment(exp, ["policy=squarecb", "gamma_scale=30", "gamma_exponent=0.4"])
    assert target.policy == "squarecb"
    assert (target.params.gamma_scale, target.params.gamma_exponent) == (30.0, 0.4)
    with pytest.raises(ConfigError, match="gamma_exponent must be <= 1.0"):
        target_experiment(exp, ["policy=squarecb", "gamma_exponent=2"])


SQUARECB_TOML = """
[experiments.jobs]
policy = "squarecb"
gamma_scale = 20.0
epsilon = 0.05
ridge = 2.0
arms = ["cleaning", "kitchen", "warehouse", "delivery"]
reward = { default = 0.0, window_seconds = 60, min = 0.0, max = 1.0 }

[experiments.jobs.features]
numeric = ["hour"]
categorical = { city = ["berlin", "hamburg"] }
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "experiments.toml"
    path.write_text(EXPERIMENTS_TOML + SQUARECB_TOML)
    return path


def test_choose_serves_squarecb_slates_and_rebuild_reproduces_the_learning(
    client, worker, redis_client, engine
):
    rng = np.random.default_rng(11)
    for i in range(60):
        context = {"hour": int(rng.integers(24)), "city": str(rng.choice(["berlin", "hamburg"]))}
        answer = choose(client, experiment="jobs", context=context, k=2)
        assert answer.status_code == 200, answer.get_json()
        body = answer.get_json()
        assert all(0 < a["propensity"] <= 1 for a in body["arms"])
        for slot in body["arms"]:
            value = float(rng.random() < (0.7 if slot["arm"] == "kitchen" else 0.2))
            assert reward(client, body["decision_id"], slot["arm"], value).status_code == 202
        if i % 20 == 19:
            worker.run(until_idle=True)
    checked = verify(redis_client, engine, "jobs")
    assert checked.ok and checked.max_difference == 0.0
    assert sum(a.n_live for a in checked.arms) == 120
