"""The estimators (bandits/estimators.py) learn and choose exactly as the service does."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from app import create_app
from bandits import PolicyParams, prior, select
from bandits.estimators import BetaTS, LinearTS, LinUCB, SquareCB
from bandits.ope import target_probabilities
from tests.conftest import (
    API_KEY,
    EXPERIMENTS_TOML,
    TEST_DATABASE_URL,
    TEST_REDIS_URL,
    choose,
    reward,
)
from tests.service_processes import running_service

CITIES = ("berlin", "hamburg")


def taught(client, worker, rounds: int = 60) -> list[tuple[dict, str, float]]:
    """Decisions and rewards through the API, learned by the worker: (context, arm, reward)."""
    rng = np.random.default_rng(3)
    seen = []
    for i in range(rounds):
        context = {"hour": int(rng.integers(0, 24)), "city": CITIES[i % 2]}
        decision = choose(client, context=context).get_json()
        arm = decision["arms"][0]["arm"]
        value = float(arm == "job_kitchen" and context["city"] == "berlin")
        assert reward(client, decision["decision_id"], arm, value).status_code == 202
        seen.append((context, arm, value))
    worker.run(until_idle=True)
    return seen


def test_learning_from_the_same_rewards_gives_the_workers_model(client, app, worker):
    seen = taught(client, worker)
    services = app.extensions["banditd"]
    exp = services.chooser.experiment("home_feed")
    X = np.stack([exp.features.encode(c) for c, _, _ in seen])
    arms = [exp.arm_positions[a] for _, a, _ in seen]
    model = LinUCB(n_arms=len(exp.arms), alpha=1.0).fit(X, arms, [r for _, _, r in seen])

    live = services.chooser.cache.table(exp).state
    np.testing.assert_array_equal(model.state.theta, live.theta)
    np.testing.assert_array_equal(model.state.A_inv, live.A_inv)
    np.testing.assert_array_equal(model.state.n, live.n)


def test_the_estimator_makes_the_services_choice_on_the_live_model(client, settings, worker):
    taught(client, worker)
    fresh = create_app(settings, rng=np.random.default_rng(11))  # a known rng, nothing drawn yet
    chooser = fresh.extensions["banditd"].chooser
    exp = chooser.experiment("home_feed")
    context = {"hour": 9, "city": "berlin"}
    answer = choose(fresh.test_client(), context=context, k=3).get_json()

    model = LinUCB(n_arms=len(exp.arms), alpha=1.0, random_state=11)
    model.state = chooser.cache.table(exp).state  # the parameters /choose scored with
    slate = model.choose(exp.features.encode(context), k=3)
    assert [exp.arms[a] for a in slate.arms] == [a["arm"] for a in answer["arms"]]
    assert slate.propensities.tolist() == [a["propensity"] for a in answer["arms"]]
    assert slate.scores.tolist() == pytest.approx([a["score"] for a in answer["arms"]], rel=1e-12)


def fitted(estimator, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(300), rng.normal(size=(300, 3))])
    arms = rng.integers(0, estimator.n_arms, size=300)
    rewards = (rng.random(300) < np.where(arms == 1, 0.7, 0.2)).astype(float)
    return estimator.fit(X, arms, rewards), X, arms, rewards


@pytest.mark.parametrize(
    "estimator",
    [
        LinUCB(n_arms=4, alpha=0.5, epsilon=0.1, random_state=1),
        LinearTS(n_arms=4, v=0.3, random_state=1),
        BetaTS(n_arms=4, random_state=1),
        SquareCB(n_arms=4, gamma_scale=30.0, random_state=1),
    ],
    ids=lambda e: e.policy,
)
def test_each_estimator_chooses_with_the_policy_functions(estimator):
    model, X, _, _ = fitted(estimator)
    again = type(model)(n_arms=4, random_state=1, **_knobs(model))
    again.state = model.state
    rng = np.random.default_rng(1)
    for x in X[:20]:
        expected = select(model.policy, model.state, x, rng, model.params, k=2)
        got = again.choose(x, k=2)
        assert got.arms.tolist() == expected.arms.tolist()
        assert got.propensities.tolist() == expected.propensities.tolist()
    proba = model.predict_proba(X[:50])
    assert proba.shape == (50, 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    exact = target_probabilities(
        model.policy, model.state, X[:50], model.params, np.random.default_rng(0), exact=True
    )
    np.testing.assert_allclose(proba, exact)
    assert model.rank(X[:5], 3).shape == (5, 3)
    only = model.predict(X[:30], candidates=[0, 2])
    assert set(only.tolist()) <= {0, 2}
    assert model.predict_proba(X[:5], candidates=[0, 2])[:, [1, 3]].sum() == 0.0


def _knobs(model) -> dict:
    p: PolicyParams = model.params
    return {
        "linucb": {"alpha": p.alpha, "epsilon": p.epsilon},
        "lin_ts": {"v": p.v, "epsilon": p.epsilon, "draws": p.draws},
        "beta_ts": {"epsilon": p.epsilon, "draws": p.draws},
        "squarecb": {
            "gamma_scale": p.gamma_scale,
            "gamma_exponent": p.gamma_exponent,
            "epsilon": p.epsilon,
        },
    }[model.policy]


def test_partial_fit_in_pieces_learns_what_fit_learns_at_once():
    whole, X, arms, rewards = fitted(LinUCB(n_arms=4, forgetting=0.99))
    pieces = LinUCB(n_arms=4, forgetting=0.99)
    for start in range(0, 300, 70):
        pieces.partial_fit(
            X[start : start + 70], arms[start : start + 70], rewards[start : start + 70]
        )
    np.testing.assert_array_equal(pieces.state.A_inv, whole.state.A_inv)
    np.testing.assert_array_equal(pieces.state.theta, whole.state.theta)


def test_the_better_arm_is_predicted_once_learned():
    model, X, _, _ = fitted(LinUCB(n_arms=4, alpha=0.0))
    assert (model.predict(X) == 1).mean() > 0.9  # arm 1 pays 0.7, the others 0.2


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="n_arms"):
        LinUCB(n_arms=0)
    with pytest.raises(ValueError, match="alpha"):
        LinUCB(n_arms=2, alpha=-1.0)
    with pytest.raises(ValueError):
        LinUCB(n_arms=2).partial_fit(np.ones((1, 2)), [5], [1.0])  # no arm 5


def _linucb_world(seed: int = 5, arms: int = 6):
    model, X, _, _ = fitted(LinUCB(n_arms=arms, alpha=0.7, random_state=seed), seed)
    return model, np.random.default_rng(seed).normal(size=(400, X.shape[1]))


def _slot_propensities(state, params, x, arms, policy="linucb"):
    """The propensities select's semantics give the slate ``arms`` at ``x`` (bandits/slate.py)."""
    from bandits.policy import linear_moments
    from bandits.slate import slot_probabilities

    mean, quad = linear_moments(state, x, slice(None))
    scores = mean + params.alpha * np.sqrt(quad) if policy == "linucb" else mean
    remaining = np.ones(len(scores), dtype=bool)
    out = []
    for arm in arms:
        out.append(slot_probabilities(scores, remaining, params.epsilon)[arm])
        remaining[arm] = False
    return out


@pytest.mark.parametrize("epsilon", [0.0, 0.2])
def test_choose_many_gives_selects_slates_and_propensities(epsilon):
    model, X = _linucb_world()
    model.params = PolicyParams(alpha=0.7, epsilon=epsilon)
    many = model.choose_many(X, k=3)
    for i, x in enumerate(X):
        expected = _slot_propensities(model.state, model.params, x, many.arms[i])
        np.testing.assert_allclose(many.propensities[i], expected, rtol=1e-12)
        one = select("linucb", model.state, x, np.random.default_rng(i), model.params, k=3)
        np.testing.assert_allclose(
            many.scores[i], _scores_of(model, x)[many.arms[i]], rtol=1e-12, atol=1e-14
        )
        if epsilon == 0.0:  # no ties here: the slate is the deterministic ranking
            assert many.arms[i].tolist() == one.arms.tolist()
            assert many.propensities[i].tolist() == one.propensities.tolist()


def _scores_of(model, x):
    from bandits.policy import linear_moments

    mean, quad = linear_moments(model.state, x, slice(None))
    return mean + model.params.alpha * np.sqrt(quad)


def test_choose_many_breaks_ties_and_explores_uniformly():
    model = LinUCB(n_arms=4, alpha=1.0, epsilon=0.2, random_state=3)
    X = np.ones((40_000, 2))  # at the prior every arm ties
    many = model.choose_many(X, k=2)
    assert np.allclose(many.propensities[:, 0], 0.25) and np.allclose(
        many.propensities[:, 1], 1 / 3
    )
    counts = np.bincount(many.arms[:, 0], minlength=4) / len(X)
    assert np.abs(counts - 0.25).max() < 0.01  # 4 standard errors is 0.0087
    assert (many.arms[:, 0] != many.arms[:, 1]).all()

    taught, X = _linucb_world()
    taught.params = PolicyParams(alpha=0.7, epsilon=0.2)
    x = np.repeat(X[:1], 40_000, axis=0)
    top = select("linucb", taught.state, X[0], np.random.default_rng(0), PolicyParams(alpha=0.7))
    first = taught.choose_many(x, k=1).arms[:, 0]
    share = (first == top.arms[0]).mean()
    assert abs(share - (0.8 + 0.2 / 6)) < 0.01  # the greedy arm, or explored onto it


NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "NOTEBOOK.md"


def notebook_code() -> str:
    """The Python blocks of docs/NOTEBOOK.md, in order."""
    return "\n".join(re.findall(r"^```python\n(.*?)^```", NOTEBOOK.read_text(), re.S | re.M))


def test_the_notebook_reproduces_a_logged_decision(tmp_path, engine, redis_client, request):
    code = notebook_code()
    assert "replayed_model" in code and "from_service" in code and code.count("assert") >= 5
    with running_service(EXPERIMENTS_TOML, tmp_path, request) as svc:
        namespace = {
            "BASE_URL": svc.base_url,
            "API_KEY": API_KEY,
            "REDIS_URL": TEST_REDIS_URL,
            "DATABASE_URL": TEST_DATABASE_URL,
            "CONFIG": str(svc.config_path),
        }
        exec(compile(code, str(NOTEBOOK), "exec"), namespace)
        assert namespace["row"].arms == [a.arm for a in namespace["made"].arms]
        namespace["engine"].dispose()
        namespace["client"].close()


def test_the_estimator_of_an_experiment_takes_its_policy_and_knobs():
    from app.config import config_from_text
    from app.score.model import LoadedModel, estimator

    text = """
[experiments.e]
policy = "{policy}"
alpha = 0.3
epsilon = 0.1
ridge = 2.0
forgetting = {forgetting}
arms = ["a", "b"]
[experiments.e.features]
numeric = ["x"]
"""
    for policy, forgetting, cls in [
        ("linucb", "0.9", LinUCB),
        ("squarecb", '"auto"', SquareCB),
        ("epsilon_greedy", "1.0", None),
    ]:
        exp = config_from_text(text.format(policy=policy, forgetting=forgetting), "t").get("e")
        state = prior(2, exp.features.dim, exp.ridge)
        model = estimator(exp, LoadedModel(exp.arms, state, None, "live"), random_state=1)
        assert model.policy == policy and (cls is None or isinstance(model, cls))
        assert (model.params, model.ridge) == (exp.params, 2.0)
        assert model.forgetting == (1.0 if forgetting == '"auto"' else float(forgetting))
        assert model.choose(np.array([1.0, 0.5]), k=2).arms.tolist() in ([0, 1], [1, 0])
