"""forgetting = "auto": the per-arm change detector, its determinism, config and rebuild."""

import tomllib

import numpy as np
import pytest

from app.config import AUTO_FORGETTING, ConfigError, parse_config
from app.rebuild import verify
from bandits import prior, update
from bandits.auto_forgetting import (
    AUTO,
    BASE,
    DROP,
    RECENT,
    auto_discounts,
    change_score,
)
from bandits.item_layout import ItemLayout
from bandits.item_models import hybrid_prior, hybrid_update, shared_prior, shared_update
from tests.conftest import EXPERIMENTS_TOML, choose, reward

FIELDS = ("A", "A_inv", "b", "theta", "n", "successes", "failures")


def bernoulli_stream(rng, rate, n, dim=3):
    for _ in range(n):
        x = np.r_[1.0, rng.random(dim - 1)]
        yield x, float(rng.random() < rate(x))


def discounts_while_learning(state, events, arm=0):
    """Learn ``events`` with AUTO; the model discount the detector chose before each one."""
    chosen = []
    for x, r in events:
        chosen.append(auto_discounts(state, arm, 1.0)[0])
        update(state, arm, x, r, discount=AUTO)
    return np.array(chosen)


def test_a_stationary_arm_keeps_its_long_memory():
    rng = np.random.default_rng(0)
    s = prior(1, 3)
    chosen = discounts_while_learning(s, bernoulli_stream(rng, lambda x: 0.05 + 0.1 * x[1], 20_000))
    assert (chosen == BASE).mean() >= 0.999  # the fast discount (almost) never fires
    assert s.failures[0] + s.successes[0] == pytest.approx(1 / (1 - RECENT), rel=1e-6)


def shared_stream(rng, layout, rate, n):
    """``n`` (phi, reward) of a shared model whose every reward has mean ``rate``."""
    for _ in range(n):
        x = np.r_[1.0, rng.random(layout.context_dim - 1)]
        phi = layout.features(x, rng.random((1, layout.item_dim)))[0]
        yield phi, float(rng.random() < rate)


def test_a_shared_item_model_keeps_everything_until_its_level_clearly_changes():
    rng = np.random.default_rng(6)
    layout = ItemLayout.all_pairs(3, 2)
    auto, kept = shared_prior(layout.dim), shared_prior(layout.dim)
    for phi, r in shared_stream(rng, layout, 0.3, 3000):  # nothing moves: no discount at all
        shared_update(auto, phi, r, discount=AUTO, level=layout.level_column)
        shared_update(kept, phi, r)
    for name in ("A", "A_inv", "b", "theta"):
        np.testing.assert_array_equal(getattr(auto, name), getattr(kept, name))
    for phi, r in shared_stream(rng, layout, 0.8, 500):  # a clear change: the old level goes
        shared_update(auto, phi, r, discount=AUTO, level=layout.level_column)
        shared_update(kept, phi, r)
    level = layout.level_column
    means = [s.b[0, level] / s.A[0, level, level] for s in (auto, kept)]
    assert abs(means[0] - 0.8) < 0.1 < abs(means[1] - 0.8)


def test_a_hybrid_item_part_forgets_as_a_per_arm_model_and_its_shared_part_keeps_everything():
    rng = np.random.default_rng(7)
    layout = ItemLayout.all_pairs(3, 2)
    state, alone = hybrid_prior(1, 3, layout.dim), prior(1, 3)
    kept = hybrid_prior(1, 3, layout.dim)
    for t in range(2000):
        x = np.r_[1.0, rng.random(2)]
        phi = layout.features(x, rng.random((1, 2)))[0]
        r = float(rng.random() < (0.2 if t < 1500 else 0.7))
        chosen = auto_discounts(state.arms, 0, 1.0)[0]
        assert chosen == auto_discounts(alone, 0, 1.0)[0]  # the item part's own detector
        hybrid_update(state, 0, x, phi, r, discount=AUTO)
        hybrid_update(kept, 0, x, phi, r)
        update(alone, 0, x, r, discount=AUTO)
    for name in ("A", "b", "successes", "failures"):  # the per-item part: the per-arm model's
        np.testing.assert_array_equal(getattr(state.arms, name), getattr(alone, name))
    assert not np.allclose(state.arms.A, kept.arms.A)  # it did forget
    assert state.shared.A[0, 0, 0] > 0.9 * kept.shared.A[0, 0, 0]  # the shared part barely did


def test_after_a_swap_the_arm_forgets_fast_then_settles_back():
    rng = np.random.default_rng(1)
    s = prior(1, 3)
    before = discounts_while_learning(s, bernoulli_stream(rng, lambda x: 0.1, 5_000))
    after = discounts_while_learning(s, bernoulli_stream(rng, lambda x: 0.6, 3_000))
    assert (before == DROP).sum() == 0
    first = int(np.argmax(after == DROP))
    assert after[first] == DROP and first < 100  # detected within 100 updates
    assert (after[-1000:] == BASE).all()  # caught up: back to the long memory
    level = s.b[0, 0] / s.A[0, 0, 0]
    assert level == pytest.approx(0.6, abs=0.05)
    assert abs(change_score(s, 0, 1.0, 0.0, 1.0)) < 3.0


def test_a_fixed_factor_would_still_remember_the_old_rewards():
    rng = np.random.default_rng(1)
    auto, fixed = prior(1, 3), prior(1, 3)
    events = list(bernoulli_stream(rng, lambda x: 0.1, 5_000)) + list(
        bernoulli_stream(rng, lambda x: 0.6, 300)
    )
    for x, r in events:
        update(auto, 0, x, r, discount=AUTO)
        update(fixed, 0, x, r, discount=BASE)
    level = [s.b[0, 0] / s.A[0, 0, 0] for s in (auto, fixed)]
    assert abs(level[0] - 0.6) < abs(level[1] - 0.6) - 0.1


def test_replaying_the_same_rewards_gives_the_same_state_bit_for_bit():
    rng = np.random.default_rng(2)
    events = [(int(rng.integers(3)), x, r) for x, r in bernoulli_stream(rng, lambda x: 0.3, 3000)]
    events += [(a, x, 1.0 - r) for a, x, r in events[:1500]]  # a change halfway through
    first, second = prior(3, 3, 0.5), prior(3, 3, 0.5)
    for state in (first, second):
        for arm, x, r in events:
            update(state, arm, x, r, discount=AUTO, ridge=0.5)
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))


def test_reward_range_rescales_the_models_level():
    rng = np.random.default_rng(3)
    s = prior(1, 2)
    for _ in range(500):
        r = 1.0 + 4.0 * float(rng.random() < 0.3)  # rewards 1 or 5
        update(s, 0, np.array([1.0, 0.5]), r, success=(r - 1) / 4, discount=AUTO)
    assert abs(change_score(s, 0, 1.0, 1.0, 5.0)) < 3.0
    assert abs(change_score(s, 0, 1.0, 0.0, 1.0)) > 3.0  # the wrong range looks like a change


def experiment(forgetting: str, intercept: str = "true"):
    return tomllib.loads(
        '[experiments.e]\npolicy = "linucb"\narms = ["a", "b"]\n'
        f"forgetting = {forgetting}\n"
        f'features = {{ numeric = ["h"], intercept = {intercept} }}\n'
    )


def test_config_accepts_auto_and_refuses_other_words_and_auto_without_intercept():
    exp = parse_config(experiment('"auto"')).get("e")
    assert exp.forgetting == AUTO_FORGETTING and exp.settings["forgetting"] == "auto"
    assert parse_config(experiment("0.99")).get("e").forgetting == 0.99
    with pytest.raises(ConfigError, match='forgetting must be a number in \\[0.5, 1\\] or "auto"'):
        parse_config(experiment('"fast"'))
    with pytest.raises(ConfigError, match='forgetting must be <= 1.0, got 2 \\(or "auto"\\)'):
        parse_config(experiment("2"))
    with pytest.raises(ConfigError, match="needs the intercept"):
        parse_config(experiment('"auto"', "false"))


AUTO_TOML = """
[experiments.jobs]
policy = "lin_ts"
v = 0.3
forgetting = "auto"
ridge = 2.0
position_weights = [1.0, 0.6]
arms = ["cleaning", "kitchen", "warehouse", "delivery"]
reward = { default = 1.0, window_seconds = 60, min = 1.0, max = 5.0 }

[experiments.jobs.features]
numeric = ["hour"]
categorical = { city = ["berlin", "hamburg"] }
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "experiments.toml"
    path.write_text(EXPERIMENTS_TOML + AUTO_TOML)
    return path


def test_worker_learns_auto_forgetting_and_rebuild_verifies_at_difference_zero(
    client, worker, redis_client, engine
):
    rng = np.random.default_rng(4)
    for i in range(160):
        context = {"hour": int(rng.integers(24)), "city": str(rng.choice(["berlin", "hamburg"]))}
        body = choose(client, experiment="jobs", context=context, k=2).get_json()
        good = "kitchen" if i < 80 else "delivery"  # the best arm changes halfway
        for slot in body["arms"]:
            value = 5.0 if rng.random() < (0.8 if slot["arm"] == good else 0.1) else 1.0
            assert reward(client, body["decision_id"], slot["arm"], value).status_code == 202
        if i % 40 == 39:
            worker.run(until_idle=True)
    checked = verify(redis_client, engine, "jobs")
    assert checked.ok and checked.max_difference == 0.0
    assert sum(a.n_live for a in checked.arms) == 320
    for arm in checked.replay.arms.values():  # the worker applied auto: counts discounted at RECENT
        updates = int(arm.n[0])
        expected = (1 - RECENT**updates) / (1 - RECENT)
        assert arm.successes[0] + arm.failures[0] == pytest.approx(expected, rel=1e-9)
