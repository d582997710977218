"""`banditd rebuild`: the live model equals the log replayed, from scratch or from a snapshot."""

import threading
import time

import numpy as np
import pytest
import psycopg2
import sqlalchemy

from app import create_app, keys
from app.cli import main
from app.events import decode
from app.live_model import read_live, scan_model_ids
from app.rebuild import RebuildError, rebuild, replay, verify
from app.snapshots import latest_snapshot, take_snapshot
from app.worker import Worker
from app.services import build_services
from tests.conftest import (
    API_KEY,
    EXPERIMENTS_TOML,
    TEST_DATABASE_URL,
    TEST_REDIS_URL,
    choose,
    reward,
    rows,
)
from tests.test_config import rewrite

JOBS_TOML = """
[experiments.jobs]
policy = "linucb"
alpha = 0.5
epsilon = 0.1
ridge = 2.0
arms = ["cleaning", "kitchen", "warehouse", "delivery"]
reward = { default = 1.0, window_seconds = 60, min = 1.0, max = 5.0 }

[experiments.jobs.features]
numeric = ["hour"]
categorical = { city = ["berlin", "hamburg"], device = ["ios", "android"] }
"""
# a new ridge (a new model) and a new reward range for decisions made after the edit
JOBS_EDITED = JOBS_TOML.replace("ridge = 2.0", "ridge = 0.5").replace(
    "min = 1.0, max = 5.0", "min = 0.0, max = 10.0"
)
REWARDS = (1.0, 2.5, 5.0, 3.75, 1.0)


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "experiments.toml"
    path.write_text(EXPERIMENTS_TOML + JOBS_TOML)
    return path


@pytest.fixture(autouse=True)
def no_snapshots(engine):
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("TRUNCATE model_snapshots"))


@pytest.fixture
def make_worker(settings, clock):
    """Workers with options of their own (snapshot intervals, batch size); released at the end."""
    made = []

    def make(**options) -> Worker:
        services = build_services(settings)
        made.append((Worker.from_services(services, clock=clock, **options), services))
        return made[-1][0]

    yield make
    for worker, services in made:
        worker.close()
        services.engine.dispose()


def decide_and_reward(client, rng, decisions: int, rewarded: float = 0.6) -> list[dict]:
    """Slates of two; each shown arm rewarded with probability ``rewarded``."""
    made = []
    for _ in range(decisions):
        context = {
            "hour": int(rng.integers(0, 24)),
            "city": str(rng.choice(["berlin", "hamburg", "munich"])),
            "device": str(rng.choice(["ios", "android"])),
        }
        decision = choose(client, experiment="jobs", context=context, k=2).get_json()
        made.append(decision)
        for slot in decision["arms"]:
            if rng.random() < rewarded:
                value = float(rng.choice(REWARDS))
                assert (
                    reward(client, decision["decision_id"], slot["arm"], value).status_code == 202
                )
    return made


def workload(client, worker, clock, config_file, rng) -> None:
    """Explicit, default and late rewards, across a config edit that starts a new model."""
    made = decide_and_reward(client, rng, 40)
    worker.run(until_idle=True)
    made += decide_and_reward(client, rng, 20)
    rewrite(config_file, EXPERIMENTS_TOML + JOBS_EDITED)
    made += decide_and_reward(client, rng, 30)
    worker.run(until_idle=True)
    # every window closes (decisions take their deadlines from the wall clock):
    # default rewards for the arms that got none
    clock.advance(time.time() - clock() + 61)
    worker.run(until_idle=True)
    for decision in made[:10]:  # after the window: logged as late, never learned
        for slot in decision["arms"]:
            reward(client, decision["decision_id"], slot["arm"], 5.0)
    worker.run(until_idle=True)


def live_arms(redis_client, engine, experiment="jobs"):
    return read_live(redis_client, experiment, scan_model_ids(redis_client, experiment)).arms


def assert_same_arms(left, right):
    assert set(left) == set(right)
    for key in left:
        a, b = left[key], right[key]
        for name in ("A", "A_inv", "b", "theta", "n", "successes", "failures"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=str(key))


def test_verify_passes_after_explicit_default_and_late_rewards_across_a_config_edit(
    client, worker, clock, config_file, redis_client, engine
):
    workload(client, worker, clock, config_file, np.random.default_rng(1))

    kinds = {
        r["kind"]: r["n"]
        for r in rows(engine, "SELECT kind, count(*) AS n FROM rewards GROUP BY kind")
    }
    assert kinds["explicit"] > 0 and kinds["default"] > 0 and kinds["late"] > 0
    checked = verify(redis_client, engine, "jobs")
    assert checked.ok, checked.arms
    assert len({model for model, _ in replay(engine, "jobs").arms}) == 2
    assert sum(a.n_log for a in checked.arms) == kinds["explicit"] + kinds["default"]
    assert checked.max_difference == 0.0  # same updates, same order, same start: bit for bit


def test_verify_fails_when_a_live_arm_is_tampered_with(
    client, worker, clock, config_file, redis_client, engine
):
    workload(client, worker, clock, config_file, np.random.default_rng(2))
    (model, arm), params = sorted(live_arms(redis_client, engine).items())[0]
    theta = params.state.theta[0].copy()
    theta[0] += 1e-6
    redis_client.hset(keys.arm("jobs", model, arm), "theta", theta.tobytes())

    checked = verify(redis_client, engine, "jobs")
    assert not checked.ok
    assert [(a.model_id, a.arm) for a in checked.arms if not a.ok] == [(model, arm)]
    assert checked.max_difference == pytest.approx(1e-6, rel=1e-3)


def scores(client, context) -> dict[str, float]:
    body = {"experiment": "jobs", "context": context, "k": 4}
    return {a["arm"]: a["score"] for a in choose(client, **body).get_json()["arms"]}


def test_rebuild_after_redis_lost_everything_restores_the_model_for_choose_and_learning(
    settings, client, worker, make_worker, clock, config_file, redis_client, engine
):
    workload(client, worker, clock, config_file, np.random.default_rng(3))
    before = live_arms(redis_client, engine)
    context = {"hour": 9, "city": "berlin", "device": "ios"}
    learned_scores = scores(client, context)
    worker.release()
    redis_client.flushdb()
    assert scores(create_app(settings).test_client(), context) != learned_scores

    rebuilt = rebuild(redis_client, engine, "jobs")
    assert len(rebuilt.written) == len(before)
    restored = live_arms(redis_client, engine)
    assert_same_arms(
        {k: v.state for k, v in restored.items()}, {k: v.state for k, v in before.items()}
    )
    assert scores(create_app(settings).test_client(), context) == learned_scores

    # learning goes on from the rebuilt model and its watermark
    decide_and_reward(client, np.random.default_rng(30), 10, rewarded=1.0)
    make_worker().run(until_idle=True)
    checked = verify(redis_client, engine, "jobs")
    assert checked.ok
    logged = rows(engine, "SELECT count(*) AS n FROM rewards WHERE kind <> 'late'")[0]["n"]
    assert sum(a.n_live for a in checked.arms) == logged
    assert logged >= sum(a.state.n[0] for a in before.values()) + 20


def test_rebuilt_arms_get_new_versions_so_running_api_processes_refresh(
    client, worker, clock, config_file, redis_client, engine
):
    workload(client, worker, clock, config_file, np.random.default_rng(17))
    worker.release()
    context = {"hour": 20, "city": "hamburg", "device": "android"}
    learned_scores = scores(client, context)
    # a bad write that API processes pick up: new theta, new version, new generation
    for (model, arm), params in live_arms(redis_client, engine).items():
        redis_client.hset(keys.arm("jobs", model, arm), "theta", (params.state.theta * 3).tobytes())
        redis_client.hincrby(keys.arm_versions("jobs", model), arm, 1)
    redis_client.incr(keys.generation("jobs"))
    assert scores(client, context) != learned_scores

    rebuild(redis_client, engine, "jobs")
    assert scores(client, context) == learned_scores


def test_snapshot_plus_the_rewards_after_it_equals_a_full_replay(
    client, make_worker, clock, config_file, redis_client, engine
):
    worker = make_worker(snapshot_every=25)
    workload(client, worker, clock, config_file, np.random.default_rng(4))
    snapshot = latest_snapshot(engine, "jobs")
    assert snapshot is not None
    decide_and_reward(client, np.random.default_rng(5), 5)
    worker.run(until_idle=True)

    from_snapshot = replay(engine, "jobs")
    full = replay(engine, "jobs", use_snapshots=False)
    assert from_snapshot.snapshot == snapshot.position
    assert 0 < from_snapshot.replayed < full.replayed
    assert_same_arms(from_snapshot.arms, full.arms)
    assert verify(redis_client, engine, "jobs").ok
    assert verify(redis_client, engine, "jobs", use_snapshots=False).ok


def test_a_snapshot_restores_every_value_bit_for_bit(
    client, worker, clock, config_file, redis_client, engine
):
    workload(client, worker, clock, config_file, np.random.default_rng(6))
    position = take_snapshot(redis_client, engine, "jobs", taken_ms=0)
    assert position is not None
    live = live_arms(redis_client, engine)
    snapshot = latest_snapshot(engine, "jobs")
    assert snapshot.position == position
    assert_same_arms(snapshot.arms, {k: v.state for k, v in live.items()})


def test_no_snapshot_of_a_model_the_log_cannot_explain(
    client, worker, clock, config_file, redis_client, engine
):
    workload(client, worker, clock, config_file, np.random.default_rng(7))
    (model, arm), _ = sorted(live_arms(redis_client, engine).items())[0]
    redis_client.hset(keys.arm("jobs", model, arm), "n", "1000.0")
    assert take_snapshot(redis_client, engine, "jobs", taken_ms=0) is None
    assert latest_snapshot(engine, "jobs") is None


def test_verify_ignores_rewards_logged_after_the_live_watermark(
    client, worker, clock, config_file, redis_client, engine
):
    workload(client, worker, clock, config_file, np.random.default_rng(8))
    learned = "SELECT count(*) AS n FROM rewards WHERE kind <> 'late'"
    before = rows(engine, learned)[0]["n"]
    decide_and_reward(client, np.random.default_rng(9), 10, rewarded=1.0)
    # As when the worker has written a batch to the log and not yet saved what it learned:
    pending = redis_client.xrange(keys.stream("jobs"))
    worker.event_log.write(
        [(entry_id, decode("jobs", fields, worker.versions)) for entry_id, fields in pending]
    )
    assert rows(engine, learned)[0]["n"] == before + 20

    checked = verify(redis_client, engine, "jobs")
    assert checked.ok
    assert sum(a.n_log for a in checked.arms) == before


def test_verify_passes_while_the_worker_keeps_learning(client, make_worker, redis_client, engine):
    decide_and_reward(client, np.random.default_rng(10), 150)
    worker = make_worker(batch_size=20)
    worker.run(max_events=20)
    verdicts = []  # (watermark, arms that differ)
    thread = threading.Thread(target=worker.run, kwargs={"until_idle": True})
    thread.start()
    deadline = time.monotonic() + 60
    try:
        while thread.is_alive() and time.monotonic() < deadline:
            checked = verify(redis_client, engine, "jobs")
            verdicts.append((checked.watermark, [a for a in checked.arms if not a.ok]))
    finally:
        worker.request_stop()
        thread.join()
    assert len({watermark for watermark, _ in verdicts}) > 2  # checked at several points
    assert [differ for _, differ in verdicts if differ] == []
    assert verify(redis_client, engine, "jobs").ok


def test_rebuild_refuses_while_a_worker_holds_the_lease(client, worker, redis_client, engine):
    decide_and_reward(client, np.random.default_rng(11), 3)
    worker.run(until_idle=True)
    with pytest.raises(RebuildError, match="stop its worker"):
        rebuild(redis_client, engine, "jobs")


def test_cli_verify_exits_1_on_a_difference_and_rebuild_repairs_it(
    client, worker, clock, config_file, redis_client, engine, monkeypatch, capsys
):
    monkeypatch.setenv("REDIS_URL", TEST_REDIS_URL)
    monkeypatch.setenv("DATABASE_URL", TEST_DATABASE_URL)
    monkeypatch.setenv("BANDITD_CONFIG", str(config_file))
    monkeypatch.setenv("BANDITD_API_KEYS", API_KEY)
    workload(client, worker, clock, config_file, np.random.default_rng(12))
    worker.release()

    assert main(["rebuild", "--experiment", "jobs", "--verify"]) == 0
    assert "OK" in capsys.readouterr().out
    (model, arm), params = sorted(live_arms(redis_client, engine).items())[-1]
    tampered = params.state.A_inv[0] * 1.01
    redis_client.hset(keys.arm("jobs", model, arm), "A_inv", tampered.tobytes())
    assert main(["rebuild", "--experiment", "jobs", "--verify"]) == 1
    out = capsys.readouterr().out
    assert arm in out and "DIFFERS" in out and "1 of" in out

    assert main(["rebuild", "--experiment", "jobs"]) == 0
    assert main(["rebuild", "--experiment", "jobs", "--verify", "--no-snapshots"]) == 0
    assert main(["rebuild", "--experiment", "nope", "--verify"]) == 2


def test_worker_snapshots_after_n_rewards_or_t_seconds(client, make_worker, clock, engine):
    def snapshots() -> int:
        sql = "SELECT count(DISTINCT (stream_ms, stream_seq)) AS n FROM model_snapshots"
        return rows(engine, sql)[0]["n"]

    by_count = make_worker(snapshot_every=10, snapshot_seconds=0)
    decide_and_reward(client, np.random.default_rng(13), 4, rewarded=1.0)  # 8 rewards
    by_count.run(until_idle=True)
    assert snapshots() == 0
    decide_and_reward(client, np.random.default_rng(14), 1, rewarded=1.0)
    by_count.run(until_idle=True)
    assert snapshots() == 1
    by_count.release()

    by_time = make_worker(snapshot_every=0, snapshot_seconds=30)
    decide_and_reward(client, np.random.default_rng(15), 1, rewarded=1.0)
    by_time.run(until_idle=True)
    assert snapshots() == 1
    clock.advance(31)
    decide_and_reward(client, np.random.default_rng(16), 1, rewarded=1.0)
    by_time.run(until_idle=True)
    assert snapshots() == 2


def test_verify_passes_with_position_weights_and_forgetting(
    client, worker, clock, config_file, redis_client, engine
):
    weighted = JOBS_TOML.replace(
        "ridge = 2.0", "ridge = 2.0\nposition_weights = [1.0, 0.5]\nforgetting = 0.95"
    )
    rewrite(config_file, EXPERIMENTS_TOML + weighted)
    rng = np.random.default_rng(7)
    decide_and_reward(client, rng, 40)
    clock.advance(time.time() - clock() + 61)  # default rewards too, with their slot weights
    worker.run(until_idle=True)
    checked = verify(redis_client, engine, "jobs")
    assert checked.ok, checked.arms
    assert checked.max_difference == 0.0


def test_a_failed_log_write_loses_no_learning_of_the_batch_learned_meanwhile(
    client, make_worker, redis_client, engine
):
    """The worker learns batch N+1 while batch N's COPY runs; if that COPY fails,
    what it learned from N and N+1 (never saved) must be learned again, not skipped."""
    worker = make_worker(batch_size=25, max_backoff=0.05)
    decide_and_reward(client, np.random.default_rng(21), 30)
    worker.run(until_idle=True)
    write = worker.event_log.write_encoded
    calls = []

    def fail_once(batch):
        calls.append(len(calls))
        if len(calls) == 1:  # Postgres goes away during the first write from here on
            raise psycopg2.OperationalError("server closed the connection unexpectedly")
        write(batch)

    worker.event_log.write_encoded = fail_once
    decide_and_reward(client, np.random.default_rng(22), 20)  # two batches or more
    assert redis_client.xlen(keys.stream("jobs")) > 25
    worker.run(until_idle=True)

    assert len(calls) >= 3  # the failed write, then both batches again
    assert redis_client.xlen(keys.stream("jobs")) == 0  # everything acknowledged
    checked = verify(redis_client, engine, "jobs")
    assert checked.ok, [(a.arm, a.n_log, a.n_live) for a in checked.arms]
    logged = rows(engine, "SELECT count(*) AS n FROM rewards WHERE kind = 'explicit'")[0]["n"]
    assert sum(a.n_live for a in checked.arms) == logged  # every logged reward learned


@pytest.mark.parametrize("forgetting", ["", "forgetting = 0.95"], ids=["plain", "forgetting"])
def test_a_reward_the_previous_release_learned_but_this_one_refuses_is_skipped_by_a_replay(
    client, worker, config_file, redis_client, engine, capsys, monkeypatch, forgetting
):
    monkeypatch.setenv("REDIS_URL", TEST_REDIS_URL)
    monkeypatch.setenv("DATABASE_URL", TEST_DATABASE_URL)
    monkeypatch.setenv("BANDITD_CONFIG", str(config_file))
    rewrite(
        config_file,
        EXPERIMENTS_TOML + JOBS_TOML.replace("ridge = 2.0", f"ridge = 2.0\n{forgetting}"),
    )
    rng = np.random.default_rng(9)
    decide_and_reward(client, rng, 10)
    huge = choose(client, experiment="jobs", context={"hour": 1e15}, candidates=["kitchen"])
    decision_id = huge.get_json()["decision_id"]
    assert reward(client, decision_id, "kitchen", 5.0).status_code == 202
    decide_and_reward(client, rng, 10)
    worker.run(until_idle=True)  # the huge one is dead-lettered: its decision logged, not it
    # what the previous release's worker logged (and learned): the reward row itself
    with engine.begin() as conn:
        conn.execute(
            sqlalchemy.text(
                "INSERT INTO rewards (decision_id, experiment, arm, reward, kind, received_at, "
                "stream_ms, stream_seq, log_day) SELECT decision_id, experiment, 'kitchen', 5.0, "
                "'explicit', decided_at, (extract(epoch FROM decided_at) * 1000)::bigint, 99, "
                "log_day FROM decisions WHERE decision_id = :id"
            ),
            {"id": decision_id},
        )
    replayed = replay(engine, "jobs")
    assert replayed.unlearnable == 1
    checked = verify(redis_client, engine, "jobs")
    assert checked.ok and checked.max_difference == 0.0  # the live model never learned it either
    worker.release()
    assert main(["rebuild", "--experiment", "jobs", "--verify"]) == 0
    assert "skipped 1 reward(s) with features too large" in capsys.readouterr().out
