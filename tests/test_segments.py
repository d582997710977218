"""A model per segment (segment_by): each value of a context field learns alone."""

import argparse
import json
import time

import numpy as np
import pytest

from app import evaluate as evaluate_cmd
from app import keys
from app.config import ConfigError, config_from_text
from app.live_model import read_live, scan_model_ids
from app.rebuild import verify
from app.snapshots import take_snapshot
from tests.conftest import EXPERIMENTS_TOML, choose, reward, rows

STORES_TOML = """
[experiments.stores]
policy = "linucb"
alpha = 0.5
epsilon = 0.1
arms = ["coffee", "cake", "sandwich"]
segment_by = "store_id"
max_segments = 3
reward = { default = 0.0, window_seconds = 60, min = 0.0, max = 1.0 }

[experiments.stores.features]
numeric = ["hour"]
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "experiments.toml"
    path.write_text(EXPERIMENTS_TOML + STORES_TOML)
    return path


def test_config_declares_segments_and_a_segment_is_the_experiment_under_its_own_model():
    exp = config_from_text(EXPERIMENTS_TOML + STORES_TOML, "t").get("stores")
    assert (exp.segment_by, exp.max_segments) == ("store_id", 3)
    berlin = exp.for_segment("berlin_1")
    assert berlin.model_id == f"{exp.model_id}~berlin_1" and berlin.segment == "berlin_1"
    assert (berlin.version, berlin.arms, berlin.params) == (exp.version, exp.arms, exp.params)
    plain = config_from_text(
        EXPERIMENTS_TOML
        + STORES_TOML.replace('segment_by = "store_id"\n', "").replace("max_segments = 3\n", ""),
        "t",
    ).get("stores")
    assert plain.segment_by is None and plain.model_id != exp.model_id
    with pytest.raises(ConfigError, match="max_segments needs segment_by"):
        config_from_text(
            EXPERIMENTS_TOML + STORES_TOML.replace('segment_by = "store_id"\n', ""), "t"
        )
    with pytest.raises(ConfigError, match="segment_by must be"):
        config_from_text(EXPERIMENTS_TOML + STORES_TOML.replace('"store_id"', "3"), "t")


def test_each_segment_learns_from_its_own_rewards_only(client, worker, redis_client, engine):
    exp = config_from_text(EXPERIMENTS_TOML + STORES_TOML, "t").get("stores")
    for _ in range(20):  # store a: every decision rewarded 1; store 17 (a number): never
        for store, value in (("a", 1.0), (17, 0.0)):
            answer = choose(client, experiment="stores", context={"hour": 9, "store_id": store})
            assert answer.status_code == 200, answer.get_json()
            decision = answer.get_json()
            reward(client, decision["decision_id"], decision["arms"][0]["arm"], value)
    worker.run(until_idle=True)
    models = scan_model_ids(redis_client, "stores")
    assert models == {f"{exp.model_id}~a", f"{exp.model_id}~17"}
    live = read_live(redis_client, "stores", models).arms
    learned = {}
    for (model, _), arm in live.items():
        learned.setdefault(model, [0.0, 0.0])
        learned[model][0] += float(arm.state.n[0])
        learned[model][1] += float(arm.state.b[0][0])  # the intercept's sum of rewards
    assert learned == {f"{exp.model_id}~a": [20.0, 20.0], f"{exp.model_id}~17": [20.0, 0.0]}
    daily = rows(
        engine,
        "SELECT segment, sum(impressions) AS n, sum(reward_sum) AS r FROM segment_daily "
        "WHERE experiment = 'stores' GROUP BY segment ORDER BY segment",
    )
    assert [(d["segment"], d["n"], d["r"]) for d in daily] == [("17", 20, 0.0), ("a", 20, 20.0)]
    logged = rows(
        engine,
        "SELECT model_id, context->>'store_id' AS store, count(*) AS n "
        "FROM decisions GROUP BY 1, 2 ORDER BY 2",
    )
    assert [(r["model_id"], r["store"], r["n"]) for r in logged] == [
        (f"{exp.model_id}~17", "17", 20),
        (f"{exp.model_id}~a", "a", 20),
    ]


def test_a_context_without_a_valid_segment_is_refused(client):
    for context in ({"hour": 9}, {"hour": 9, "store_id": "a b"}, {"store_id": True}):
        answer = choose(client, experiment="stores", context=context)
        assert answer.status_code == 400
        error = answer.get_json()["error"]
        assert error["code"] == "invalid_feature" and error["field"] == "context.store_id"


def test_max_segments_bounds_them_with_a_clear_error(client, redis_client):
    for store in ("a", "b", "c"):
        assert choose(client, experiment="stores", context={"store_id": store}).status_code == 200
    answer = choose(client, experiment="stores", context={"store_id": "d"})
    assert answer.status_code == 409
    error = answer.get_json()["error"]
    assert error["code"] == "segment_limit_reached" and "max_segments=3" in error["message"]
    assert redis_client.scard(keys.segments("stores")) == 3
    assert choose(client, experiment="stores", context={"store_id": "b"}).status_code == 200


def test_a_refused_request_takes_no_segment_slot(client, redis_client):
    refused = [
        {"store_id": "bad1", "nope": 1},  # an undeclared feature
        {"store_id": "bad2", "hour": "nine"},  # a numeric one that is not a number
    ]
    for context in refused:
        assert choose(client, experiment="stores", context=context).status_code == 400
    answer = choose(client, experiment="stores", context={"store_id": "bad3"}, k=4)
    assert answer.status_code == 400  # more arms asked for than there are
    answer = choose(client, experiment="stores", context={"store_id": "bad4"}, candidates=["tea"])
    assert answer.status_code == 400  # not an arm of the experiment
    assert redis_client.scard(keys.segments("stores")) == 0
    for store in ("a", "b", "c"):
        assert choose(client, experiment="stores", context={"store_id": store}).status_code == 200


def test_rebuild_snapshots_and_evaluate_work_per_segment(
    client, worker, clock, redis_client, engine, settings, capsys
):
    rng = np.random.default_rng(3)
    for _ in range(120):
        store = str(rng.choice(["a", "b"]))
        context = {"hour": int(rng.integers(0, 24)), "store_id": store}
        decision = choose(client, experiment="stores", context=context, k=2).get_json()
        arm = decision["arms"][0]["arm"]
        reward(
            client,
            decision["decision_id"],
            arm,
            float(arm == ("cake" if store == "a" else "coffee")),
        )
    clock.advance(time.time() - clock() + 61)  # the second slots get the default reward
    worker.run(until_idle=True)
    result = verify(redis_client, engine, "stores", use_snapshots=False)
    assert result.ok and result.max_difference == 0.0
    assert {a.model_id.rsplit("~", 1)[1] for a in result.arms} == {"a", "b"}
    assert take_snapshot(redis_client, engine, "stores", int(time.time() * 1000)) is not None
    assert verify(redis_client, engine, "stores").ok

    parser = argparse.ArgumentParser()
    evaluate_cmd.add_arguments(parser)
    args = parser.parse_args(
        [
            "--experiment",
            "stores",
            "--json",
            "--segment",
            "a",
            "--params",
            "live",
            "--set",
            "epsilon=0",
            "--set",
            "alpha=0",
        ]
    )
    assert evaluate_cmd.run(args, settings) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["segment"] == "a" and 0 < report["decisions"] < 120
    assert report["estimates"][1]["value"] > 0.8  # snips: store a's own model knows cake pays
    args = parser.parse_args(["--experiment", "stores"])
    assert evaluate_cmd.run(args, settings) == 2
    assert "--segment" in capsys.readouterr().err
    args = parser.parse_args(["--experiment", "stores", "--segment", "nope"])
    assert evaluate_cmd.run(args, settings) == 1
    assert "no decisions logged for stores in segment 'nope'" in capsys.readouterr().err
