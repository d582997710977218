"""Write events to the Postgres log in batches, idempotently.

Each batch goes in one transaction: rows are COPYed into temporary staging
tables, then inserted with ``ON CONFLICT DO NOTHING``, so writing the same
events twice (a redelivery after a crash) changes nothing.
"""

from __future__ import annotations

import csv
import io
from typing import Iterable, Sequence

import orjson
import sqlalchemy
from sqlalchemy.engine import Engine

from app.events import ConfigEvent, DecisionEvent, Event, RewardEvent

# (staging columns with types, the INSERT ... SELECT that moves them into the log)
STAGES = {
    "config_versions": (
        "experiment text, config_version text, settings text, seen_ms bigint",
        """INSERT INTO config_versions (experiment, config_version, settings, first_seen_at)
           SELECT DISTINCT ON (experiment, config_version) experiment, config_version,
                  settings::jsonb, to_timestamp(seen_ms / 1000.0)
           FROM stage_config_versions ORDER BY experiment, config_version, seen_ms
           ON CONFLICT DO NOTHING""",
    ),
    "decisions": (
        "decision_id text, experiment text, decided_ms bigint, config_version text, "
        "policy text, model_id text, request_id text, context text, features text, "
        "shown_count int, propensity_estimated boolean",
        """INSERT INTO decisions (decision_id, experiment, decided_at, config_version, policy,
                  model_id, request_id, context, features, shown_count, propensity_estimated)
           SELECT decision_id, experiment, to_timestamp(decided_ms / 1000.0), config_version,
                  policy, model_id, request_id, context::jsonb, features::float8[], shown_count,
                  propensity_estimated
           FROM stage_decisions ON CONFLICT DO NOTHING""",
    ),
    "impressions": (
        "decision_id text, experiment text, arm text, position int, score float8, "
        "propensity float8, propensity_estimated boolean, decided_ms bigint, config_version text",
        """INSERT INTO impressions (decision_id, experiment, arm, position, score, propensity,
                  propensity_estimated, decided_at, config_version)
           SELECT decision_id, experiment, arm, position, score, propensity,
                  propensity_estimated, to_timestamp(decided_ms / 1000.0), config_version
           FROM stage_impressions ON CONFLICT DO NOTHING""",
    ),
    "rewards": (
        "decision_id text, experiment text, arm text, reward float8, kind text, "
        "received_ms bigint, stream_ms bigint, stream_seq bigint",
        """INSERT INTO rewards (decision_id, experiment, arm, reward, kind, received_at,
                  stream_ms, stream_seq)
           SELECT DISTINCT ON (decision_id, arm, kind) decision_id, experiment, arm, reward, kind,
                  to_timestamp(received_ms / 1000.0), stream_ms, stream_seq
           FROM stage_rewards ORDER BY decision_id, arm, kind, stream_ms, stream_seq
           ON CONFLICT DO NOTHING""",
    ),
}


def _rows(entries: Sequence[tuple[bytes, Event]]) -> dict[str, list[tuple]]:
    rows: dict[str, list[tuple]] = {name: [] for name in STAGES}
    for entry_id, event in entries:
        if isinstance(event, DecisionEvent):
            features = "{" + ",".join(repr(float(v)) for v in event.features) + "}"
            rows["decisions"].append(
                (
                    event.decision_id,
                    event.experiment,
                    event.decided_ms,
                    event.config_version,
                    event.policy,
                    event.model_id,
                    event.request_id,
                    orjson.dumps(event.context).decode(),
                    features,
                    len(event.impressions),
                    event.propensity_estimated,
                )
            )
            rows["impressions"].extend(
                (
                    event.decision_id,
                    event.experiment,
                    i.arm,
                    i.position,
                    i.score,
                    i.propensity,
                    event.propensity_estimated,
                    event.decided_ms,
                    event.config_version,
                )
                for i in event.impressions
            )
        elif isinstance(event, RewardEvent):
            ms, seq = entry_id.split(b"-")
            rows["rewards"].append(
                (
                    event.decision_id,
                    event.experiment,
                    event.arm,
                    event.reward,
                    event.kind,
                    event.received_ms,
                    int(ms),
                    int(seq),
                )
            )
        elif isinstance(event, ConfigEvent):
            rows["config_versions"].append(
                (
                    event.experiment,
                    event.config_version,
                    orjson.dumps(event.settings).decode(),
                    event.seen_ms,
                )
            )
    return rows


def _csv(rows: Iterable[tuple]) -> io.StringIO:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        writer.writerow(["t" if v is True else "f" if v is False else v for v in row])
    buffer.seek(0)
    return buffer


class EventLog:
    """The Postgres log of decisions, impressions, rewards and config versions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def write(self, entries: Sequence[tuple[bytes, Event]]) -> None:
        """Write a batch of stream entries in one transaction; repeats are ignored."""
        rows = _rows(entries)
        connection = self.engine.raw_connection()
        try:
            with connection.cursor() as cursor:
                for name, (columns, insert) in STAGES.items():
                    if not rows[name]:
                        continue
                    cursor.execute(f"CREATE TEMP TABLE stage_{name} ({columns}) ON COMMIT DROP")
                    cursor.copy_expert(
                        f"COPY stage_{name} FROM STDIN WITH (FORMAT csv)", _csv(rows[name])
                    )
                    cursor.execute(insert)
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            connection.close()

    def ping(self) -> None:
        """Raise if Postgres cannot be reached."""
        with self.engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
