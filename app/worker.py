"""The online update worker.

``Worker.run`` reads top to bottom: stop flag, config reload, leases, close
reward windows that expired, then for each owned stream read a batch, learn
from its rewards in Redis, write it to Postgres, acknowledge it, and copy the
model into a Postgres snapshot when one is due (app/snapshots.py). An entry
is acknowledged only after both its log rows and its learning are durable;
both are idempotent, so a crash anywhere means a redelivery, never a loss or a
double count.

The Postgres write of a batch runs on a writer thread while the next batch is
read, decoded and learned in memory (psycopg2 releases the GIL while Postgres
works), so the two halves of the work overlap. At most one batch per stream is
in flight; once its write has committed, what it learned is saved to Redis
and its entries are acknowledged, in that order. While a backlog lasts, a
reader thread reads the batch after the one being learned, so that the main
thread does not wait for Redis to send it (app/new_entries.py). After an error, or on taking a
lease over, the stream's unacknowledged entries are read again first and
whatever was learned but not saved is learned again.

Under steady traffic each batch is small, and its fixed cost (the read, the
Postgres transaction, the save) would be paid for every few events. So once a
stream is read to its end, the running worker waits for the next entry and
then lingers until that entry is ``linger_ms`` old (its age from its stream
id: one that came while the last batch was processed lingers less) for more
to join it; renews its leases and closes
reward windows every ``housekeeping_seconds`` rather than on every pass (every
stream's lease and windows in one round trip each); reads only the streams
the wait saw new entries in (and every stream every ``READ_ALL_SECONDS``);
reads a trickle with the lease check in one round trip; logs a batch that
reached the stream's end on the main thread (there is nothing to overlap it with); and
acknowledges in the save's transaction. Each save is published, so that API
processes refresh at once (app/model_push.py).

Entries read again are handled one by one (app/quarantine.py), and so is a
batch in which something failed for a reason of its own (app/poison.py): an
entry that cannot be decoded, learned from or logged is moved to the
experiment's dead letters (app/deadletters.py) and the rest flows on.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import redis

from app.analytics.views import REFRESH_SECONDS, ViewRefresher
from app.config_source import ConfigSource
from app.deadletters import DeadLetters
from app.event_log import EventLog, encode
from app.event_stream import EventStream
from app.events import decode
from app.learner import Learned, Learner
from app.learning_settings import LearningSettings
from app.lease import LeaseLost, Leases, LiveWorkers, preference, share
from app.metrics import worker as worker_metrics
from app.model_store import ModelStore
from app.new_entries import NewEntries
from app.poison import RETRYABLE, PoisonedBatch, poison_of, stream_vanished
from app.quarantine import Quarantine
from app.retired_streams import RetiredStreams
from app.services import Services
from app.retention.keeper import RetentionKeeper
from app.snapshots import Snapshotter

log = logging.getLogger(__name__)

# After a wait only the streams it saw entries in are read; every stream is read at
# least this often all the same (a safety net: the waits are what bring new entries).
READ_ALL_SECONDS = 10.0


@dataclass
class InFlight:
    """A batch whose Postgres write is running: what it learned, which entries it holds."""

    write: Future
    learned: Learned | None
    entry_ids: list[bytes]


def _finished(function: Callable, *args) -> Future:
    """``function(*args)`` run now, its outcome held in a Future as if it had been submitted."""
    future: Future = Future()
    try:
        future.set_result(function(*args))
    except BaseException as exc:  # raised where the Future is read, as from the writer thread
        future.set_exception(exc)
    return future


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
        batch_size: int = 5000,
        block_ms: int = 100,
        max_backoff: float = 5.0,
        clock: Callable[[], float] = time.time,
        snapshot_every: int = 50_000,
        snapshot_seconds: float = 300.0,
        views_refresh_seconds: float = REFRESH_SECONDS,
        linger_ms: float = 0.0,
        housekeeping_seconds: float = 0.0,
        retention_days: float | None = None,
        retention_seconds: float = 0.0,
    ) -> None:
        self.stream = stream
        self.event_log = event_log
        self.config = config
        self.consumer = f"{socket.gethostname()}-{os.getpid()}"
        self.leases = leases or Leases(stream.redis, self.consumer)
        # the live workers, so that each holds only its share of the streams
        self.peers = LiveWorkers(stream.redis, self.consumer, self.leases.ttl_ms)
        self.learner = Learner(store, holder=self.consumer)
        # what each config version's rewards are learned under
        self.versions = LearningSettings(stream.redis, lambda name: config.current().get(name))
        self.quarantine = Quarantine(
            DeadLetters(stream.redis), event_log, self.learner, clock, self.versions
        )
        self.retired = RetiredStreams(stream.redis, check_seconds=min(1.0, block_ms / 100))
        # model snapshots in Postgres bound the replay of `banditd rebuild`
        self.snapshots = Snapshotter(
            store.redis,
            event_log.engine,
            every_rewards=snapshot_every,
            every_seconds=snapshot_seconds,
            clock=clock,
        )
        self.views = ViewRefresher(event_log.engine, views_refresh_seconds)
        # day partitions made ahead, old ones dropped (0 s: never, as in tests)
        self.retention = RetentionKeeper(
            event_log.engine, config.current, retention_days, retention_seconds
        )
        self.batch_size = batch_size
        self.block_ms = block_ms
        # Under steady traffic, wait this long after the first new entry so that a
        # batch gathers several (like Kafka's linger.ms): a batch's fixed cost (the
        # read, the Postgres transaction, the save) is then shared by many events.
        self.linger_ms = linger_ms
        # In ``run``, renew leases and close reward windows at most this often
        # instead of on every pass (leases last seconds, windows minutes).
        self.housekeeping_seconds = housekeeping_seconds
        self._housekept_at = float("-inf")
        self._housekept_for: set[str] = set()  # the experiments the last housekeeping saw
        self.max_backoff = max_backoff
        self.clock = clock
        self.owned: set[str] = set()
        self.stop_requested = False
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="event-log")
        self._in_flight: dict[str, InFlight] = {}  # per stream: the batch being logged
        self.new_entries = NewEntries(stream)
        self._recovering: set[str] = set()  # streams whose pending entries are read first
        self._arrived: set[str] | None = None  # streams the last wait saw new entries in
        self._read_all_at = float("-inf")  # when a pass last read every stream

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
                done = self._pass(budget, read_ahead=max_events is None, steady=True)
                backoff = 0.0
                processed += done
                if max_events is not None and processed >= max_events:
                    self._settle_all()
                    break
                if done == 0 or not self.new_entries.full & self.owned:
                    # every stream is read to its end: finish, then wait for the next entry
                    self._settle_all()
                    if self._recovering & self.owned:
                        continue  # a batch to read again: not idle
                    if until_idle:
                        if done == 0:
                            break
                        continue
                    self._wait_for_entries()
            except RETRYABLE as exc:
                self._abandon_writes()
                backoff = min(max(backoff * 2, 0.1), self.max_backoff)
                log.warning("storage unavailable (%s); retrying in %.1fs", exc, backoff)
                time.sleep(backoff)
            except LeaseLost as exc:
                # Stalled past the lease: another worker owns the stream now. Our
                # unacknowledged entries are theirs to claim; nothing of ours was saved.
                log.warning("lost the lease of %s while learning; leaving it", exc)
                worker_metrics.lease_changed(str(exc), "lost")
                self._abandon_writes(str(exc))
                self.owned.discard(str(exc))
                self.learner.forget(str(exc))
            except redis.ResponseError as exc:
                if not stream_vanished(exc):
                    raise
                # The stream or its group was deleted (a flush, a restart without
                # persistence): take the streams over again, which recreates the groups.
                log.warning("a stream or consumer group vanished (%s); re-acquiring", exc)
                self._abandon_writes()
                for experiment in self.owned:
                    self.learner.forget(experiment)
                self.owned.clear()
        self._settle_all()
        self._drop_read_ahead()
        return processed

    def _wait_for_entries(self) -> None:
        """Block until an owned stream has a new entry, then linger for more to arrive."""
        if not self.owned:  # a standby: try for a lease again shortly, do not spin on Redis
            time.sleep(self.block_ms / 1000)
            return
        last_read = {e: self.new_entries.last_read.get(e) for e in sorted(self.owned)}
        arrived = self.stream.wait_for_any(last_read, self.block_ms)
        self._arrived = set(arrived)
        appended_ms = min(arrived.values(), default=None)
        if appended_ms is not None and self.linger_ms > 0:
            # linger until the oldest waiting entry is linger_ms old, not linger_ms from
            # now: an entry that came while the last batch was processed has waited already.
            # Its age is read against Redis' clock (the id): a worker whose clock is behind
            # lingers at most linger_ms, as before; one ahead lingers less.
            waited_ms = self.clock() * 1000 - appended_ms
            linger_ms = min(self.linger_ms, self.linger_ms - waited_ms)
            if linger_ms > 0:
                time.sleep(linger_ms / 1000)

    def step(self, budget: int | None = None) -> int:
        """One pass over the owned streams, reading at most ``budget`` entries; returns how many.

        Everything it read is logged, learned and acknowledged when it returns.
        """
        try:
            done = self._pass(budget)
            self._settle_all()
            if self._recovering & self.owned:  # a batch proved poisoned: sort it out now
                done += self._pass(budget)
                self._settle_all()
        except BaseException:
            self._abandon_writes()
            raise
        return done

    def _pass(self, budget: int | None, *, read_ahead: bool = False, steady: bool = False) -> int:
        """``step`` without waiting for the last batch's Postgres write.

        With ``read_ahead``, a full batch starts the read of the stream's next
        one, which the next pass picks up. With ``steady`` (``run``), leases are
        renewed and windows closed only every ``housekeeping_seconds``.
        """
        # after a wait, the streams it saw new entries in; None: read every stream
        arrived, self._arrived = self._arrived, None
        config = self.config.current()
        self.views.tick()
        self.retention.tick()
        removed = self.retired.with_work(config.experiments)
        experiments = sorted(config.experiments) + removed
        now = time.monotonic()
        housekeeping = (
            not steady
            or now - self._housekept_at >= self.housekeeping_seconds
            or self._housekept_for != set(experiments)  # a stream to take over, or to let go
        )
        if housekeeping:
            self._housekept_at = now
            self._housekept_for = set(experiments)
            # renewing a lease touches the key that a read ahead WATCHes: let them finish first
            self.new_entries.finish_reads_ahead()
            self._refresh_leases(experiments)
        now_ms = int(self.clock() * 1000)
        owned = sorted(self.owned)
        if housekeeping:
            closed = self.stream.close_windows_of(owned, now_ms)
            if arrived is not None:
                arrived |= set(closed)  # default rewards just appended: read them now
            if now - self._read_all_at >= READ_ALL_SECONDS:
                self._read_all_at = now
                arrived = None
        done = 0
        for experiment in owned:
            if experiment in config.experiments:
                self.stream.announce_config(config.experiments[experiment], now_ms)
            if arrived is not None and not self._news_possible(experiment, arrived):
                continue  # nothing came since the last read: spare Redis the read
            count = self.batch_size if budget is None else min(self.batch_size, budget - done)
            if count <= 0:
                break
            try:
                done += self._process_batch(experiment, count, read_ahead=read_ahead)
            except PoisonedBatch as exc:
                self._read_again(exc)
                done += self._process_batch(experiment, count)
        return done

    def _news_possible(self, experiment: str, arrived: set[str]) -> bool:
        """Whether a stream may have something to read after a wait that saw ``arrived``'s news.

        The wait watched every owned stream from its last read (or, after a read
        that found nothing, from the last entry delivered), so no other stream got
        a new entry; one that recovers, has a backlog or never was read is read anyway.
        """
        return (
            experiment in arrived
            or experiment in self._recovering
            or experiment in self.new_entries.full
            or experiment in self._in_flight
            or experiment not in self.new_entries.last_read
        )

    def release(self) -> None:
        """Give up every lease (on a clean shutdown) so another worker can take over at once."""
        self._abandon_writes()
        for experiment in self.owned:
            self.leases.release(experiment)
        self.owned.clear()
        self.peers.leave()

    def close(self) -> None:
        """``release``, then stop the writer and reader threads; the worker cannot run again."""
        self.release()
        self._writer.shutdown()
        self.new_entries.close()
        self.views.close()
        self.retention.close()

    def _refresh_leases(self, experiments: list[str]) -> None:
        # Held streams are renewed first; free ones are taken only up to this worker's
        # share of the live workers' streams, in its own order of preference.
        limit = share(len(experiments), self.peers.heartbeat())
        ordered = preference(self.consumer, experiments)
        ordered = [e for e in ordered if e in self.owned] + [
            e for e in ordered if e not in self.owned
        ]
        renewed = self.leases.take_many([e for e in ordered if e in self.owned])
        for experiment in ordered:
            if experiment not in self.owned and len(self.owned) >= limit:
                continue  # left for the other workers
            if experiment in renewed:  # held at the start: renewed with the others
                taken = renewed[experiment]
            else:
                taken = self.leases.take(experiment)
            held = taken is not None
            # "acquired" while still owned: our lease lapsed, and another worker may have
            # learned and left entries pending meanwhile; start over like a new holder
            if held and (experiment not in self.owned or taken == "acquired"):
                self.stream.ensure_group(experiment)
                self._abandon_writes(experiment)
                self.stream.claim_abandoned(experiment, self.consumer)
                self.new_entries.last_read.pop(experiment, None)  # read at once, not waited on
                self.learner.forget(experiment)
                self.quarantine.forget(experiment)
                self.retired.register(experiment)
                self.owned.add(experiment)
                self._recovering.add(experiment)
                log.info("processing stream of %s", experiment)
                worker_metrics.lease_changed(experiment, "acquired")
            elif not held and experiment in self.owned:
                self._abandon_writes(experiment)
                self.owned.discard(experiment)
                self.learner.forget(experiment)
                log.info("lost the lease of %s", experiment)
                worker_metrics.lease_changed(experiment, "lost")
        # over the share (workers joined): let the last in this worker's order go to them
        for experiment in [e for e in ordered if e in self.owned][limit:]:
            self._abandon_writes(experiment)
            self.leases.release(experiment)
            self.owned.discard(experiment)
            self.learner.forget(experiment)
            log.info("let %s go to another worker: %d is this worker's share", experiment, limit)
            worker_metrics.lease_changed(experiment, "released")
        for experiment in self.owned - set(experiments):
            self._abandon_writes(experiment)
            self.leases.release(experiment)
            self.owned.discard(experiment)
            log.info(
                "let %s go: not in the config, its stream and reward windows drained", experiment
            )

    def _process_batch(self, experiment: str, count: int, *, read_ahead: bool = False) -> int:
        entries = self._read(experiment, count, read_ahead=read_ahead)
        if not entries:
            self._settle(experiment)
            return 0
        if experiment in self._recovering:  # read again: handle it entry by entry
            return self._sort_out(experiment, entries)
        try:
            with poison_of(experiment):
                events = [
                    (entry_id, decode(experiment, fields, self.versions))
                    for entry_id, fields in entries
                ]
                self.quarantine.check(experiment, events)
                rows = encode(events)
                learned = self.learner.prepare(experiment, events)
            self._settle(experiment)  # the batch before: at most one in flight per stream
            if len(entries) < count:  # the stream's end: nothing to overlap the write with
                write = _finished(self.event_log.write_encoded, rows)
            else:
                write = self._writer.submit(self.event_log.write_encoded, rows)
        except BaseException:
            # this batch was delivered to us and is not in flight: read it again
            self._recovering.add(experiment)
            raise
        entry_ids = [entry_id for entry_id, _ in entries]
        worker_metrics.prepared(experiment, events)
        self._in_flight[experiment] = InFlight(write, learned, entry_ids)
        return len(entries)

    def _read(self, experiment: str, count: int, *, read_ahead: bool) -> list:
        """The stream's pending entries while it recovers, else new ones.

        With ``read_ahead``, a full batch of new entries starts the read of the next.
        """
        if experiment in self._recovering:
            self._drop_read_ahead(experiment)  # what it delivered is pending: read below
            self._settle(experiment)  # so that the batch in flight is not read again
            entries = self.stream.read(experiment, self.consumer, count, new=False)
            if entries:
                return entries
            self._recovering.discard(experiment)
        try:
            ahead = self.batch_size if read_ahead else 0
            return self.new_entries.read(experiment, self.consumer, count, ahead=ahead)
        except BaseException:
            # the entries may have been delivered before the reply was lost: read them again
            self._recovering.add(experiment)
            raise

    def _settle(self, experiment: str) -> None:
        """Finish the stream's batch in flight, if any: logged, then saved, then acknowledged.

        What was learned is saved only once it is logged, so the saved model
        never runs ahead of the log (a snapshot or ``rebuild --verify`` relies on it).
        """
        batch = self._in_flight.pop(experiment, None)
        if batch is None:
            return

        def acknowledge(pipe) -> None:
            self.stream.queue_ack(pipe, experiment, batch.entry_ids)

        try:
            with poison_of(experiment):
                batch.write.result()
            # saved and acknowledged in one transaction when there is something to save
            learned = self.learner.commit(batch.learned, also=acknowledge)
        except BaseException:
            self._recovering.add(experiment)
            self.learner.forget(experiment)  # it holds what was prepared after this batch
            raise
        if batch.learned is None:
            self.stream.ack(experiment, batch.entry_ids)
        try:
            # a save lost in a failover would leave arms it changed stale in Redis
            self.stream.replicated(experiment)
        except BaseException:
            # reloaded from what Redis kept, and what a failover returned to pending read again
            self._recovering.add(experiment)
            self.learner.forget(experiment)
            raise
        worker_metrics.acknowledged(experiment, batch.entry_ids)
        self.snapshots.after_learning(experiment, learned)

    def _settle_all(self) -> None:
        for experiment in list(self._in_flight):
            try:
                self._settle(experiment)
            except PoisonedBatch as exc:
                self._read_again(exc)

    def _read_again(self, poisoned: PoisonedBatch) -> None:
        """Drop what is in flight of a poisoned batch's stream; its entries are sorted out next."""
        log.warning("%s; reading the batch again entry by entry", poisoned)
        self._abandon_writes(poisoned.experiment)

    def _sort_out(self, experiment: str, entries: list) -> int:
        """Handle entries read again one by one: log and learn the good, dead-letter the rest."""
        batch = self.quarantine.sort(experiment, entries)
        learned = self.learner.commit(batch.learned)
        self.quarantine.set_aside(experiment, batch)
        self.stream.ack(experiment, batch.good_ids)
        self.stream.replicated(experiment)
        worker_metrics.sorted_out(experiment, entries, batch.good_ids)
        self.snapshots.after_learning(experiment, learned)
        return len(entries)

    def _abandon_writes(self, *experiments: str) -> None:
        """After an error: let the writes in flight finish, save and acknowledge nothing.

        Their entries stay pending and are read again; what was learned from them
        in memory is dropped and relearned. Only ``experiments``' writes if named.
        Batches being read ahead are dropped too.
        """
        self._drop_read_ahead(*experiments)
        for experiment in experiments or list(self._in_flight):
            batch = self._in_flight.pop(experiment, None)
            if batch is None:
                continue
            batch.write.exception()  # waits; its error, if any, is the one being handled
            self._recovering.add(experiment)
            self.learner.forget(experiment)

    def _drop_read_ahead(self, *experiments: str) -> None:
        """Wait for the reads ahead (only ``experiments``' if named) and leave their entries.

        They were delivered to this worker, so they stay pending until the
        stream's pending entries are read again.
        """
        self._recovering.update(self.new_entries.drop(*experiments))
