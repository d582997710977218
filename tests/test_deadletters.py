"""Poisoned stream entries go to the dead letters; everything else flows, exactly once.

The poisoned entries are written straight into the stream, as a bug or an
operator could, bypassing the API's checks.
"""

from __future__ import annotations

import threading

import numpy as np
import orjson
import pytest
import sqlalchemy

from app import keys
from app.cli import main
from app.deadletters import DeadLetters
from app.rebuild import verify
from app.services import build_services
from app.worker import Worker
from tests.conftest import choose, reward, rows

EXPERIMENT = "home_feed"


def stream_entries(redis_client, kind: bytes) -> list[dict[bytes, bytes]]:
    """The fields of the stream's entries of one type (decision, reward), oldest first."""
    return [f for _, f in redis_client.xrange(keys.stream(EXPERIMENT)) if f.get(b"t") == kind]


def poisoned_decision(redis_client, template: dict[bytes, bytes], **changes) -> str:
    """Append a copy of a decision entry with a new id and ``changes`` to its record."""
    record = orjson.loads(template[b"d"])
    record.update(changes)
    record["id"] = f"{EXPERIMENT}:poison-{redis_client.incr('test:poison')}"
    fields = {**template, b"d": orjson.dumps(record)}
    redis_client.xadd(keys.stream(EXPERIMENT), fields)
    return record["id"]


def traffic(client, n: int, rng: np.random.Generator) -> tuple[set[str], set[tuple[str, str]]]:
    """``n`` decisions, about half of them rewarded; what was acknowledged."""
    decisions, rewards = set(), set()
    for _ in range(n):
        answer = choose(client, context={"hour": int(rng.integers(24)), "city": "berlin"})
        assert answer.status_code == 200
        body = answer.get_json()
        decisions.add(body["decision_id"])
        if rng.random() < 0.5:
            arm = body["arms"][0]["arm"]
            assert reward(client, body["decision_id"], arm, 1.0).status_code == 202
            rewards.add((body["decision_id"], arm))
    return decisions, rewards


def assert_logged_exactly(engine, decisions: set[str], rewards: set[tuple[str, str]]) -> None:
    logged = rows(engine, "SELECT decision_id FROM decisions")
    assert len(logged) == len({r["decision_id"] for r in logged})
    assert {r["decision_id"] for r in logged} == decisions
    explicit = rows(engine, "SELECT decision_id, arm FROM rewards WHERE kind = 'explicit'")
    assert sorted((r["decision_id"], r["arm"]) for r in explicit) == sorted(rewards)


def test_poisoned_entries_are_dead_lettered_and_the_rest_flows(
    client, worker, redis_client, engine
):
    decisions, rewards = traffic(client, 20, np.random.default_rng(1))
    worker.run(until_idle=True)  # processed entries are deleted: take templates from new ones
    more = traffic(client, 4, np.random.default_rng(2))
    decision_tpl = stream_entries(redis_client, b"decision")[0]
    reward_tpl = stream_entries(redis_client, b"reward")[0]
    nul_request = poisoned_decision(redis_client, decision_tpl, req="nul\u0000id")
    nul_context = poisoned_decision(redis_client, decision_tpl, ctx={"city": "ber\u0000lin"})
    redis_client.xadd(keys.stream(EXPERIMENT), {"t": "decision", "d": "not json"})
    redis_client.xadd(keys.stream(EXPERIMENT), {"t": "what"})
    redis_client.xadd(keys.stream(EXPERIMENT), {**reward_tpl, b"r": b"nan"})
    redis_client.xadd(keys.stream(EXPERIMENT), {**reward_tpl, b"x": b"\x00" * 16})
    nan_features = np.full(len(reward_tpl[b"x"]) // 8, np.nan).tobytes()
    redis_client.xadd(keys.stream(EXPERIMENT), {**reward_tpl, b"x": nan_features})
    redis_client.xadd(keys.stream(EXPERIMENT), {**reward_tpl, b"id": nul_request.encode()})
    after = traffic(client, 6, np.random.default_rng(3))

    worker.run(until_idle=True)

    assert_logged_exactly(engine, decisions | more[0] | after[0], rewards | more[1] | after[1])
    letters = DeadLetters(redis_client).list(EXPERIMENT)
    stages = [(letter.stage, letter.error.split(": ")[0]) for letter in letters]
    assert stages == [
        ("log", "CharacterNotInRepertoire"),
        ("log", "UntranslatableCharacter"),
        ("decode", "JSONDecodeError"),
        ("decode", "ValueError"),
        ("decode", "ValueError"),
        ("learn", "ValueError"),
        ("learn", "ValueError"),
        ("decision", f"its decision {nul_request} is a dead letter"),  # no ": " in it
    ]
    assert nul_context not in {r["decision_id"] for r in rows(engine, "SELECT * FROM decisions")}
    assert redis_client.xlen(keys.stream(EXPERIMENT)) == 0, "every entry acknowledged"
    assert DeadLetters(redis_client).total(EXPERIMENT) == 8
    assert verify(redis_client, engine, EXPERIMENT).ok


@pytest.fixture
def reject_request_id(engine):
    """A trigger that makes Postgres refuse the decision whose request_id is 'reject-me'."""
    ddl = """
    CREATE FUNCTION reject_me() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.request_id = 'reject-me' THEN
        RAISE EXCEPTION 'refused for the test' USING ERRCODE = 'data_exception';
      END IF;
      RETURN NEW;
    END $$;
    CREATE TRIGGER reject_me BEFORE INSERT ON decisions FOR EACH ROW EXECUTE FUNCTION reject_me();
    """
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(ddl))

    def lift() -> None:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("DROP TRIGGER IF EXISTS reject_me ON decisions"))
            conn.execute(sqlalchemy.text("DROP FUNCTION IF EXISTS reject_me()"))

    yield lift
    lift()


def test_a_dead_decision_takes_its_rewards_and_both_replay_once_fixed(
    client, worker, redis_client, engine, reject_request_id, settings, monkeypatch, capsys
):
    refused = choose(client, request_id="reject-me", context={"hour": 3}).get_json()
    kept = choose(client, context={"hour": 4}).get_json()
    worker.run(until_idle=True)
    arm = refused["arms"][0]["arm"]
    assert reward(client, refused["decision_id"], arm, 1.0).status_code == 202
    assert reward(client, kept["decision_id"], kept["arms"][0]["arm"], 1.0).status_code == 202
    worker.run(until_idle=True)

    letters = DeadLetters(redis_client).list(EXPERIMENT)
    assert [letter.stage for letter in letters] == ["log", "decision"]
    assert rows(engine, "SELECT decision_id FROM decisions") == [
        {"decision_id": kept["decision_id"]}
    ]
    assert verify(redis_client, engine, EXPERIMENT).ok

    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("BANDITD_CONFIG", settings.config_path)
    assert main(["deadletters", "list", "--experiment", EXPERIMENT]) == 0
    listed = capsys.readouterr().out
    assert "2 dead letters (2 ever)" in listed and "refused for the test" in listed

    reject_request_id()  # the cause is fixed
    assert main(["deadletters", "replay", "--experiment", EXPERIMENT]) == 0
    assert "replayed 2" in capsys.readouterr().out
    worker.run(until_idle=True)

    assert DeadLetters(redis_client).count(EXPERIMENT) == 0
    logged = {r["decision_id"] for r in rows(engine, "SELECT decision_id FROM decisions")}
    assert logged == {kept["decision_id"], refused["decision_id"]}
    learned = rows(engine, "SELECT decision_id FROM rewards WHERE kind = 'explicit'")
    assert sorted(r["decision_id"] for r in learned) == sorted(
        [kept["decision_id"], refused["decision_id"]]
    )
    assert verify(redis_client, engine, EXPERIMENT).ok
    assert not redis_client.zcard(keys.dead_decisions(EXPERIMENT))


def test_drop_and_replay_by_id(client, worker, redis_client, settings, monkeypatch, capsys):
    for n in range(3):
        redis_client.xadd(keys.stream(EXPERIMENT), {"t": "junk", "n": str(n)})
    worker.run(until_idle=True)
    ids = [letter.entry_id for letter in DeadLetters(redis_client).list(EXPERIMENT)]
    assert len(ids) == 3
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    assert main(["deadletters", "drop", "--experiment", EXPERIMENT, "--id", ids[0]]) == 0
    assert main(["deadletters", "drop", "--experiment", EXPERIMENT, "--id", "1-1"]) == 2
    assert main(["deadletters", "replay", "--experiment", EXPERIMENT, "--id", ids[1]]) == 0
    worker.run(until_idle=True)  # still junk: dead-lettered again, under its new id
    letters = DeadLetters(redis_client).list(EXPERIMENT)
    assert [letter.fields[b"n"] for letter in letters] == [b"2", b"1"]
    assert DeadLetters(redis_client).total(EXPERIMENT) == 4
    capsys.readouterr()
    assert main(["deadletters", "list", "--experiment", EXPERIMENT, "--json"]) == 0
    listed = [orjson.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert [item["fields"]["n"] for item in listed[-2:]] == ["2", "1"]
    assert all(item["stage"] == "decode" for item in listed[-2:])
    # --id lists only those (it listed every dead letter: found by fuzzing)
    newest = DeadLetters(redis_client).list(EXPERIMENT)[-1].entry_id
    assert main(["deadletters", "list", "--experiment", EXPERIMENT, "--json", "--id", newest]) == 0
    [only] = [orjson.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert only["fields"]["n"] == "1"
    assert main(["deadletters", "list", "--experiment", EXPERIMENT, "--id", "1-1"]) == 2
    with pytest.raises(SystemExit) as refused:
        main(["deadletters", "list", "--experiment", EXPERIMENT, "--limit", "0"])
    assert refused.value.code == 2


def test_poison_in_the_middle_of_a_load_loses_and_duplicates_nothing(
    client, settings, clock, redis_client, engine
):
    services = build_services(settings)
    worker = Worker.from_services(services, clock=clock, block_ms=5, batch_size=50)
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    rng = np.random.default_rng(7)
    decisions, rewards = traffic(client, 10, rng)
    poison = 0
    for round_ in range(12):
        more = traffic(client, 15, rng)
        decisions |= more[0]
        rewards |= more[1]
        redis_client.xadd(keys.stream(EXPERIMENT), {"t": "decision", "d": f"junk {round_}"})
        poison += 1
    worker.request_stop()
    runner.join(timeout=30)
    assert not runner.is_alive()
    worker.close()  # gives its lease up: the next worker takes what it left
    successor = Worker.from_services(services, clock=clock, block_ms=5)
    successor.run(until_idle=True)
    successor.close()
    services.engine.dispose()

    assert_logged_exactly(engine, decisions, rewards)
    assert DeadLetters(redis_client).count(EXPERIMENT) == poison
    assert verify(redis_client, engine, EXPERIMENT).ok


def test_a_reward_too_large_for_the_model_is_dead_lettered_and_choose_keeps_answering(
    client, worker, redis_client, engine
):
    # Two identical huge contexts rewarded on a fresh arm once turned its A^-1 into NaN
    # (cancellation in the rank-one step), and every /choose of the experiment into a 500.
    huge = []
    for _ in range(2):
        answer = choose(client, context={"hour": 1e15}, candidates=["job_kitchen"], k=1)
        assert answer.status_code == 200
        decision_id = answer.get_json()["decision_id"]
        assert reward(client, decision_id, "job_kitchen", 1.0).status_code == 202
        huge.append(decision_id)
    decisions, rewards = traffic(client, 10, np.random.default_rng(4))

    worker.run(until_idle=True)

    letters = DeadLetters(redis_client).list(EXPERIMENT)
    assert [(letter.stage, letter.fields[b"id"].decode()) for letter in letters] == [
        ("learn", huge[0]),
        ("learn", huge[1]),
    ]
    assert all("x is too large for the arm's model" in letter.error for letter in letters)
    # the decisions are logged (their rewards are not: the log replays to the live model)
    assert_logged_exactly(engine, decisions | set(huge), rewards)
    for _ in range(20):
        answer = choose(client, context={"hour": 3, "city": "berlin"})
        assert answer.status_code == 200
        assert all(np.isfinite(a["score"]) for a in answer.get_json()["arms"])
    assert verify(redis_client, engine, EXPERIMENT).ok
