"""Postgres connections: pinged before use only after sitting idle, and a broken one never
handed out twice (the worker's log writes take one for every batch)."""

from __future__ import annotations

import psycopg2
import pytest
import sqlalchemy

from app.event_log import EventLog
from app.services import database_engine
from tests.conftest import rows
from tests.test_event_log import _decision


def _backend_of(connection) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    connection.rollback()
    return pid


def _terminate(engine, pid: int) -> None:
    """End a backend as a Postgres restart would, and wait until it is gone."""
    with engine.connect() as conn:
        ended = conn.execute(
            sqlalchemy.text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid}
        )
        assert ended.scalar() is True


def _end_pooled_backend(engine, killer) -> int:
    """Check a connection out and back in, then end its backend (``killer`` is another
    engine); returns the ended backend's pid."""
    connection = engine.raw_connection()
    pid = _backend_of(connection)
    connection.close()
    _terminate(killer, pid)
    return pid


@pytest.fixture
def pooled(migrated_database):
    """Engines on the test database: one that never pings (its idle window is longer than
    any test), one that always does, and one to end the others' backends with."""
    engines = {
        "never": database_engine(migrated_database, ping_after_idle_s=3600.0),
        "always": database_engine(migrated_database, ping_after_idle_s=0.0),
        "killer": database_engine(migrated_database),
    }
    yield engines
    for engine in engines.values():
        engine.dispose()


def test_a_connection_used_a_moment_ago_is_handed_out_without_a_ping(pooled):
    engine = pooled["never"]
    _end_pooled_backend(engine, pooled["killer"])
    again = engine.raw_connection()  # the same one, not checked: its first use fails
    try:
        with pytest.raises(psycopg2.OperationalError):
            _backend_of(again)
    finally:
        again.invalidate()
        again.close()


def test_a_connection_idle_past_the_window_is_pinged_and_replaced_if_closed(pooled):
    engine = pooled["always"]
    pid = _end_pooled_backend(engine, pooled["killer"])
    replaced = engine.raw_connection()
    try:
        assert _backend_of(replaced) != pid  # a new backend, found by the ping
    finally:
        replaced.close()


def test_a_log_write_on_a_closed_connection_fails_once_and_the_next_one_lands(pooled, engine):
    log = EventLog(pooled["never"])
    log.write([(b"1-0", _decision(1))])
    _end_pooled_backend(pooled["never"], pooled["killer"])  # the pool's one, the write's
    with pytest.raises(psycopg2.OperationalError):
        log.write([(b"2-0", _decision(2))])  # the worker retries a batch that failed
    log.write([(b"2-0", _decision(2))])  # not on the closed connection again
    assert [
        r["decision_id"] for r in rows(engine, "SELECT decision_id FROM decisions ORDER BY 1")
    ] == [
        "exp:0001",
        "exp:0002",
    ]
