"""The log tables are partitioned by the day a decision id embeds; repeats still collapse."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import psycopg2.errors
import pytest
import sqlalchemy
import sqlalchemy.exc

from app.choosing import new_decision_id
from app.event_log import EventLog
from app.events import DecisionEvent, Impression, RewardEvent
from app.retention.partitions import (
    DAY_MS,
    LOG_TABLES,
    create_ahead,
    create_day,
    day_partitions,
    drop_day,
    log_day,
)
from tests.conftest import rows

# 2031-03-04 23:59:59.999 UTC, the last millisecond of a day, and the first of the next
LAST_MS = dt.datetime(2031, 3, 5, tzinfo=dt.timezone.utc).timestamp() * 1000 - 1
DAY = dt.date(2031, 3, 4)


def _decision(decision_id: str, decided_ms: int) -> DecisionEvent:
    return DecisionEvent(
        decision_id=decision_id,
        experiment="exp",
        decided_ms=decided_ms,
        config_version="cv1",
        policy="linucb",
        model_id="m1",
        request_id=None,
        context={"hour": 3},
        features=np.array([1.0, 3.0]),
        impressions=(Impression("a", 0, 0.5, 1.0), Impression("b", 1, 0.25, 1.0)),
        propensity_estimated=False,
    )


def _reward(decision_id: str, arm: str, kind: str, received_ms: int) -> RewardEvent:
    return RewardEvent(
        decision_id=decision_id,
        experiment="exp",
        arm=arm,
        reward=1.0,
        kind=kind,
        received_ms=received_ms,
        features=np.zeros(2),
        model_id="m1",
        ridge=1.0,
        reward_min=0.0,
        reward_max=1.0,
    )


def _where(engine, table: str) -> dict[str, str]:
    found = rows(engine, f"SELECT decision_id, tableoid::regclass::text AS part FROM {table}")
    return {r["decision_id"]: r["part"] for r in found}


@pytest.fixture
def days(engine):
    """Day partitions for 2031-03-03 to 2031-03-06, dropped again after the test."""
    wanted = [DAY + dt.timedelta(days=n) for n in range(-1, 3)]
    with engine.begin() as conn:
        for day in wanted:
            assert create_day(conn, day)
    yield wanted
    with engine.begin() as conn:
        for day in wanted:
            drop_day(conn, day)


def test_log_day_is_the_sql_function(engine):
    ids = [
        new_decision_id("exp", int(LAST_MS)),
        new_decision_id("exp", int(LAST_MS) + 1),
        new_decision_id("exp", 0),
        new_decision_id("a:b", 1_795_600_000_123),  # a colon in the experiment name
        "exp:0001",  # embeds no time
        "exp:" + "f" * 27,  # one hex digit short
        "exp:" + "0" * 28 + "0",  # one too many
        "exp:0193ABCDEF01" + "0" * 16,  # upper case: not what new_decision_id makes
        "no-colon" + "0" * 28,
    ]
    with engine.connect() as conn:
        sql = [
            conn.execute(sqlalchemy.text("SELECT decision_log_day(:id)"), {"id": i}).scalar()
            for i in ids
        ]
    python = [dt.date(1970, 1, 1) + dt.timedelta(days=log_day(i)) for i in ids]
    assert sql == python
    assert python[:2] == [DAY, DAY + dt.timedelta(days=1)]
    assert set(python[4:]) == {dt.date(1970, 1, 1)}


def test_a_decision_its_impressions_and_rewards_share_its_day_partition(engine, days):
    late = new_decision_id("exp", int(LAST_MS))
    early = new_decision_id("exp", int(LAST_MS) + 1)
    untimed = "exp:0001"
    EventLog(engine).write(
        [
            (b"1-0", _decision(late, int(LAST_MS))),
            (b"1-1", _decision(early, int(LAST_MS) + 1)),
            (b"1-2", _decision(untimed, int(LAST_MS))),
            # rewarded a day later: still in the decision's partition
            (b"2-0", _reward(late, "a", "explicit", int(LAST_MS) + DAY_MS)),
            (b"2-1", _reward(early, "b", "default", int(LAST_MS) + DAY_MS)),
            (b"2-2", _reward(untimed, "a", "explicit", int(LAST_MS))),
        ]
    )
    expected = {late: "_20310304", early: "_20310305", untimed: "_default"}
    for table in LOG_TABLES:
        where = _where(engine, table)
        assert {d: p.removeprefix(table) for d, p in where.items()} == expected
    assert rows(engine, "SELECT count(*) AS n FROM outcomes")[0]["n"] == 6


def test_repeats_collapse_across_partitions_whichever_write_path_runs(engine, days):
    ids = [new_decision_id("exp", int(LAST_MS) + n * 3_600_000) for n in range(-2, 3)]
    batch = [(f"{n}-0".encode(), _decision(i, int(LAST_MS))) for n, i in enumerate(ids, 1)]
    batch += [
        (f"{n}-1".encode(), _reward(i, "a", "explicit", int(LAST_MS) + 10))
        for n, i in enumerate(ids, 1)
    ]
    log = EventLog(engine)
    log.write(batch)
    before = {t: rows(engine, f"SELECT * FROM {t} ORDER BY 1, 2, 3") for t in LOG_TABLES}
    log.write(batch)  # redelivered whole: the fast COPY is refused, the staged path adds nothing
    log.write(batch[2:] + batch[:2])  # in another order
    newer = new_decision_id("exp", int(LAST_MS) + 5)
    log.write(batch[:3] + [(b"9-0", _decision(newer, int(LAST_MS) + 5))])  # partly new
    after = {t: rows(engine, f"SELECT * FROM {t} ORDER BY 1, 2, 3") for t in LOG_TABLES}
    assert {t: len(r) for t, r in before.items()} == {
        "rewards": 5,
        "impressions": 10,
        "decisions": 5,
    }
    assert {t: [r for r in a if r["decision_id"] != newer] for t, a in after.items()} == before
    assert len({p for p in _where(engine, "decisions").values()}) == 2  # two days


def test_a_reward_without_its_impression_is_still_refused(engine, days):
    decision = new_decision_id("exp", int(LAST_MS))
    log = EventLog(engine)
    log.write([(b"1-0", _decision(decision, int(LAST_MS)))])
    with pytest.raises(sqlalchemy.exc.IntegrityError) as refused:
        with engine.begin() as conn:  # an arm the decision did not show
            conn.execute(
                sqlalchemy.text(
                    "INSERT INTO rewards VALUES (:d, 'exp', 'zzz', 1, 'explicit', now(), 1, 0, "
                    "decision_log_day(:d))"
                ),
                {"d": decision},
            )
    assert isinstance(refused.value.orig, psycopg2.errors.ForeignKeyViolation)


def test_partitions_are_made_ahead_and_dropped_by_the_day(engine, days):
    ahead = DAY + dt.timedelta(days=10)
    with engine.begin() as conn:
        made = create_ahead(conn, DAY, 12)
        assert made == [DAY + dt.timedelta(days=n) for n in range(3, 13)]
        assert create_ahead(conn, DAY, 12) == []
        for table in LOG_TABLES:
            assert set(days) | set(made) <= set(day_partitions(conn, table))
    kept = new_decision_id("exp", int(LAST_MS) + 1)
    dropped = new_decision_id("exp", int(LAST_MS))
    log = EventLog(engine)
    log.write(
        [
            (b"1-0", _decision(kept, int(LAST_MS) + 1)),
            (b"1-1", _decision(dropped, int(LAST_MS))),
            (b"2-0", _reward(kept, "a", "explicit", int(LAST_MS) + 5)),
            (b"2-1", _reward(dropped, "a", "explicit", int(LAST_MS) + 5)),
        ]
    )
    with engine.begin() as conn:
        drop_day(conn, DAY)
        for table in LOG_TABLES:
            assert DAY not in day_partitions(conn, table)
        for day in made:
            drop_day(conn, day)
    for table in LOG_TABLES:
        assert set(_where(engine, table)) == {kept}
    assert ahead in made


def test_no_partition_for_a_day_the_default_partition_holds_rows_of(engine, days, caplog):
    far = dt.date(2031, 3, 20)
    far_ms = int(dt.datetime(2031, 3, 20, 12, tzinfo=dt.timezone.utc).timestamp() * 1000)
    decision = new_decision_id("exp", far_ms)
    EventLog(engine).write([(b"1-0", _decision(decision, far_ms))])
    assert _where(engine, "decisions") == {decision: "decisions_default"}
    with engine.begin() as conn:
        assert not create_day(conn, far)
        assert far not in day_partitions(conn, "decisions")
        assert create_day(conn, far + dt.timedelta(days=1))  # the transaction goes on
        drop_day(conn, far + dt.timedelta(days=1))
    assert "no log partitions for 2031-03-20" in caplog.text


def test_candidate_columns_are_lz4_in_every_partition_old_and_new(engine, days):
    """Migration 0008: a decision's candidates and item vectors skip pglz's CPU cost."""
    found = rows(
        engine,
        "SELECT c.relname AS part, a.attname AS col, a.attcompression::text AS method "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "WHERE a.attname IN ('candidates', 'candidate_items') AND (c.relname = 'decisions' "
        "OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'decisions'::regclass))",
    )
    parts = {r["part"] for r in found}
    assert {"decisions", "decisions_default"} | {f"decisions_{d:%Y%m%d}" for d in days} <= parts
    assert {(r["part"], r["col"]): r["method"] for r in found} == {
        (r["part"], r["col"]): "l" for r in found
    }
    vectors = np.round(np.random.default_rng(8).standard_normal((200, 16)), 4)
    decision = new_decision_id("exp", int(LAST_MS))
    event = dataclasses.replace(
        _decision(decision, int(LAST_MS)),
        candidates=tuple(f"item{i}" for i in range(200)),
        candidate_vectors=vectors,
    )
    EventLog(engine).write([(b"1-0", event)])
    stored = rows(
        engine,
        "SELECT candidate_items, pg_column_compression(candidate_items) AS method "
        "FROM decisions WHERE decision_id = :d",
        d=decision,
    )
    assert stored[0]["method"] == "lz4"
    assert np.array_equal(np.array(stored[0]["candidate_items"]).reshape(200, 16), vectors)
