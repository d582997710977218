"""Retention drops whole old days of the log, and a rebuild still verifies afterwards."""

from __future__ import annotations

import datetime as dt
import threading
import time

import jsonschema
import numpy as np
import pytest
import sqlalchemy

from app import create_app, keys, openapi
from app.cli import main
from app.choosing import new_decision_id
from app.config import ConfigError, load_config
from app.event_log import EventLog
from app.events import DecisionEvent, Impression, RewardEvent
from app.rebuild import format_verification, verify
from app.retention.keeper import apply_retention, replay_base
from app.retention.partitions import create_day, day_partitions, drop_day
from app.settings import Settings
from app.snapshots import latest_snapshot, prune_snapshots, take_snapshot
from tests.conftest import AUTH, TEST_DATABASE_URL, TEST_REDIS_URL, choose, poll, reward, rows

# Decisions are made at a fake time in the past (the log's partitions of the real days
# are newer, so retention at the fake "now" leaves them alone); the Redis stream's ids,
# and so the snapshots' positions, are on the real clock: after every fake horizon.
D1 = dt.date(2026, 3, 1)
DAYS = [D1 + dt.timedelta(days=n) for n in range(4)]
MADE_AHEAD = [D1 + dt.timedelta(days=n) for n in range(4, 12)]  # by retention at a fake now


def _at(day: dt.date, hour: int) -> float:
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.timezone.utc).timestamp()


def _now(day: dt.date, hour: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(_at(day, hour), dt.timezone.utc)


@pytest.fixture(autouse=True)
def days(engine):
    """Day partitions for 2026-03-01 to 03-04 (decisions made at a fake time), dropped after."""
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("TRUNCATE model_snapshots, log_retention"))
        for day in DAYS:
            assert create_day(conn, day)
    yield
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("TRUNCATE log_retention"))
        for day in DAYS + MADE_AHEAD:
            drop_day(conn, day)


@pytest.fixture
def fake_app(settings, clock):
    return create_app(settings, clock=clock, rng=np.random.default_rng(7)).test_client()


def _traffic(client, experiment: str, n: int) -> None:
    for k in range(n):
        body = {"context": {"hour": k % 24, "city": "berlin"}} if experiment == "home_feed" else {}
        answer = choose(client, experiment=experiment, **body)
        assert answer.status_code == 200, answer.json
        chosen = answer.json
        arm = chosen["arms"][0]["arm"]
        assert reward(client, chosen["decision_id"], arm, float(k % 2)).status_code == 202


def _day_of_traffic(client, worker, clock, day: dt.date, experiments=("home_feed",)) -> None:
    clock.now = _at(day, 10)
    for experiment in experiments:
        _traffic(client, experiment, 12)
    worker.run(until_idle=True)
    clock.now = _at(day, 12)  # the reward windows close: default rewards are learned
    worker.run(until_idle=True)


def _snapshot(redis_client, engine, experiment: str, clock) -> tuple[int, int]:
    """Snapshot the live model now; its position (the worker may have taken it already)."""
    take_snapshot(redis_client, engine, experiment, int(clock() * 1000))
    return latest_snapshot(engine, experiment).position


def _decisions_by_day(engine, experiment: str) -> dict[str, int]:
    found = rows(
        engine,
        "SELECT log_day::text AS day, count(*) AS n FROM decisions WHERE experiment = :e "
        "GROUP BY 1 ORDER BY 1",
        e=experiment,
    )
    return {r["day"]: r["n"] for r in found}


def test_an_old_day_goes_and_verify_replays_from_the_snapshot_kept(
    fake_app, worker, clock, redis_client, engine, settings, monkeypatch, capsys
):
    _day_of_traffic(fake_app, worker, clock, D1)
    base = _snapshot(redis_client, engine, "home_feed", clock)
    _day_of_traffic(fake_app, worker, clock, DAYS[1])
    before = verify(redis_client, engine, "home_feed", use_snapshots=False)
    assert before.ok and before.replay.snapshot is None

    config = load_config(settings.config_path)
    done = apply_retention(engine, config, 1.5, _now(DAYS[2], 12))  # horizon: 03-02 00:00

    assert done.dropped == [D1]
    assert done.bases == {"home_feed": base}
    with engine.connect() as conn:
        assert D1 not in day_partitions(conn, "rewards")
    assert _decisions_by_day(engine, "home_feed") == {"2026-03-02": 12}
    assert replay_base(engine, "home_feed") == (base, DAYS[1])

    after = verify(redis_client, engine, "home_feed", use_snapshots=False)
    assert after.ok, format_verification(after)
    assert after.replay.snapshot == base and after.replay.kept_since == DAYS[1]
    learned = "SELECT count(*) AS n FROM rewards WHERE kind IN ('explicit', 'default')"
    assert after.replay.replayed == rows(engine, learned)[0]["n"] > 0  # day 2's, after the base
    text = format_verification(after)
    assert f"from snapshot {base[0]}-{base[1]} (retention's base: the log before 2026-03-02" in text
    assert text.endswith(": OK")

    monkeypatch.setenv("BANDITD_CONFIG", settings.config_path)
    monkeypatch.setenv("REDIS_URL", TEST_REDIS_URL)
    monkeypatch.setenv("DATABASE_URL", TEST_DATABASE_URL)
    capsys.readouterr()
    assert main(["rebuild", "--experiment", "home_feed", "--verify", "--no-snapshots"]) == 0
    assert "retention's base: the log before 2026-03-02 was dropped" in capsys.readouterr().out


def test_a_day_with_rewards_learned_after_every_snapshot_is_kept(
    fake_app, worker, clock, redis_client, engine, settings
):
    _day_of_traffic(fake_app, worker, clock, D1)
    config = load_config(settings.config_path)

    done = apply_retention(engine, config, 1.0, _now(DAYS[3], 0))  # no snapshot at all

    assert done.dropped == []
    assert "holds 2026-03-01" in done.held["home_feed"] and "(none)" in done.held["home_feed"]
    assert _decisions_by_day(engine, "home_feed") == {"2026-03-01": 12}
    assert verify(redis_client, engine, "home_feed", use_snapshots=False).ok


def test_no_retention_configured_keeps_everything(fake_app, worker, clock, engine, settings):
    _day_of_traffic(fake_app, worker, clock, D1)
    done = apply_retention(engine, load_config(settings.config_path), None, _now(DAYS[3], 0))
    assert done.dropped == [] and done.deleted == {}
    assert _decisions_by_day(engine, "home_feed") == {"2026-03-01": 12}


def test_a_shorter_retention_of_one_experiment_deletes_its_rows_only(
    fake_app, worker, clock, redis_client, engine, settings, config_file
):
    config_file.write_text(
        config_file.read_text().replace(
            '[experiments.push_copy]\npolicy = "beta_ts"',
            '[experiments.push_copy]\npolicy = "beta_ts"\nretention_days = 1',
        )
    )
    config = load_config(str(config_file))
    assert config.get("push_copy").retention_days == 1.0
    assert config.get("push_copy").settings["retention_days"] == 1.0
    assert "retention_days" not in config.get("home_feed").settings
    clock.now = _at(D1, 9)
    worker.step()  # the edited config's version is announced
    _day_of_traffic(fake_app, worker, clock, D1, ("home_feed", "push_copy"))
    base = _snapshot(redis_client, engine, "push_copy", clock)

    done = apply_retention(engine, config, None, _now(DAYS[2], 12))  # home_feed: forever

    assert done.dropped == []
    assert done.deleted == {"push_copy": 12}
    assert _decisions_by_day(engine, "push_copy") == {}
    assert _decisions_by_day(engine, "home_feed") == {"2026-03-01": 12}
    assert rows(engine, "SELECT count(*) AS n FROM rewards WHERE experiment = 'push_copy'") == [
        {"n": 0}
    ]
    assert done.bases == {"push_copy": base}
    for experiment in ("push_copy", "home_feed"):
        checked = verify(redis_client, engine, experiment, use_snapshots=False)
        assert checked.ok, format_verification(checked)


def test_snapshot_pruning_keeps_the_base_and_each_days_newest(
    fake_app, worker, clock, redis_client, engine, settings
):
    _day_of_traffic(fake_app, worker, clock, D1)
    base = _snapshot(redis_client, engine, "home_feed", clock)
    apply_retention(engine, load_config(settings.config_path), 1.0, _now(DAYS[3], 0))
    assert replay_base(engine, "home_feed")[0] == base
    taken = [base]
    for day in DAYS[1:3]:
        _day_of_traffic(fake_app, worker, clock, day)
        taken.append(_snapshot(redis_client, engine, "home_feed", clock))
    prune_snapshots(engine, "home_feed", keep=1)
    kept = rows(
        engine,
        "SELECT DISTINCT stream_ms, stream_seq FROM model_snapshots WHERE experiment = 'home_feed'",
    )
    # the stream ids are Redis' real clock: the three snapshots share a day, the newest stays
    assert {(r["stream_ms"], r["stream_seq"]) for r in kept} == {base, taken[-1]}


def test_banditd_retention_reports_what_it_did(engine, settings, monkeypatch, capsys):
    monkeypatch.setenv("BANDITD_CONFIG", settings.config_path)
    monkeypatch.setenv("DATABASE_URL", TEST_DATABASE_URL)
    monkeypatch.setenv("BANDITD_RETENTION_DAYS", "30")
    assert main(["retention"]) == 0
    out = capsys.readouterr().out
    # the fixture's empty days of 2026-03 are past 30 days; the real days and those ahead stay
    assert out.startswith("created day partitions: ")
    assert "dropped day partitions: 2026-03-01 to 2026-03-04 (4)\n" in out
    today = dt.datetime.now(dt.timezone.utc).date()
    with engine.connect() as conn:
        assert {today + dt.timedelta(days=n) for n in range(8)} <= set(
            day_partitions(conn, "decisions")
        )


def test_retention_days_is_checked(monkeypatch, config_file):
    assert Settings.from_env({}).retention_days is None
    assert Settings.from_env({"BANDITD_RETENTION_DAYS": " "}).retention_days is None
    assert Settings.from_env({"BANDITD_RETENTION_DAYS": "30"}).retention_days == 30.0
    for bad in ("0", "-1", "thirty", "nan", "inf"):
        with pytest.raises(ValueError, match="BANDITD_RETENTION_DAYS must be a number of days"):
            Settings.from_env({"BANDITD_RETENTION_DAYS": bad})
    for bad in ("0", "-2", '"30"', "true"):
        config_file.write_text(
            config_file.read_text().replace(
                '[experiments.push_copy]\npolicy = "beta_ts"',
                f'[experiments.push_copy]\npolicy = "beta_ts"\nretention_days = {bad}',
            )
        )
        with pytest.raises(ConfigError, match="experiments.push_copy.retention_days"):
            load_config(str(config_file))
        config_file.write_text(config_file.read_text().replace(f"retention_days = {bad}\n", ""))


def test_a_running_worker_makes_the_day_partitions_ahead(make_worker_with_retention, engine):
    today = dt.datetime.now(dt.timezone.utc).date()
    last = today + dt.timedelta(days=7)
    with engine.begin() as conn:
        drop_day(conn, last)
        assert last not in day_partitions(conn, "decisions")
    worker = make_worker_with_retention()
    worker.step()
    worker.retention.wait()
    with engine.connect() as conn:
        assert last in day_partitions(conn, "decisions")
        assert last in day_partitions(conn, "rewards")


@pytest.fixture
def make_worker_with_retention(settings, clock):
    from app.services import build_services
    from app.worker import Worker

    made = []

    def make():
        made.append(
            Worker.from_services(
                build_services(settings), clock=clock, block_ms=10, retention_seconds=3600
            )
        )
        return made[-1]

    yield make
    for worker in made:
        worker.close()


def test_a_day_is_left_for_the_next_run_while_a_reader_holds_the_log(
    fake_app, worker, clock, redis_client, engine, settings
):
    _day_of_traffic(fake_app, worker, clock, D1)
    _snapshot(redis_client, engine, "home_feed", clock)
    config = load_config(settings.config_path)
    with engine.connect() as reader:
        reader.execute(sqlalchemy.text("BEGIN; SELECT count(*) FROM decisions"))  # holds a lock
        started = time.monotonic()
        done = apply_retention(engine, config, 1.0, _now(DAYS[3], 0))
        waited = time.monotonic() - started
        reader.execute(sqlalchemy.text("ROLLBACK"))
    assert done.dropped == [] and "log tables busy" in done.held["*"]
    assert waited < 10  # lock_timeout (2 s), not until the reader is done
    again = apply_retention(engine, config, 1.0, _now(DAYS[3], 0))
    assert again.dropped == [D1, DAYS[1]]  # and the empty 03-02


def test_get_experiments_shows_retention_days_as_documented(fake_app, config_file):
    config_file.write_text(
        config_file.read_text().replace(
            '[experiments.push_copy]\npolicy = "beta_ts"',
            '[experiments.push_copy]\npolicy = "beta_ts"\nretention_days = 7',
        )
    )
    answer = fake_app.get("/experiments", headers=AUTH)
    assert answer.status_code == 200
    shown = {e["name"]: e for e in answer.json["experiments"]}
    assert shown["push_copy"]["retention_days"] == 7.0
    assert "retention_days" not in shown["home_feed"]
    info = openapi.schema(openapi.document(), "ExperimentInfo")
    for experiment in shown.values():
        jsonschema.validate(experiment, info)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**shown["push_copy"], "retention_days": 0}, info)


def test_a_day_drops_while_the_worker_writes_and_nothing_is_lost(
    fake_app, worker, clock, redis_client, engine, settings
):
    _day_of_traffic(fake_app, worker, clock, D1)
    _snapshot(redis_client, engine, "home_feed", clock)
    clock.now = _at(DAYS[1], 10)
    running = threading.Thread(target=worker.run)
    running.start()
    try:
        _traffic(fake_app, "home_feed", 20)
        done = apply_retention(engine, load_config(settings.config_path), 1.5, _now(DAYS[2], 12))
        _traffic(fake_app, "home_feed", 20)
        poll(lambda: _decisions_by_day(engine, "home_feed") == {"2026-03-02": 40})
        poll(lambda: redis_client.xlen(keys.stream("home_feed")) == 0)
        checked = poll(
            lambda: (c := verify(redis_client, engine, "home_feed", use_snapshots=False)).ok and c
        )
    finally:
        worker.request_stop()
        running.join()
    assert done.dropped == [D1]
    assert checked.replay.kept_since == DAYS[1]
    learned = "SELECT count(*) AS n FROM rewards WHERE kind = 'explicit'"
    assert rows(engine, learned) == [{"n": 40}]


def _ms(day: dt.date, hour: int) -> int:
    return int(_at(day, hour) * 1000)


def _reward_event(decision_id: str, kind: str, received_ms: int) -> RewardEvent:
    return RewardEvent(
        decision_id=decision_id,
        experiment="home_feed",
        arm="job_cleaning",
        reward=1.0,
        kind=kind,
        received_ms=received_ms,
        features=np.ones(1),
        model_id="m1",
        ridge=1.0,
        reward_min=0.0,
        reward_max=1.0,
    )


def test_the_base_is_the_newest_snapshot_at_or_before_the_horizon(engine, settings):
    decisions = [(D1, 9), (D1, 20), (DAYS[1], 9)]
    batch = []
    for n, (day, hour) in enumerate(decisions):
        decision_id = new_decision_id("home_feed", _ms(day, hour))
        event = DecisionEvent(
            decision_id=decision_id,
            experiment="home_feed",
            decided_ms=_ms(day, hour),
            config_version="cv1",
            policy="linucb",
            model_id="m1",
            request_id=None,
            context={},
            features=np.array([1.0]),
            impressions=(Impression("job_cleaning", 0, 0.5, 1.0),),
            propensity_estimated=False,
        )
        learned_ms = _ms(day, hour + 1)  # learned an hour after the decision
        batch += [
            (f"{_ms(day, hour)}-{n}".encode(), event),
            (
                f"{learned_ms}-{n}".encode(),
                _reward_event(decision_id, "explicit", learned_ms),
            ),
        ]
    EventLog(engine).write(batch)
    positions = [(_ms(D1, 0), 0), (_ms(D1, 22), 0), (_ms(DAYS[2], 6), 0)]
    with engine.begin() as conn:
        for ms, seq in positions:
            conn.execute(
                sqlalchemy.text(
                    "INSERT INTO model_snapshots VALUES ('home_feed', :ms, :seq, 'm1', "
                    "'job_cleaning', now(), 1, 1, 0, '\\x00', '\\x00', '{0}', '{0}')"
                ),
                {"ms": ms, "seq": seq},
            )
    config = load_config(settings.config_path)

    # horizon 03-02 12:00: the newest snapshot at or before it is 03-01 22:00, after every
    # reward of 03-01 (learned at 10:00 and 21:00); the oldest (03-01 00:00) goes
    done = apply_retention(engine, config, 1.5, _now(DAYS[3], 0))

    assert done.bases == {"home_feed": positions[1]}
    assert done.dropped == [D1]
    kept = rows(engine, "SELECT stream_ms, stream_seq FROM model_snapshots ORDER BY 1")
    assert [(r["stream_ms"], r["stream_seq"]) for r in kept] == positions[1:]
    assert replay_base(engine, "home_feed") == (positions[1], DAYS[1])
    assert _decisions_by_day(engine, "home_feed") == {"2026-03-02": 1}


def test_a_reward_learned_after_the_base_holds_its_day(engine, settings):
    decision_id = new_decision_id("home_feed", _ms(D1, 9))
    EventLog(engine).write(
        [
            (
                f"{_ms(D1, 9)}-0".encode(),
                DecisionEvent(
                    decision_id=decision_id,
                    experiment="home_feed",
                    decided_ms=_ms(D1, 9),
                    config_version="cv1",
                    policy="linucb",
                    model_id="m1",
                    request_id=None,
                    context={},
                    features=np.array([1.0]),
                    impressions=(Impression("job_cleaning", 0, 0.5, 1.0),),
                    propensity_estimated=False,
                ),
            ),
            (  # its default reward, learned the next day after the worker was down
                f"{_ms(DAYS[1], 8)}-0".encode(),
                _reward_event(decision_id, "default", _ms(DAYS[1], 8)),
            ),
        ]
    )
    with engine.begin() as conn:
        conn.execute(
            sqlalchemy.text(
                "INSERT INTO model_snapshots VALUES ('home_feed', :ms, 0, 'm1', 'job_cleaning', "
                "now(), 1, 1, 0, '\\x00', '\\x00', '{0}', '{0}')"
            ),
            {"ms": _ms(D1, 22)},
        )
    done = apply_retention(engine, load_config(settings.config_path), 1.5, _now(DAYS[3], 0))
    assert done.dropped == []
    assert "holds 2026-03-01" in done.held["home_feed"]
    assert _decisions_by_day(engine, "home_feed") == {"2026-03-01": 1}
