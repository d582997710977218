"""The short-lived item environment and the in-process item study on it."""

from __future__ import annotations

import numpy as np
import pytest

from bandits.simulation.item_study import Settings, markdown_table, study
from bandits.simulation.item_world import ItemWorld
from bandits.policy import PolicyParams

FIELDS = ("features", "items", "born", "dies", "candidates", "means", "rewards", "hidden")


def test_an_episode_is_a_function_of_its_seed():
    world = ItemWorld()
    a = world.episode(600, np.random.default_rng(11))
    b = world.episode(600, np.random.default_rng(11))
    c = world.episode(600, np.random.default_rng(12))
    for field in FIELDS:
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert not np.array_equal(a.means, c.means)


def test_about_two_hundred_items_are_alive_and_offers_come_from_them():
    world = ItemWorld()
    ep = world.episode(1500, np.random.default_rng(1))
    counts = np.array([ep.alive(t).size for t in range(ep.rounds)])
    assert 185 <= counts.mean() <= 215
    lives = ep.dies - ep.born
    assert lives.min() >= 200 and lives.max() <= 400
    t = np.arange(ep.rounds)[:, None]
    offered = ep.candidates
    assert ((ep.born[offered] <= t) & (ep.dies[offered] > t)).all()
    assert all(np.unique(row).size == world.offered for row in offered)
    assert ep.n_items > 2 * counts.mean()  # items come and go


def test_means_follow_the_hidden_bilinear_matrix():
    world = ItemWorld()
    ep = world.episode(50, np.random.default_rng(2))
    for t in (0, 25, 49):
        items = ep.items[ep.candidates[t]]
        np.testing.assert_allclose(ep.means[t], world.expected(ep.hidden, ep.features[t], items))


def test_the_best_offered_item_beats_a_random_one():
    ep = ItemWorld().episode(3000, np.random.default_rng(3))
    random, best = ep.means.mean(), ep.means.max(axis=1).mean()
    assert 0.2 < random < 0.5
    assert best > random + 0.3
    assert ep.rewards.mean() == pytest.approx(random, abs=0.02)


def test_gaussian_noise_has_the_declared_spread():
    ep = ItemWorld(noise="gaussian", noise_sd=0.2).episode(2000, np.random.default_rng(4))
    assert np.std(ep.rewards - ep.means) == pytest.approx(0.2, rel=0.05)


@pytest.mark.parametrize(
    "kwargs",
    [{"noise": "poisson"}, {"lifetime": (0, 5)}, {"offered": 300}, {"lifetime": (9, 3)}],
)
def test_invalid_worlds_are_refused(kwargs):
    with pytest.raises(ValueError):
        ItemWorld(**kwargs)


def test_a_shared_model_learns_items_that_a_per_item_model_cannot():
    results = study(
        ItemWorld(), ["random", "disjoint", "shared_linucb"], 1500, [0], Settings(PolicyParams())
    )
    lift = {name: reward[0] - results["random"][0][0] for name, (reward, _) in results.items()}
    assert lift["shared_linucb"] > 2 * lift["disjoint"]
    assert lift["shared_linucb"] > 0.2
    table = markdown_table(results, 1500)
    assert table.count("\n") == 4 and "| shared_linucb |" in table
