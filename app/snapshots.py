"""Periodic copies of the live model in Postgres, so a rebuild replays only a tail of the log.

A snapshot of an experiment is one ``model_snapshots`` row per arm of every
model of the experiment, all at one stream position: the learning watermark,
whose every reward they include. It is complete: every arm with a reward at or
before that position has a row (by induction: the arms of the previous
snapshot plus those of the rewards logged since). A rebuild starts from the
latest snapshot at or before the point it wants and replays the rewards after
it.

The worker takes a snapshot right after a save, every ``every_rewards``
learned rewards or ``every_seconds`` seconds, by reading the live model and its
watermark in one Redis transaction (:mod:`app.live_model`) and writing the rows
in one Postgres transaction, the way the log is written. It first checks each
arm's reward count against the log (previous snapshot + rewards since), and
takes no snapshot of a model the log cannot explain, e.g. one that lost its
Redis keys: a snapshot must never make such a loss permanent.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import psycopg2
import redis
import sqlalchemy
import sqlalchemy.exc
from sqlalchemy.engine import Engine

from app import keys
from app.live_model import LiveModel, LiveModelBusy, Position, position, read_live
from bandits import LearningState

log = logging.getLogger(__name__)

STAGE = (
    "experiment text, stream_ms bigint, stream_seq bigint, model_id text, arm text, "
    "taken_ms bigint, n float8, successes float8, failures float8, "
    "a bytea, a_inv bytea, b text, theta text, extra bytea"
)
INSERT = """
INSERT INTO model_snapshots (experiment, stream_ms, stream_seq, model_id, arm, taken_at,
       n, successes, failures, a, a_inv, b, theta, extra)
SELECT experiment, stream_ms, stream_seq, model_id, arm, to_timestamp(taken_ms / 1000.0),
       n, successes, failures, a, a_inv, b::float8[], theta::float8[], extra
FROM stage_model_snapshots
ON CONFLICT DO NOTHING
"""
# Besides the latest ``keep``, the newest of each UTC day stays (retention picks its
# replay base among them: app/retention/keeper.py, which deletes the older ones),
# and so does the base retention recorded.
PRUNE = """
DELETE FROM model_snapshots
WHERE experiment = :experiment AND (stream_ms, stream_seq) < (
    SELECT stream_ms, stream_seq FROM (
        SELECT DISTINCT stream_ms, stream_seq FROM model_snapshots
        WHERE experiment = :experiment
        ORDER BY stream_ms DESC, stream_seq DESC LIMIT :keep
    ) kept ORDER BY stream_ms, stream_seq LIMIT 1)
  AND (stream_ms, stream_seq) NOT IN (
    SELECT DISTINCT ON (stream_ms / 86400000) stream_ms, stream_seq FROM model_snapshots
    WHERE experiment = :experiment
    ORDER BY stream_ms / 86400000, stream_ms DESC, stream_seq DESC)
  AND (stream_ms, stream_seq) NOT IN (
    SELECT base_ms, base_seq FROM log_retention WHERE experiment = :experiment)
"""
LATEST = """
SELECT model_id, arm, stream_ms, stream_seq, n, successes, failures, a, a_inv, b, theta, extra
FROM model_snapshots
WHERE experiment = :experiment AND (stream_ms, stream_seq) = (
    SELECT stream_ms, stream_seq FROM model_snapshots
    WHERE experiment = :experiment AND (stream_ms, stream_seq) <= (:ms, :seq)
    ORDER BY stream_ms DESC, stream_seq DESC LIMIT 1)
"""
BASE = """
SELECT model_id, arm, n, stream_ms, stream_seq FROM model_snapshots
WHERE experiment = :experiment AND (stream_ms, stream_seq) = (
    SELECT stream_ms, stream_seq FROM model_snapshots
    WHERE experiment = :experiment AND (stream_ms, stream_seq) <= (:ms, :seq)
    ORDER BY stream_ms DESC, stream_seq DESC LIMIT 1)
"""
# A reward of a shared model is learned by its one row '*' (app.config.SHARED_ARM); one of a
# hybrid model by its arm's row and the shared row both.
LOGGED_COUNTS = """
WITH learned AS (
    SELECT d.model_id, r.arm, c.settings->'item_layout'->>'m' AS item_model
    FROM rewards r
    JOIN decisions d ON d.decision_id = r.decision_id AND d.log_day = r.log_day
    LEFT JOIN config_versions c
           ON c.experiment = d.experiment AND c.config_version = d.config_version
    WHERE r.experiment = :experiment AND r.kind IN ('explicit', 'default')
      AND (r.stream_ms, r.stream_seq) > (:after_ms, :after_seq)
      AND (r.stream_ms, r.stream_seq) <= (:upto_ms, :upto_seq)
)
SELECT model_id, CASE WHEN item_model = 'shared' THEN '*' ELSE arm END AS arm, count(*) AS n
FROM learned GROUP BY 1, 2
UNION ALL
SELECT model_id, '*', count(*) FROM learned WHERE item_model = 'hybrid' GROUP BY 1
"""
END = (2**63 - 1, 2**63 - 1)
MATRIX_DTYPE = np.dtype(
    "<f8"
)  # A and A_inv are stored as these bytes, row-major  # a position after every stream entry


@dataclass
class Snapshot:
    """The arms of one snapshot and the position they include everything up to."""

    position: Position
    arms: dict[tuple[str, str], LearningState]  # (model_id, arm) -> one-arm state
    extras: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # hybrid arms' B


def write_snapshot(engine: Engine, experiment: str, live: LiveModel, taken_ms: int) -> None:
    """Store ``live`` as a snapshot at its watermark (once; a repeat is ignored)."""
    if live.watermark is None:
        raise ValueError("a snapshot needs the watermark its arms include everything up to")
    ms, seq = live.watermark
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for (model_id, arm), params in sorted(live.arms.items()):
        s = params.state
        writer.writerow(
            [
                experiment,
                ms,
                seq,
                model_id,
                arm,
                taken_ms,
                repr(float(s.n[0])),
                repr(float(s.successes[0])),
                repr(float(s.failures[0])),
                _matrix(s.A[0]),
                _matrix(s.A_inv[0]),
                _array(s.b[0]),
                _array(s.theta[0]),
                None if params.extra is None else _matrix(params.extra),
            ]
        )
    buffer.seek(0)
    with engine.begin() as conn:
        cursor = conn.connection.cursor()
        cursor.execute(f"CREATE TEMP TABLE stage_model_snapshots ({STAGE}) ON COMMIT DROP")
        cursor.copy_expert("COPY stage_model_snapshots FROM STDIN WITH (FORMAT csv)", buffer)
        cursor.execute(INSERT)


def prune_snapshots(engine: Engine, experiment: str, keep: int) -> None:
    """Delete the snapshots of ``experiment`` but the ``keep`` latest, each day's newest and
    the one retention replays from."""
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(PRUNE), {"experiment": experiment, "keep": keep})


def latest_snapshot(
    engine: Engine, experiment: str, upto: Position | None = None
) -> Snapshot | None:
    """The latest snapshot of ``experiment`` at or before ``upto`` (default: any), or None."""
    ms, seq = upto or END
    with engine.connect() as conn:
        rows = conn.execute(
            sqlalchemy.text(LATEST), {"experiment": experiment, "ms": ms, "seq": seq}
        ).all()
    if not rows:
        return None
    arms, extras = {}, {}
    for r in rows:
        dim = len(r.theta)
        arms[(r.model_id, r.arm)] = LearningState(
            A_inv=_read_matrix(r.a_inv, dim),
            theta=np.array([r.theta], dtype=np.float64),
            n=np.array([r.n]),
            successes=np.array([r.successes]),
            failures=np.array([r.failures]),
            A=_read_matrix(r.a, dim),
            b=np.array([r.b], dtype=np.float64),
        )
        if r.extra is not None:
            extras[(r.model_id, r.arm)] = (
                np.frombuffer(r.extra, dtype=MATRIX_DTYPE).astype(np.float64).reshape(dim, -1)
            )
    return Snapshot((rows[0].stream_ms, rows[0].stream_seq), arms, extras)


def take_snapshot(
    client: redis.Redis, engine: Engine, experiment: str, taken_ms: int
) -> Position | None:
    """Snapshot the live model of ``experiment``; its position, or None if none was taken.

    None when nothing was learned since the latest snapshot, when the model
    moved while it was read, or when the live reward counts disagree with the
    log (logged: a snapshot must never preserve a model the log cannot explain).
    """
    watermark = position(client.get(keys.applied(experiment)))
    if watermark is None:
        return None
    expected = _logged_counts(engine, experiment, watermark)
    if expected is None:
        return None
    live = read_live(client, experiment, {model for model, _ in expected})
    if live.watermark != watermark or not live.arms:
        return None
    differ = sorted(
        key
        for key in set(expected) | set(live.arms)
        if expected.get(key, 0.0) != (live.arms[key].state.n[0] if key in live.arms else 0.0)
    )
    if differ:
        log.warning(
            "no snapshot of %s: the live reward counts of %d arm(s) (e.g. %s) disagree with "
            "the log; run banditd rebuild --experiment %s --verify",
            experiment,
            len(differ),
            "/".join(differ[0]),
            experiment,
        )
        return None
    write_snapshot(engine, experiment, live, taken_ms)
    return watermark


def _logged_counts(
    engine: Engine, experiment: str, upto: Position
) -> dict[tuple[str, str], float] | None:
    """Rewards per (model, arm) in the log up to ``upto``; None if a snapshot is already there.

    The latest snapshot's counts plus the rewards logged after it: a short
    query however long the log, and complete, since that snapshot was.
    """
    with engine.connect() as conn:
        base = conn.execute(
            sqlalchemy.text(BASE), {"experiment": experiment, "ms": upto[0], "seq": upto[1]}
        ).all()
        after = (base[0].stream_ms, base[0].stream_seq) if base else (-1, -1)
        if after == upto:
            return None
        logged = conn.execute(
            sqlalchemy.text(LOGGED_COUNTS),
            {
                "experiment": experiment,
                "after_ms": after[0],
                "after_seq": after[1],
                "upto_ms": upto[0],
                "upto_seq": upto[1],
            },
        ).all()
    counts = {(r.model_id, r.arm): r.n for r in base}
    for r in logged:
        counts[(r.model_id, r.arm)] = counts.get((r.model_id, r.arm), 0.0) + r.n
    return counts


class Snapshotter:
    """Decides when the worker snapshots an experiment, and takes the snapshot."""

    def __init__(
        self,
        client: redis.Redis,
        engine: Engine,
        *,
        every_rewards: int = 10_000,
        every_seconds: float = 300.0,
        keep: int = 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.engine = engine
        self.every_rewards = every_rewards
        self.every_seconds = every_seconds
        self.keep = keep
        self.clock = clock
        self._since: dict[str, tuple[int, float]] = {}  # experiment -> (learned, last taken at)

    def after_learning(self, experiment: str, learned: int) -> Position | None:
        """Count ``learned`` rewards; snapshot if one is due. Returns its position, if taken.

        A failed snapshot is logged and tried again after the next batch; it
        never stops the worker.
        """
        now = self.clock()
        count, last = self._since.get(experiment, (0, now))
        count += learned
        self._since[experiment] = (count, last)
        due = (self.every_rewards > 0 and count >= self.every_rewards) or (
            self.every_seconds > 0 and count > 0 and now - last >= self.every_seconds
        )
        if not due:
            return None
        try:
            taken = take_snapshot(self.client, self.engine, experiment, int(now * 1000))
            if taken is not None:
                prune_snapshots(self.engine, experiment, self.keep)
        except (
            redis.RedisError,
            sqlalchemy.exc.SQLAlchemyError,
            psycopg2.Error,  # the COPY uses the raw DBAPI cursor, which SQLAlchemy does not wrap
            LiveModelBusy,
        ) as exc:
            log.warning("snapshot of %s failed, will retry: %s", experiment, exc, exc_info=True)
            return None
        self._since[experiment] = (0, now)
        if taken is not None:
            log.info("snapshot of %s at %d-%d", experiment, *taken)
        return taken


def _array(values: np.ndarray) -> str:
    """A float8[] literal that reads back as exactly these values (shortest round-trip form)."""
    return "{" + ",".join(map(repr, values.tolist())) + "}"


def _read_matrix(raw: bytes, dim: int) -> np.ndarray:
    """A one-arm ``(1, dim, dim)`` float64 array from what :func:`_matrix` stored."""
    return np.frombuffer(raw, dtype=MATRIX_DTYPE).astype(np.float64).reshape(1, dim, dim)


def _matrix(values: np.ndarray) -> str:
    """A bytea literal (hex) of a matrix as row-major little-endian float64."""
    return "\\x" + values.astype(MATRIX_DTYPE).tobytes().hex()
