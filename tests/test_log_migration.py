"""Migration 0005 partitions a log written by the previous release without losing a row.

The log is written at revision 0004 by the previous release's own writer
(app/event_log.py as of RELEASE, read from git) and by the analysts' seeded
log; after the upgrade every row and every view must read the same, each row
must sit in the day partition of its decision id, and the previous batches,
redelivered to the current writer, must add nothing.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import types
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy
from alembic import command
from alembic.config import Config as AlembicConfig

from app.analytics.views import refresh_analyst_views
from app.choosing import new_decision_id
from app.cli import MIGRATIONS
from app.event_log import EventLog
from app.events import ConfigEvent, DecisionEvent, Impression, RewardEvent
from app.services import sqlalchemy_url
from tests import analyst_log
from tests.conftest import TABLES, rows

RELEASE = "ea4820fbc2d45704eb13689fa4bf718844d22669"  # the last commit before migration 0005
ROOT = Path(__file__).resolve().parent.parent
KEYS = {
    "config_versions": "experiment, config_version",
    "decisions": "decision_id",
    "impressions": "decision_id, arm",
    "rewards": "decision_id, arm, kind",
    "model_snapshots": "experiment, stream_ms, stream_seq, model_id, arm",
}
VIEWS = {
    "outcomes": "decision_id, arm",
    "daily_cells": "experiment, day, arm, holdout, top_slot",
    "arm_daily": "experiment, day, arm, holdout",
    "experiment_daily": "experiment, day, holdout",
    "lift_daily": "experiment, day",
    "config_history": "experiment, config_version",
    "pending_rewards": "decision_id, arm",
    "feature_columns": "experiment, config_version, position",
    "impression_rewards": "decision_id, arm, reward_kind",
}


def previous_event_log() -> types.ModuleType:
    """The previous release's app/event_log.py, as a module."""
    source = subprocess.run(
        ["git", "show", f"{RELEASE}:app/event_log.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    module = types.ModuleType("event_log_previous_release")
    exec(compile(source, f"{RELEASE[:7]}:app/event_log.py", "exec"), module.__dict__)
    return module


def batches(now: dt.datetime) -> list[list[tuple[bytes, object]]]:
    """Three days of decisions with rewards of every kind, as stream batches."""
    out = []
    seq = 0
    for days_ago in (3, 1, 0):
        batch: list[tuple[bytes, object]] = []
        noon = dt.datetime.combine(now.date(), dt.time(12), dt.timezone.utc)
        start = int((noon - dt.timedelta(days=days_ago)).timestamp() * 1000)
        batch.append((f"{start}-0".encode(), ConfigEvent("shop", "cv1", {"ridge": 1.0}, start)))
        for n in range(30):
            decided = start + n * 1000
            decision_id = new_decision_id("shop", decided)
            batch.append(
                (
                    f"{decided}-1".encode(),
                    DecisionEvent(
                        decision_id=decision_id,
                        experiment="shop",
                        decided_ms=decided,
                        config_version="cv1",
                        policy="linucb",
                        model_id="m1",
                        request_id=f"r{n}" if n % 3 else None,
                        context={"n": n},
                        features=np.array([1.0, n / 7]),
                        impressions=(Impression("a", 0, 0.5, 1.0), Impression("b", 1, 0.25, 1.0)),
                        propensity_estimated=False,
                        candidates=("a", "b") if n % 2 else None,
                        unit_id=f"u{n % 4}",
                    ),
                )
            )
            for arm, kind in (("a", "explicit"), ("b", "default"), ("a", "late")):
                seq += 1
                batch.append(
                    (
                        f"{decided + 500}-{seq}".encode(),
                        RewardEvent(
                            decision_id=decision_id,
                            experiment="shop",
                            arm=arm,
                            reward=float(n % 2),
                            kind=kind,
                            received_ms=decided + 500,
                            features=np.zeros(2),
                            model_id="m1",
                            ridge=1.0,
                            reward_min=0.0,
                            reward_max=1.0,
                        ),
                    )
                )
        out.append(batch)
    return out


# columns of later revisions: log_day (0005); the item features of an impression and of a
# decision's candidates, and a hybrid arm's B in a snapshot (0006), NULL for every row the
# previous release wrote
LATER_COLUMNS = frozenset({"log_day", "item_features", "item_vector", "candidate_items", "extra"})
NULL_FOR_OLD_ROWS = ("item_features", "item_vector", "candidate_items", "extra")


def _everything(engine) -> dict[str, list[dict]]:
    found = {}
    for table, key in KEYS.items():
        found[table] = [
            {k: v for k, v in r.items() if k not in LATER_COLUMNS}
            for r in rows(engine, f"SELECT * FROM {table} ORDER BY {key}")
            if all(r.get(c) is None for c in NULL_FOR_OLD_ROWS)  # else the row shows up missing
        ]
    for view, key in VIEWS.items():
        found[view] = rows(engine, f"SELECT * FROM {view} ORDER BY {key}")
    return found


@pytest.fixture
def alembic(engine, migrated_database):
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(migrated_database).replace("%", "%%"))
    engine.dispose()
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        command.upgrade(config, "0004")
        yield config
    finally:  # the next tests get an empty log at the head revision, as the session began
        engine.dispose()
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        command.upgrade(config, "head")


def test_a_log_of_the_previous_release_upgrades_without_losing_a_row(alembic, engine):
    now = dt.datetime.now(dt.timezone.utc)
    old_writer = previous_event_log().EventLog(engine)
    written = batches(now)
    for batch in written:
        old_writer.write(batch)
    analyst_log.write(engine, analyst_log.build(now))
    with engine.begin() as conn:
        conn.execute(
            sqlalchemy.text(
                "INSERT INTO model_snapshots VALUES ('shop', 1, 0, 'm1', 'a', now(), 1, 1, 0, "
                "'\\x00', '\\x00', '{0.5}', '{0.5}')"
            )
        )
    refresh_analyst_views(engine)
    before = _everything(engine)
    assert {t: len(before[t]) for t in ("decisions", "impressions", "rewards")} == {
        "decisions": 90 + len(analyst_log.build(now).decisions),
        "impressions": 180 + len(analyst_log.build(now).impressions),
        "rewards": 270 + len(analyst_log.build(now).rewards),
    }

    command.upgrade(alembic, "head")

    refresh_analyst_views(engine)
    assert _everything(engine) == before
    misplaced = []
    for table in ("decisions", "impressions", "rewards"):
        misplaced += rows(
            engine,
            f"SELECT decision_id, tableoid::regclass::text AS part FROM {table} "
            "WHERE log_day <> decision_log_day(decision_id) OR tableoid::regclass::text <> "
            f"CASE WHEN log_day = '1970-01-01' THEN '{table}_default' "
            f"ELSE '{table}_' || to_char(log_day, 'YYYYMMDD') END",
        )
    assert misplaced == []
    days = rows(engine, "SELECT DISTINCT log_day FROM decisions WHERE experiment = 'shop'")
    assert len(days) == 3

    EventLog(engine).write([entry for batch in written for entry in batch])  # redelivered
    assert _everything(engine) == before
    assert set(KEYS) == set(TABLES)
