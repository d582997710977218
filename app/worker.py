"""The online update worker.

``Worker.run`` reads top to bottom: stop flag, config reload, leases, close
reward windows that expired, then for each owned stream read a batch, write
it to Postgres, learn from its rewards in Redis, acknowledge it, and copy the
model into a Postgres snapshot when one is due (app/snapshots.py). An entry
is acknowledged only after both its log rows and its learning are durable;
both are idempotent, so a crash anywhere means a redelivery, never a loss or a
double count.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable

import psycopg2
import redis
import sqlalchemy.exc

from app.config_source import ConfigSource
from app.event_log import EventLog
from app.event_stream import EventStream
from app.events import decode
from app.learner import Learner
from app.lease import LeaseLost, Leases
from app.model_store import ModelStore
from app.services import Services
from app.snapshots import Snapshotter

log = logging.getLogger(__name__)

RETRYABLE = (
    redis.ConnectionError,
    redis.TimeoutError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    # EventLog.write and snapshots COPY through the raw DBAPI connection, whose errors
    # SQLAlchemy does not wrap
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
)


def _stream_vanished(exc: redis.ResponseError) -> bool:
    message = str(exc)
    return message.startswith("NOGROUP") or "no longer exists" in message


class Worker:
    """Moves events from the Redis streams into Postgres and the model."""

    def __init__(
        self,
        *,
        stream: EventStream,
        store: ModelStore,
        event_log: EventLog,
        config: ConfigSource,
        leases: Leases | None = None,
        batch_size: int = 2000,
        block_ms: int = 100,
        max_backoff: float = 5.0,
        clock: Callable[[], float] = time.time,
        snapshot_every: int = 10_000,
        snapshot_seconds: float = 300.0,
    ) -> None:
        self.stream = stream
        self.event_log = event_log
        self.config = config
        self.consumer = f"{socket.gethostname()}-{os.getpid()}"
        self.leases = leases or Leases(stream.redis, self.consumer)
        self.learner = Learner(store, holder=self.consumer)
        # model snapshots in Postgres bound the replay of `banditd rebuild`
        self.snapshots = Snapshotter(
            store.redis,
            event_log.engine,
            every_rewards=snapshot_every,
            every_seconds=snapshot_seconds,
            clock=clock,
        )
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.max_backoff = max_backoff
        self.clock = clock
        self.owned: set[str] = set()
        self.stop_requested = False

    @classmethod
    def from_services(cls, services: Services, **options) -> "Worker":
        """A worker over the shared services; ``options`` as for the constructor."""
        return cls(
            stream=services.stream,
            store=services.store,
            event_log=services.event_log,
            config=services.config,
            **options,
        )

    def request_stop(self) -> None:
        """Finish the current batch, then return from ``run``."""
        self.stop_requested = True

    def run(self, *, max_events: int | None = None, until_idle: bool = False) -> int:
        """Process events until stopped; returns how many stream entries were processed.

        ``max_events`` and ``until_idle`` make the loop finite (for tests and
        for draining a backlog).
        """
        processed = 0
        backoff = 0.0
        while not self.stop_requested:
            try:
                budget = None if max_events is None else max_events - processed
                done = self.step(budget)
                backoff = 0.0
                processed += done
                if max_events is not None and processed >= max_events:
                    break
                if done == 0:
                    if until_idle:
                        break
                    if self.owned:
                        self.stream.wait_for_any(sorted(self.owned), self.block_ms)
                    else:  # a standby: try for a lease again shortly, do not spin on Redis
                        time.sleep(self.block_ms / 1000)
            except RETRYABLE as exc:
                backoff = min(max(backoff * 2, 0.1), self.max_backoff)
                log.warning("storage unavailable (%s); retrying in %.1fs", exc, backoff)
                time.sleep(backoff)
            except LeaseLost as exc:
                # Stalled past the lease: another worker owns the stream now. Our
                # unacknowledged entries are theirs to claim; nothing of ours was saved.
                log.warning("lost the lease of %s while learning; leaving it", exc)
                self.owned.discard(str(exc))
                self.learner.forget(str(exc))
            except redis.ResponseError as exc:
                if not _stream_vanished(exc):
                    raise
                # The stream or its group was deleted (a flush, a restart without
                # persistence): take the streams over again, which recreates the groups.
                log.warning("a stream or consumer group vanished (%s); re-acquiring", exc)
                for experiment in self.owned:
                    self.learner.forget(experiment)
                self.owned.clear()
        return processed

    def step(self, budget: int | None = None) -> int:
        """One pass over the owned streams, reading at most ``budget`` entries; returns how many."""
        config = self.config.current()
        self._refresh_leases(sorted(config.experiments))
        now_ms = int(self.clock() * 1000)
        done = 0
        for experiment in sorted(self.owned):
            self.stream.announce_config(config.experiments[experiment], now_ms)
            self.stream.close_windows(experiment, now_ms)
            count = self.batch_size if budget is None else min(self.batch_size, budget - done)
            if count <= 0:
                break
            done += self._process_batch(experiment, count)
        return done

    def release(self) -> None:
        """Give up every lease (on a clean shutdown) so another worker can take over at once."""
        for experiment in self.owned:
            self.leases.release(experiment)
        self.owned.clear()

    def _refresh_leases(self, experiments: list[str]) -> None:
        for experiment in experiments:
            taken = self.leases.take(experiment)
            held = taken is not None
            # "acquired" while still owned: our lease lapsed, and another worker may have
            # learned and left entries pending meanwhile; start over like a new holder
            if held and (experiment not in self.owned or taken == "acquired"):
                self.stream.ensure_group(experiment)
                self.stream.claim_abandoned(experiment, self.consumer)
                self.learner.forget(experiment)
                self.owned.add(experiment)
                log.info("processing stream of %s", experiment)
            elif not held and experiment in self.owned:
                self.owned.discard(experiment)
                self.learner.forget(experiment)
                log.info("lost the lease of %s", experiment)
        for experiment in self.owned - set(experiments):
            self.leases.release(experiment)
            self.owned.discard(experiment)

    def _process_batch(self, experiment: str, count: int) -> int:
        entries = self.stream.read(experiment, self.consumer, count, new=False)
        if not entries:
            entries = self.stream.read_new(experiment, self.consumer, count)
        if not entries:
            return 0
        events = []
        for entry_id, fields in entries:
            try:
                events.append((entry_id, decode(experiment, fields)))
            except (ValueError, KeyError) as exc:
                # A malformed entry can never succeed; keep it out of the way of the rest.
                log.error("skipping malformed entry %s of %s: %r", entry_id, experiment, exc)
        self.event_log.write(events)
        learned = self.learner.learn(experiment, events)
        self.stream.ack(experiment, [entry_id for entry_id, _ in entries])
        self.snapshots.after_learning(experiment, learned)
        return len(entries)
