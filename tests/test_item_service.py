"""Models over item features in the service: choose, log, learn and rebuild a shared model."""

import argparse
import json
import time

import numpy as np
import pytest

from app import evaluate as evaluate_cmd
from app.config import SHARED_ARM, ConfigError, config_from_text
from app.live_model import read_live, scan_model_ids
from app.rebuild import verify
from app.snapshots import take_snapshot
from bandits.auto_forgetting import AUTO
from bandits.item_models import (
    hybrid_add_arms,
    hybrid_prior,
    hybrid_update,
    shared_prior,
    shared_update,
)
from tests.conftest import AUTH, EXPERIMENTS_TOML, choose, reward, rows
from tests.test_config import rewrite

JOBS_TOML = """
[experiments.jobs]
policy = "linucb"
alpha = 0.5
epsilon = 0.1
arms = "dynamic"
max_arms = 3
model = "shared"
reward = { default = 0.0, window_seconds = 60, min = 0.0, max = 1.0 }

[experiments.jobs.features]
numeric = ["hour"]
categorical = { city = ["berlin", "hamburg"] }

[experiments.jobs.item_features]
numeric = ["pay"]
categorical = { category = ["kitchen", "driver", "cleaning"] }
"""
CATEGORIES = ("kitchen", "driver", "cleaning")


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "experiments.toml"
    path.write_text(EXPERIMENTS_TOML + JOBS_TOML)
    return path


def jobs_toml(model: str) -> str:
    """The jobs experiment with ``model``; a hybrid one keeps state per item, so more room."""
    if model == "shared":
        return JOBS_TOML
    return JOBS_TOML.replace('"shared"', f'"{model}"').replace("max_arms = 3", "max_arms = 5000")


def with_forgetting(text: str, forgetting: str) -> str:
    """An experiment's TOML with ``forgetting = <forgetting>`` (a TOML value) added."""
    return text.replace("\nmodel = ", f"\nforgetting = {forgetting}\nmodel = ", 1)


def job(n: int, rng) -> dict:
    """A candidate object: a fresh job id with its features."""
    return {
        "id": f"job_{n}",
        "features": {"pay": round(float(rng.uniform(10, 20)), 2), "category": CATEGORIES[n % 3]},
    }


def context(rng) -> dict:
    return {"hour": int(rng.integers(0, 24)), "city": str(rng.choice(["berlin", "hamburg"]))}


def kitchen_pays_in_berlin(ctx: dict, item: dict) -> float:
    """The world the tests learn: kitchen jobs are rewarded in Berlin, nothing else is."""
    return float(ctx["city"] == "berlin" and item["features"]["category"] == "kitchen")


def test_config_declares_item_models_and_refuses_what_cannot_work():
    exp = config_from_text(EXPERIMENTS_TOML + JOBS_TOML, "t").get("jobs")
    assert exp.model == "shared" and exp.item_model
    # all pairs: (d - 1) * q + q + d with d = 4 (intercept, hour, 2 cities), q = 4
    assert exp.layout.dim == 3 * 4 + 4 + 4
    declared = config_from_text(
        EXPERIMENTS_TOML + with_line('interactions = { city = ["category"] }'), "t"
    ).get("jobs")
    assert declared.layout.dim == 2 * 3 + 4 + 4
    assert declared.model_id != exp.model_id  # another layout: another model
    assert config_from_text(EXPERIMENTS_TOML, "t").get("home_feed").model == "disjoint"
    bad = {
        JOBS_TOML.split("[experiments.jobs.item_features]")[
            0
        ]: "needs \\[experiments.jobs.item_features\\]",
        JOBS_TOML.replace('model = "shared"', 'model = "joint"'): "model must be one of",
        JOBS_TOML.replace('policy = "linucb"', 'policy = "beta_ts"'): "scores items with one of",
        with_line('interactions = { hour = ["colour"] }'): "'colour', not a declared item feature",
        with_line('interactions = { weather = ["pay"] }'): "'weather', not a declared context",
        JOBS_TOML.replace('model = "shared"\n', ""): "needs model",
    }
    for text, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            config_from_text(EXPERIMENTS_TOML + text, "t")


def with_line(line: str) -> str:
    """The jobs experiment with one more top-level key."""
    return JOBS_TOML.replace('model = "shared"\n', f'model = "shared"\n{line}\n')


def test_choose_scores_candidate_objects_and_logs_their_features(client, worker, engine):
    rng = np.random.default_rng(1)
    candidates = [job(n, rng) for n in range(6)]
    answer = choose(client, experiment="jobs", context=context(rng), candidates=candidates, k=2)
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    shown = [a["arm"] for a in body["arms"]]
    assert len(set(shown)) == 2 and set(shown) <= {c["id"] for c in candidates}
    assert all(0 < a["propensity"] <= 1 for a in body["arms"])
    worker.run(until_idle=True)
    logged = rows(
        engine,
        "SELECT arm, position, item_features, item_vector FROM impressions "
        "WHERE decision_id = :d ORDER BY position",
        d=body["decision_id"],
    )
    by_id = {c["id"]: c["features"] for c in candidates}
    exp = config_from_text(EXPERIMENTS_TOML + JOBS_TOML, "t").get("jobs")
    for row, arm in zip(logged, shown):
        assert row["arm"] == arm and row["item_features"] == by_id[arm]
        assert row["item_vector"] == exp.item_features.encode(by_id[arm]).tolist()


def test_stored_items_are_logged_as_stored_and_a_rewritten_one_as_rewritten(client, worker, engine):
    """Ids only: the encoded rows a process remembers (stored_rows.py) reach the log."""
    rng = np.random.default_rng(11)
    exp = config_from_text(EXPERIMENTS_TOML + JOBS_TOML, "t").get("jobs")
    stored = [job(n, rng) for n in range(3)]
    for item in stored:
        put = client.put(
            f"/items/jobs/{item['id']}", json={"features": item["features"]}, headers=AUTH
        )
        assert put.status_code in (200, 201, 204), put.get_json()
    ids = [c["id"] for c in stored]
    first = choose(client, experiment="jobs", context=context(rng), candidates=ids, k=3)
    assert first.status_code == 200, first.get_json()
    rewritten = {"pay": 99.5, "category": "cleaning"}
    put = client.put(f"/items/jobs/{ids[0]}", json={"features": rewritten}, headers=AUTH)
    assert put.status_code in (200, 201, 204), put.get_json()
    second = choose(client, experiment="jobs", context=context(rng), candidates=ids, k=3)
    assert second.status_code == 200, second.get_json()
    worker.run(until_idle=True)
    for answer, features in (
        (first, {c["id"]: c["features"] for c in stored}),
        (second, {**{c["id"]: c["features"] for c in stored}, ids[0]: rewritten}),
    ):
        decision = answer.get_json()["decision_id"]
        logged = rows(
            engine,
            "SELECT arm, item_features, item_vector FROM impressions WHERE decision_id = :d",
            d=decision,
        )
        assert {r["arm"] for r in logged} == set(ids)
        for r in logged:
            assert r["item_features"] == features[r["arm"]]
            assert r["item_vector"] == exp.item_features.encode(features[r["arm"]]).tolist()
        (candidates,) = rows(
            engine, "SELECT candidate_items FROM decisions WHERE decision_id = :d", d=decision
        )
        want = np.concatenate([exp.item_features.encode(features[i]) for i in ids])
        assert candidates["candidate_items"] == want.tolist()


def test_a_dynamic_catalogue_of_items_keeps_no_state_per_item_and_has_no_arm_limit(
    client, worker, redis_client
):
    rng = np.random.default_rng(2)
    for n in range(0, 30, 5):  # 30 distinct items, max_arms = 3
        candidates = [job(n + i, rng) for i in range(5)]
        answer = choose(client, experiment="jobs", context=context(rng), candidates=candidates)
        assert answer.status_code == 200, answer.get_json()
        decision = answer.get_json()
        assert (
            reward(client, decision["decision_id"], decision["arms"][0]["arm"], 1.0).status_code
            == 202
        )
    worker.run(until_idle=True)
    live = read_live(redis_client, "jobs", scan_model_ids(redis_client, "jobs")).arms
    assert [arm for _, arm in live] == [SHARED_ARM]  # one state, whatever the items
    (state,) = [a.state for a in live.values()]
    assert state.n[0] == 6 and state.A.shape == (1, 20, 20)


@pytest.mark.parametrize("forgetting", [1.0, 0.98, AUTO])
def test_the_worker_learns_the_shared_vector_of_the_context_and_the_item_shown(
    client, worker, redis_client, config_file, forgetting
):
    text = with_forgetting(JOBS_TOML, json.dumps(forgetting))
    rewrite(config_file, EXPERIMENTS_TOML + text)
    rng = np.random.default_rng(3)
    exp = config_from_text(EXPERIMENTS_TOML + text, "t").get("jobs")
    expected = shared_prior(exp.layout.dim, exp.ridge)
    for _ in range(25):
        ctx = context(rng)
        candidates = [job(int(n), rng) for n in rng.choice(1000, 4, replace=False)]
        decision = choose(client, experiment="jobs", context=ctx, candidates=candidates).get_json()
        arm = decision["arms"][0]["arm"]
        item = next(c for c in candidates if c["id"] == arm)
        value = kitchen_pays_in_berlin(ctx, item)
        reward(client, decision["decision_id"], arm, value)
        phi = exp.layout.features(
            exp.features.encode(ctx), exp.item_features.encode(item["features"])[None]
        )[0]
        shared_update(
            expected,
            phi,
            value,
            discount=forgetting,
            ridge=exp.ridge,
            level=exp.layout.level_column,
        )
    worker.run(until_idle=True)
    live = read_live(redis_client, "jobs", [exp.model_id]).arms[(exp.model_id, SHARED_ARM)]
    for name in ("A", "A_inv", "b", "theta", "n"):
        np.testing.assert_array_equal(getattr(live.state, name), getattr(expected, name))


@pytest.mark.parametrize("forgetting", [1.0, AUTO])
def test_the_worker_learns_a_hybrid_model_as_the_paper_does(
    client, worker, redis_client, config_file, forgetting
):
    text = with_forgetting(jobs_toml("hybrid"), json.dumps(forgetting))
    rewrite(config_file, EXPERIMENTS_TOML + text)
    rng = np.random.default_rng(7)
    exp = config_from_text(EXPERIMENTS_TOML + text, "t").get("jobs")
    d, D = exp.features.dim, exp.layout.dim
    expected, arms = hybrid_prior(0, d, D), []
    for _ in range(30):
        ctx = context(rng)
        candidates = [job(int(n), rng) for n in rng.choice(8, 3, replace=False)]
        decision = choose(client, experiment="jobs", context=ctx, candidates=candidates).get_json()
        arm = decision["arms"][0]["arm"]
        item = next(c for c in candidates if c["id"] == arm)
        value = kitchen_pays_in_berlin(ctx, item)
        reward(client, decision["decision_id"], arm, value)
        if arm not in arms:
            arms.append(arm)
            expected = hybrid_add_arms(expected, 1)
        x = exp.features.encode(ctx)
        phi = exp.layout.features(x, exp.item_features.encode(item["features"])[None])[0]
        hybrid_update(expected, arms.index(arm), x, phi, value, discount=forgetting)
    worker.run(until_idle=True)
    live = read_live(redis_client, "jobs", [exp.model_id]).arms
    shared = live[(exp.model_id, SHARED_ARM)].state
    for name in ("A", "A_inv", "b", "theta", "n"):
        np.testing.assert_array_equal(getattr(shared, name), getattr(expected.shared, name))
    for i, arm in enumerate(arms):
        own = live[(exp.model_id, arm)]
        np.testing.assert_array_equal(own.state.A_inv[0], expected.arms.A_inv[i])
        np.testing.assert_array_equal(own.state.b[0], expected.arms.b[i])
        np.testing.assert_array_equal(own.extra, expected.B[i])
    # the API holds rows for learned items only: a never-shown one is scored from the
    # shared part and takes no row, however many come
    never_shown = [job(100 + n, rng) for n in range(20)]
    learned = [job(int(a.removeprefix("job_")), rng) for a in arms]
    chooser = client.application.extensions["banditd"].chooser
    chooser.cache.invalidate("jobs")  # see what the worker saved now, not within 50 ms
    answer = choose(
        client, experiment="jobs", context=context(rng), candidates=never_shown + learned
    )
    assert answer.status_code == 200
    table = chooser.cache.table(chooser.experiment("jobs"))
    assert set(table.arms) == set(arms) == set(table.extras)


def test_a_hybrid_catalogue_keeps_state_per_item_so_max_arms_bounds_it(client, config_file):
    rewrite(
        config_file,
        EXPERIMENTS_TOML + jobs_toml("hybrid").replace("max_arms = 5000", "max_arms = 3"),
    )
    rng = np.random.default_rng(8)
    first = [job(n, rng) for n in range(3)]
    assert (
        choose(client, experiment="jobs", context=context(rng), candidates=first, k=3).status_code
        == 200
    )
    answer = choose(client, experiment="jobs", context=context(rng), candidates=[job(9, rng)])
    assert answer.status_code == 409 and answer.get_json()["error"]["code"] == "arm_limit_reached"


def test_a_new_item_starts_from_what_items_like_it_earned(client, worker):
    rng = np.random.default_rng(4)
    berlin = {"hour": 9, "city": "berlin"}
    for n in range(60):  # learn from items that leave: every round offers two new ones
        candidates = [job(2 * n + 1000, rng), job(2 * n + 1001, rng)]
        decision = choose(
            client, experiment="jobs", context=berlin, candidates=candidates
        ).get_json()
        for slot in decision["arms"]:
            item = next(c for c in candidates if c["id"] == slot["arm"])
            reward(
                client, decision["decision_id"], slot["arm"], kitchen_pays_in_berlin(berlin, item)
            )
        worker.run(until_idle=True)
    fresh = [
        {"id": "never_seen_driver", "features": {"pay": 15.0, "category": "driver"}},
        {"id": "never_seen_kitchen", "features": {"pay": 15.0, "category": "kitchen"}},
        {"id": "never_seen_cleaning", "features": {"pay": 15.0, "category": "cleaning"}},
    ]
    picked = [
        choose(client, experiment="jobs", context=berlin, candidates=fresh).get_json()["arms"][0][
            "arm"
        ]
        for _ in range(40)
    ]
    # epsilon 0.1 over 3 candidates: the kitchen job unless exploring (about 7% of the time)
    assert picked.count("never_seen_kitchen") >= 30


@pytest.mark.parametrize("model", ["shared", "hybrid"])
@pytest.mark.parametrize("policy", ["linucb", "lin_ts", "squarecb"])
def test_every_item_policy_answers_exact_propensities(client, config_file, policy, model):
    rewrite(config_file, EXPERIMENTS_TOML + jobs_toml(model).replace('"linucb"', f'"{policy}"'))
    rng = np.random.default_rng(5)
    candidates = [job(n, rng) for n in range(5)]
    answer = choose(client, experiment="jobs", context=context(rng), candidates=candidates, k=3)
    assert answer.status_code == 200, answer.get_json()
    arms = answer.get_json()["arms"]
    assert len(arms) == 3 and all(0 < a["propensity"] <= 1 for a in arms)


@pytest.mark.parametrize(
    "model, forgetting", [("shared", 1.0), ("hybrid", 1.0), ("shared", AUTO), ("hybrid", AUTO)]
)
def test_rebuild_replays_an_item_model_bit_for_bit_from_the_log_and_from_a_snapshot(
    client, worker, clock, config_file, redis_client, engine, model, forgetting
):
    toml = with_forgetting(jobs_toml(model), json.dumps(forgetting))
    rewrite(config_file, EXPERIMENTS_TOML + toml)
    rng = np.random.default_rng(6)
    made = []
    for round_ in range(40):
        if round_ == 20:  # a new exploration setting: a new config version, the same model
            edited = toml.replace("alpha = 0.5", "alpha = 0.2")
            rewrite(config_file, EXPERIMENTS_TOML + edited)
        ctx = context(rng)
        candidates = [job(int(n), rng) for n in rng.choice(500, 5, replace=False)]
        decision = choose(
            client, experiment="jobs", context=ctx, candidates=candidates, k=2
        ).get_json()
        made.append(decision)
        slot = decision["arms"][0]  # the second slot gets the default reward when the window closes
        item = next(c for c in candidates if c["id"] == slot["arm"])
        reward(client, decision["decision_id"], slot["arm"], kitchen_pays_in_berlin(ctx, item))
        if round_ % 10 == 9:
            worker.run(until_idle=True)
    clock.advance(time.time() - clock() + 61)
    worker.run(until_idle=True)
    for decision in made[:5]:  # late: logged, never learned
        reward(client, decision["decision_id"], decision["arms"][1]["arm"], 1.0)
    worker.run(until_idle=True)
    kinds = rows(engine, "SELECT kind, count(*) AS n FROM rewards GROUP BY kind ORDER BY kind")
    assert {r["kind"]: r["n"] for r in kinds} == {"default": 40, "explicit": 40, "late": 5}
    result = verify(redis_client, engine, "jobs", use_snapshots=False)
    assert result.ok and result.max_difference == 0.0
    counts = {a.arm: a.n_log for a in result.arms}
    assert counts[SHARED_ARM] == 80.0
    if model == "shared":
        assert list(counts) == [SHARED_ARM]
    else:  # the shared row learned every reward, each arm its own
        assert sum(n for arm, n in counts.items() if arm != SHARED_ARM) == 80.0
    assert take_snapshot(redis_client, engine, "jobs", int(time.time() * 1000)) is not None
    made = [
        choose(
            client,
            experiment="jobs",
            context=context(rng),
            candidates=[job(n, rng) for n in range(3)],
        ).get_json()
        for _ in range(5)
    ]
    for decision in made:
        reward(client, decision["decision_id"], decision["arms"][0]["arm"], 1.0)
    worker.run(until_idle=True)
    from_snapshot = verify(redis_client, engine, "jobs")
    assert from_snapshot.replay.snapshot is not None and from_snapshot.replay.replayed == 5
    assert from_snapshot.ok and from_snapshot.max_difference == 0.0


@pytest.mark.parametrize("model", ["shared", "hybrid"])
def test_evaluate_scores_a_target_on_the_candidates_each_decision_logged(
    client, worker, config_file, settings, engine, capsys, model
):
    """A uniform log (epsilon 1) in Berlin, where only kitchen jobs pay: greedy earns about 1."""
    uniform = jobs_toml(model).replace("epsilon = 0.1", "epsilon = 1.0")
    rewrite(config_file, EXPERIMENTS_TOML + uniform)
    rng = np.random.default_rng(9)
    berlin = {"hour": 9, "city": "berlin"}
    for n in range(240):
        candidates = [job(3 * n + i, rng) for i in range(3)]  # new items, one of each category
        decision = choose(client, experiment="jobs", context=berlin, candidates=candidates)
        slot = decision.get_json()["arms"][0]
        assert slot["propensity"] == pytest.approx(1 / 3)
        item = next(c for c in candidates if c["id"] == slot["arm"])
        value = kitchen_pays_in_berlin(berlin, item)
        reward(client, decision.get_json()["decision_id"], slot["arm"], value)
    worker.run(until_idle=True)
    logged = rows(engine, "SELECT cardinality(candidate_items) AS n FROM decisions LIMIT 1")
    assert logged == [{"n": 3 * 4}]  # 3 candidates x 4 encoded item columns

    def run(*argv: str) -> dict:
        parser = argparse.ArgumentParser()
        evaluate_cmd.add_arguments(parser)
        args = parser.parse_args(["--experiment", "jobs", "--json", "--exact", *argv])
        assert evaluate_cmd.run(args, settings) == 0
        return json.loads(capsys.readouterr().out)

    same = run()  # the logging policy itself: every weight is (1/3) / (1/3)
    assert same["mean_weight"] == pytest.approx(1.0)
    assert same["estimates"][0]["value"] == pytest.approx(same["logged_mean_reward"])
    assert 0.2 < same["logged_mean_reward"] < 0.5
    greedy = run("--set", "epsilon=0", "--set", "alpha=0")
    assert (
        110 <= greedy["decisions"] <= 130 and greedy["params_rewards"] == 240 - greedy["decisions"]
    )
    for estimate in greedy["estimates"]:  # new items every round: only their features tell
        assert estimate["low"] <= 1.0 <= estimate["high"] and estimate["value"] > 0.8
    live = run("--params", "live", "--set", "epsilon=0", "--set", "alpha=0")
    assert live["params_rewards"] == 240
    # the console's what-if: the same estimators on the newest decisions, the live model
    page = client.get("/experiments/jobs/what-if?epsilon=0&alpha=0&sample=200", headers=AUTH)
    assert page.status_code == 200, page.get_json()
    what_if = page.get_json()
    assert what_if["sample"] == 200 and what_if["learned"] == 240
    assert what_if["estimates"]["current"][0]["value"] == pytest.approx(what_if["logged"]["mean"])
    assert what_if["estimates"]["proposed"][1]["value"] > 0.8  # snips


def test_candidates_named_by_id_are_scored_and_logged_with_their_stored_features(
    client, worker, engine, redis_client
):
    rng = np.random.default_rng(10)
    stored = [job(n, rng) for n in range(4)]
    for item in stored:
        put = client.put(
            f"/items/jobs/{item['id']}", json={"features": item["features"]}, headers=AUTH
        )
        assert put.status_code in (200, 201, 204), put.get_json()
    inline = {"id": "job_99", "features": {"pay": 11.0, "category": "driver"}}
    answer = choose(
        client,
        experiment="jobs",
        context=context(rng),
        candidates=[c["id"] for c in stored] + [inline],
        k=5,
    )
    assert answer.status_code == 200, answer.get_json()
    worker.run(until_idle=True)
    logged = rows(
        engine,
        "SELECT arm, item_features FROM impressions WHERE decision_id = :d",
        d=answer.get_json()["decision_id"],
    )
    expected = {c["id"]: c["features"] for c in stored + [inline]}
    assert {r["arm"]: r["item_features"] for r in logged} == expected
    unknown = choose(client, experiment="jobs", context={}, candidates=["job_404"])
    assert unknown.status_code == 400 and "job_404" in unknown.get_json()["error"]["message"]


def test_item_features_sent_to_a_model_per_arm_are_refused(client):
    answer = choose(
        client,
        experiment="home_feed",
        candidates=[{"id": "job_kitchen", "features": {"pay": 14.0}}, "job_cleaning"],
    )
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    assert error["code"] == "invalid_field" and error["field"] == "candidates"
    assert 'model = "shared"' in error["message"]


def test_a_bad_item_feature_names_the_candidate(client):
    rng = np.random.default_rng(11)
    candidates = [job(1, rng), {"id": "job_2", "features": {"pay": "high"}}]
    answer = choose(client, experiment="jobs", context={}, candidates=candidates)
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    assert error["code"] == "invalid_feature" and error["field"] == "candidates[1].features.pay"
    unknown = [{"id": "job_3", "features": {"colour": "red"}}]
    answer = choose(client, experiment="jobs", context={}, candidates=unknown)
    assert answer.get_json()["error"]["field"] == "candidates[0].features.colour"


def test_hybrid_scores_of_new_items_take_the_shared_path_and_equal_the_papers():
    from app.item_models.scoring import _hybrid_moments
    from app.model_cache import ArmTable
    from bandits import ScoringState
    from bandits.item_models import hybrid_moments

    exp = config_from_text(EXPERIMENTS_TOML + jobs_toml("hybrid"), "t").get("jobs")
    d, D = exp.features.dim, exp.layout.dim
    rng = np.random.default_rng(13)
    state = hybrid_prior(5, d, D)
    for _ in range(80):  # arms 0-2 learn; 3 and 4 stay new
        x = exp.features.encode(context(rng))
        z = exp.item_features.encode(job(int(rng.integers(100)), rng)["features"])
        hybrid_update(state, int(rng.integers(3)), x, exp.layout.features(x, z[None])[0], 1.0)
    ids = ("a0", "a1", "a2", "a3", "a4")
    table = ArmTable(
        arms=list(ids),
        index={a: i for i, a in enumerate(ids)},
        state=ScoringState(
            state.arms.A_inv, state.arms.theta, state.arms.n, state.arms.n, state.arms.n
        ),
        extras={ids[i]: state.B[i] for i in range(3)},
    )
    shared = ScoringState(
        state.shared.A_inv, state.shared.theta, state.shared.n, state.shared.n, state.shared.n
    )
    x = exp.features.encode(context(rng))
    items = np.stack([exp.item_features.encode(job(n, rng)["features"]) for n in range(5)])
    mean, quad = _hybrid_moments(exp, shared, table, ids, x, items)
    want_mean, want_quad = hybrid_moments(state, np.arange(5), x, exp.layout.features(x, items))
    np.testing.assert_allclose(mean, want_mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(quad, want_quad, rtol=1e-10, atol=1e-12)
