"""Write events to the Postgres log in batches, exactly once.

Each batch goes in one transaction, in PostgreSQL's binary COPY format
(app/copy_binary.py). Decisions, impressions and rewards are COPYed straight
into their tables: a new batch, the usual case, has no row the log already
holds. If some row is there already (a batch redelivered after a crash
between its commit and its acknowledgement, or a worker that lost its lease
still writing), the primary keys refuse the COPY, and the whole batch is
written again through staging tables with ``ON CONFLICT DO NOTHING``, so
repeats change nothing. Config versions, which every API process announces,
always take that second path.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import orjson
import psycopg2.errors
import sqlalchemy
from sqlalchemy.engine import Engine

from app import copy_binary as pg
from app.events import ConfigEvent, DecisionEvent, Event, RewardEvent
from app.retention.partitions import PG_EPOCH_DAY, log_day

COLUMNS = {
    "config_versions": "experiment, config_version, settings, first_seen_at",
    "decisions": "decision_id, experiment, decided_at, config_version, policy, model_id, "
    "request_id, context, features, shown_count, propensity_estimated, candidates, unit_id, "
    "log_day, candidate_items",
    "impressions": "decision_id, experiment, arm, position, score, propensity, "
    "propensity_estimated, decided_at, config_version, log_day, item_features, item_vector",
    "rewards": "decision_id, experiment, arm, reward, kind, received_at, stream_ms, stream_seq, "
    "log_day",
}

# How a staged table joins the log; where one batch can hold a row twice, the first wins.
MERGES = {
    "config_versions": "SELECT DISTINCT ON (experiment, config_version) {columns} "
    "FROM stage_config_versions ORDER BY experiment, config_version, first_seen_at",
    "decisions": "SELECT {columns} FROM stage_decisions",
    "impressions": "SELECT {columns} FROM stage_impressions",
    "rewards": "SELECT DISTINCT ON (decision_id, arm, kind) {columns} FROM stage_rewards "
    "ORDER BY decision_id, arm, kind, stream_ms, stream_seq",
}

ALWAYS_STAGED = frozenset({"config_versions"})


def _rows(entries: Sequence[tuple[bytes, Event]]) -> dict[str, list[bytes]]:
    rows: dict[str, list[bytes]] = {name: [] for name in COLUMNS}
    # experiment, config version, policy, model, arm and kind repeat across a batch
    known: dict[str | None, bytes] = {}

    def text(value: str | None) -> bytes:
        encoded = known.get(value)
        if encoded is None:
            encoded = known[value] = pg.text(value)
        return encoded

    for entry_id, event in entries:
        if isinstance(event, DecisionEvent):
            decided_at = pg.timestamptz(event.decided_ms)
            experiment = text(event.experiment)
            decision_id = pg.text(event.decision_id)
            day = _log_day(event.decision_id)
            config_version = text(event.config_version)
            estimated = pg.boolean(event.propensity_estimated)
            vectors = event.item_vectors
            rows["decisions"].append(
                pg.row(
                    decision_id,
                    experiment,
                    decided_at,
                    config_version,
                    text(event.policy),
                    text(event.model_id),
                    pg.text(event.request_id),
                    pg.jsonb(orjson.dumps(event.context)),
                    pg.float8_array(event.features),
                    pg.int4(len(event.impressions)),
                    estimated,
                    pg.text_array(event.candidates),
                    pg.text(event.unit_id),
                    day,
                    _flat(event.candidate_vectors),
                )
            )
            rows["impressions"].extend(
                pg.row(
                    decision_id,
                    experiment,
                    text(i.arm),
                    pg.int4(i.position),
                    pg.float8(i.score),
                    pg.float8(i.propensity),
                    estimated,
                    decided_at,
                    config_version,
                    day,
                    pg.NULL if i.item is None else pg.jsonb(orjson.dumps(i.item)),
                    pg.NULL if vectors is None else pg.float8_array(vectors[i.position]),
                )
                for i in event.impressions
            )
        elif isinstance(event, RewardEvent):
            ms, seq = entry_id.split(b"-")
            rows["rewards"].append(
                pg.row(
                    pg.text(event.decision_id),
                    text(event.experiment),
                    text(event.arm),
                    pg.float8(event.reward),
                    text(event.kind),
                    pg.timestamptz(event.received_ms),
                    pg.int8(int(ms)),
                    pg.int8(int(seq)),
                    _log_day(event.decision_id),
                )
            )
        elif isinstance(event, ConfigEvent):
            rows["config_versions"].append(
                pg.row(
                    pg.text(event.experiment),
                    pg.text(event.config_version),
                    pg.jsonb(orjson.dumps(event.settings)),
                    pg.timestamptz(event.seen_ms),
                )
            )
    return rows


def _flat(vectors: np.ndarray | None) -> bytes:
    """Every candidate's item vector, row after row, as one float8[] (or NULL)."""
    return pg.NULL if vectors is None else pg.float8_array(vectors.reshape(-1))


def _log_day(decision_id: str) -> bytes:
    """The row's ``log_day`` (its partition; app/retention/partitions.py) as a date field."""
    return pg.int4(log_day(decision_id) - PG_EPOCH_DAY)


def encode(entries: Sequence[tuple[bytes, Event]]) -> dict[str, bytes]:
    """A batch of stream entries as binary COPY data per log table (tables with rows only)."""
    return {
        table: b"".join((pg.HEADER, *rows, pg.TRAILER))
        for table, rows in _rows(entries).items()
        if rows
    }


def _copy(cursor, table: str, data: bytes, into: str | None = None) -> None:
    cursor.copy_expert(
        f"COPY {into or table} ({COLUMNS[table]}) FROM STDIN WITH (FORMAT binary)",
        io.BytesIO(data),
        size=len(data),  # one read: a chunked read would take the GIL back once per chunk
    )


def _stage(cursor, table: str, data: bytes) -> None:
    stage = f"stage_{table}"
    cursor.execute(f"CREATE TEMP TABLE {stage} (LIKE {table}) ON COMMIT DROP")
    _copy(cursor, table, data, into=stage)
    select = MERGES[table].format(columns=COLUMNS[table])
    cursor.execute(f"INSERT INTO {table} ({COLUMNS[table]}) {select} ON CONFLICT DO NOTHING")


class EventLog:
    """The Postgres log of decisions, impressions, rewards and config versions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def write(self, entries: Sequence[tuple[bytes, Event]]) -> None:
        """Write a batch of stream entries in one transaction; repeats are ignored."""
        self.write_encoded(encode(entries))

    def write_encoded(self, batch: dict[str, bytes]) -> None:
        """Write a batch made by :func:`encode`: ``write`` with the CPU work done elsewhere.

        The worker encodes on its main thread and writes on another, which then
        holds the GIL only briefly while Postgres works.
        """
        if not batch:
            return
        connection = self.engine.raw_connection()
        try:
            try:
                self._write(connection, batch, staged=ALWAYS_STAGED)
            except psycopg2.errors.UniqueViolation:
                connection.rollback()
                self._write(connection, batch, staged=frozenset(batch))
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            # Postgres closed it (a restart) or it broke: the pool, which pings only
            # connections idle for a while (app/services.py), must not hand it out again
            connection.invalidate()
            raise
        except BaseException:
            connection.rollback()
            raise
        finally:
            connection.close()

    @staticmethod
    def _write(connection, batch: dict[str, bytes], staged: frozenset[str]) -> None:
        with connection.cursor() as cursor:
            for table, data in batch.items():
                if table in staged:
                    _stage(cursor, table, data)
                else:
                    _copy(cursor, table, data)
        connection.commit()

    def ping(self) -> None:
        """Raise if Postgres cannot be reached."""
        with self.engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
