"""Rolling upgrades: this release's worker reads the decision record of the previous release.

The previous release wrote, per decision, the model id into the record and the
learning settings (as JSON) into the decision hash, which /reward and the
closing of windows copy into each reward entry. This release writes the config
version there instead and stores each version's settings once. Both kinds of
entry can sit in one stream while API processes are replaced one by one; the
worker must learn both exactly. (The reverse, an old worker reading new
entries, is not supported: upgrade the workers first; README, "Upgrading".)
"""

from __future__ import annotations

import time

import numpy as np
import orjson

from app import keys
from app.events import DecisionEvent, Impression, decision_entry, decode
from app.learning_settings import LearningSettings
from app.model_store import ModelStore
from bandits import arm_prior, update
from tests.conftest import choose, reward, rows


def _previous_release_decision(app, hour: float, arm: str, now_ms: int) -> str:
    """Record a decision exactly as the previous release's /choose did; returns its id."""
    services = app.extensions["banditd"]
    exp = services.config.current().get("home_feed")
    decision_id = f"home_feed:{now_ms:012x}{int(hour):016x}"
    x = exp.features.encode({"hour": hour})
    event = DecisionEvent(
        decision_id=decision_id,
        experiment="home_feed",
        decided_ms=now_ms,
        config_version=exp.version,
        policy=exp.policy,
        model_id=exp.model_id,
        request_id=None,
        context={"hour": hour},
        features=x,
        impressions=(Impression(arm, 0, 0.5, 1.0),),
        propensity_estimated=False,
    )
    record, features, _, _ = decision_entry(event)
    old_record = orjson.dumps({**orjson.loads(record), "model": exp.model_id})
    old_carry = orjson.dumps(
        {"model": exp.model_id, "lam": exp.ridge, "lo": 0.0, "hi": 1.0, "w": [1.0], "g": 1.0}
    )
    deadline = now_ms + int(exp.reward.window_seconds * 1000)
    stream = services.stream
    stream._record_decision(
        keys=[
            keys.decision("home_feed", decision_id),
            keys.pending("home_feed"),
            keys.stream("home_feed"),
            keys.request("home_feed", "-"),
            keys.arm_registry("home_feed"),
        ],
        args=[
            "0", b"", deadline - now_ms + 3_600_000, deadline, decision_id, 0, arm,
            "0.0", "0.0", "1.0", features, old_carry, old_record,
        ],
    )  # fmt: skip
    return decision_id


def test_entries_of_both_releases_in_one_stream_are_learned_exactly(
    app, client, worker, redis_client, engine
):
    exp = app.extensions["banditd"].config.current().get("home_feed")
    worker.run(until_idle=True)  # the config version is announced and its settings stored
    sent = []
    for hour in range(8):
        if hour % 2:  # an API process of the previous release
            arm = exp.arms[hour % 3]
            decision_id = _previous_release_decision(app, float(hour), arm, int(time.time() * 1000))
        else:  # an API process of this release
            decision = choose(client, context={"hour": hour}).get_json()
            decision_id, arm = decision["decision_id"], decision["arms"][0]["arm"]
        value = float(hour % 3 == 0)
        assert reward(client, decision_id, arm, value).status_code == 202
        sent.append((decision_id, arm, [1.0, float(hour), 0.0, 0.0], value))

    fields = [f for _, f in redis_client.xrange(keys.stream("home_feed"))]
    old_style = [f for f in fields if f.get(b"t") == b"reward" and f[b"c"].startswith(b"{")]
    assert len(old_style) == 4  # the previous release's rewards carry the settings themselves
    events = [decode("home_feed", f, LearningSettings(redis_client)) for f in fields]
    assert {e.model_id for e in events if isinstance(e, DecisionEvent)} == {exp.model_id}

    worker.run(until_idle=True)

    expected = {}
    for _, arm, x, value in sent:
        state = expected.setdefault(arm, arm_prior(4, 1.0))
        update(state, 0, np.array(x), value)
    store = ModelStore(redis_client)
    for arm, state in expected.items():
        learned, version = store.load_learning("home_feed", exp.model_id, arm, 4, 1.0)
        assert version == sum(1 for _, a, _, _ in sent if a == arm)
        np.testing.assert_allclose(learned.A, state.A)
        np.testing.assert_allclose(learned.theta, state.theta, rtol=1e-9, atol=1e-12)
    logged = rows(engine, "SELECT decision_id, model_id FROM decisions")
    assert {r["decision_id"] for r in logged} == {d for d, _, _, _ in sent}
    assert {r["model_id"] for r in logged} == {exp.model_id}
    assert rows(engine, "SELECT count(*) AS n FROM rewards")[0]["n"] == len(sent)


def test_a_decision_names_its_config_version_not_its_learning_settings(app, client, redis_client):
    """The lean record: per decision only what changes per decision."""
    exp = app.extensions["banditd"].config.current().get("home_feed")
    decision = choose(client, context={"hour": 3}).get_json()
    entry = [f for _, f in redis_client.xrange(keys.stream("home_feed")) if f[b"t"] == b"decision"]
    record = orjson.loads(entry[0][b"d"])
    assert "model" not in record and record["cv"] == exp.version
    stored = redis_client.hget(keys.decision("home_feed", decision["decision_id"]), "c")
    assert stored == exp.version.encode()
    settings = orjson.loads(redis_client.hget(keys.learning_settings("home_feed"), exp.version))
    assert settings == {
        "model": exp.model_id,
        "lam": exp.ridge,
        "lo": 0.0,
        "hi": 1.0,
        "pw": [],
        "g": 1.0,
    }


def test_settings_lost_from_redis_are_taken_from_the_config_while_it_is_current(
    app, client, worker, redis_client
):
    """Redis lost its data while the API processes that announced the version still run."""
    exp = app.extensions["banditd"].config.current().get("home_feed")
    worker.step()  # announces the version (and stores its settings) once for this process
    decision = choose(client, context={"hour": 3}).get_json()
    assert (
        reward(client, decision["decision_id"], decision["arms"][0]["arm"], 1.0).status_code == 202
    )
    redis_client.delete(keys.learning_settings("home_feed"))
    worker.step()
    assert redis_client.xlen(keys.deadletters("home_feed")) == 0
    assert ModelStore(redis_client).versions("home_feed", exp.model_id)  # learned
    assert redis_client.hget(keys.learning_settings("home_feed"), exp.version) is not None


def test_a_decision_of_an_unknown_version_is_dead_lettered(
    client, worker, redis_client, config_file
):
    worker.step()  # announces the version (and stores its settings) once for this process
    decision = choose(client, context={"hour": 3}).get_json()
    redis_client.delete(keys.learning_settings("home_feed"))  # lost ...
    config_file.write_text(config_file.read_text().replace("alpha = 1.0", "alpha = 0.5"))
    worker.step()  # ... and no longer the version in force
    dead = [f for _, f in redis_client.xrange(keys.deadletters("home_feed"))]
    assert [f[b"t"] for f in dead] == [b"decision"]
    assert decision["decision_id"].encode() in dead[0][b"d"]
    assert b"learning settings are not in Redis" in dead[0][b"dl:error"]
