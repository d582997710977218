"""The Postgres log holds exactly what the events said, once, whichever write path ran."""

from datetime import date, datetime, timezone

import numpy as np
from app.event_log import EventLog
from app.events import ConfigEvent, DecisionEvent, Impression, RewardEvent
from tests.conftest import rows

DECIDED_MS = 1_795_600_000_123


def _decision(
    n: int, *, request_id: str | None = None, candidates: tuple[str, ...] | None = None
) -> DecisionEvent:
    return DecisionEvent(
        decision_id=f"exp:{n:04d}",
        experiment="exp",
        decided_ms=DECIDED_MS + n,
        config_version="cv1",
        policy="lin_ts",
        model_id="m1",
        request_id=request_id,
        context={"city": "Zürich", "hour": 7.25, "nested_ok": None},
        features=np.array([1.0, -0.1, 1e-300, 3.141592653589793, -0.0]),
        impressions=(
            Impression("arm_a", 0, 0.123456789012345, 0.5),
            Impression("arm-b", 1, -2.5, 0.0005),
        ),
        propensity_estimated=True,
        candidates=candidates,
    )


def _reward(n: int, arm: str, kind: str, value: float = 1.0) -> RewardEvent:
    return RewardEvent(
        decision_id=f"exp:{n:04d}",
        experiment="exp",
        arm=arm,
        reward=value,
        kind=kind,
        received_ms=DECIDED_MS + 5_000 + n,
        features=np.zeros(5),
        model_id="m1",
        ridge=1.0,
        reward_min=0.0,
        reward_max=1.0,
    )


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def test_every_column_holds_what_the_event_said(engine):
    config = ConfigEvent("exp", "cv1", {"policy": "lin_ts", "alpha": 0.5}, DECIDED_MS)
    EventLog(engine).write(
        [
            (b"1-0", config),
            (b"2-0", _decision(1, request_id="req-1", candidates=("arm_a", "arm-b", "ärm"))),
            (b"3-0", _decision(2)),
            (b"3-1", _decision(3, candidates=())),
            (b"4-7", _reward(1, "arm-b", "explicit", 0.25)),
        ]
    )

    decisions = rows(engine, "SELECT * FROM decisions ORDER BY decision_id")
    assert [d["request_id"] for d in decisions] == ["req-1", None, None]
    assert [d["candidates"] for d in decisions] == [["arm_a", "arm-b", "ärm"], None, []]
    first = decisions[0]
    assert first["decided_at"] == _at(DECIDED_MS + 1)
    assert first["context"] == {"city": "Zürich", "hour": 7.25, "nested_ok": None}
    np.testing.assert_array_equal(first["features"], _decision(1).features)  # bit for bit
    assert (first["policy"], first["model_id"], first["config_version"]) == ("lin_ts", "m1", "cv1")
    assert (first["shown_count"], first["propensity_estimated"]) == (2, True)

    impressions = rows(
        engine, "SELECT * FROM impressions WHERE decision_id = 'exp:0001' ORDER BY position"
    )
    assert [(i["arm"], i["position"], i["score"], i["propensity"]) for i in impressions] == [
        ("arm_a", 0, 0.123456789012345, 0.5),
        ("arm-b", 1, -2.5, 0.0005),
    ]
    assert all(i["decided_at"] == _at(DECIDED_MS + 1) for i in impressions)

    [reward] = rows(engine, "SELECT * FROM rewards")
    assert reward == {
        "decision_id": "exp:0001",
        "experiment": "exp",
        "arm": "arm-b",
        "reward": 0.25,
        "kind": "explicit",
        "received_at": _at(DECIDED_MS + 5_001),
        "stream_ms": 4,
        "stream_seq": 7,
        "log_day": date(1970, 1, 1),  # its decision's day partition: "exp:0001" embeds no time
    }
    [logged_config] = rows(engine, "SELECT * FROM config_versions")
    assert logged_config["settings"] == {"policy": "lin_ts", "alpha": 0.5}
    assert logged_config["first_seen_at"] == _at(DECIDED_MS)


def test_a_batch_partly_in_the_log_adds_only_the_rest(engine):
    log = EventLog(engine)
    log.write([(b"1-0", _decision(1)), (b"2-0", _reward(1, "arm_a", "explicit"))])
    # redelivered after a crash before the acknowledgement, with newer entries behind it
    log.write(
        [
            (b"1-0", _decision(1)),
            (b"2-0", _reward(1, "arm_a", "explicit")),
            (b"3-0", _decision(2)),
            (b"4-0", _reward(2, "arm_a", "explicit")),
        ]
    )
    counts = rows(
        engine,
        "SELECT (SELECT count(*) FROM decisions) AS d, (SELECT count(*) FROM impressions) AS i,"
        " (SELECT count(*) FROM rewards) AS r",
    )
    assert counts == [{"d": 2, "i": 4, "r": 2}]


def test_a_repeat_inside_one_batch_keeps_the_first_in_stream_order(engine):
    # two late rewards for one impression: both are in the stream, the log keeps the first
    EventLog(engine).write(
        [
            (b"1-0", _decision(1)),
            (b"5-0", _reward(1, "arm_a", "late", 1.0)),
            (b"6-0", _reward(1, "arm_a", "late", 0.0)),
            (b"7-0", ConfigEvent("exp", "cv1", {"a": 1}, DECIDED_MS + 9)),
            (b"8-0", ConfigEvent("exp", "cv1", {"a": 1}, DECIDED_MS)),
        ]
    )
    assert rows(engine, "SELECT reward, stream_ms FROM rewards") == [
        {"reward": 1.0, "stream_ms": 5}
    ]
    assert rows(engine, "SELECT first_seen_at FROM config_versions") == [
        {"first_seen_at": _at(DECIDED_MS)}
    ]


def test_an_empty_batch_writes_nothing(engine):
    EventLog(engine).write([])
    assert rows(engine, "SELECT count(*) AS n FROM decisions") == [{"n": 0}]
