"""What ``banditd worker`` counts as it works: rewards learned by kind, batches, leases.

The worker calls the functions below at a few points of its loop. A process
has one worker, so the figures live in this module's registry, the way
prometheus-client's own default registry is process-wide; ``serve`` in
:mod:`app.metrics.worker_server` exposes it, with what is read from Redis and
Postgres at scrape time (:mod:`app.metrics.worker_collector`).

A batch is counted once it is acknowledged (logged, learned, saved): the kinds
of its rewards are noted when it is learned in memory (``prepared``) and
counted when its last entry is acknowledged (``acknowledged``). A batch that
is dropped after an error is read again and counted then, once.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter as Tally
from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

from app.event_log import EventLog
from app.events import Event, RewardEvent, reward_kind
from app.services import Services

REGISTRY = CollectorRegistry(auto_describe=True)

LEARNED = Counter(
    "banditd_learned",
    "Rewards the worker logged and acknowledged, by kind: explicit and default ones are"
    " learned from, late ones only logged.",
    ["experiment", "kind"],
    registry=REGISTRY,
)
ENTRIES = Counter(
    "banditd_worker_entries",
    "Stream entries (decisions, rewards, config versions) the worker acknowledged.",
    ["experiment"],
    registry=REGISTRY,
)
BATCH_ENTRIES = Histogram(
    "banditd_worker_batch_entries",
    "Entries per acknowledged batch.",
    buckets=(1, 5, 25, 100, 250, 500, 1000, 2500, 5000, 10000),
    registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "banditd_worker_batch_commit_seconds",
    "From a batch learned in memory to its acknowledgement: its Postgres write, the save"
    " of what it learned to Redis, and the wait for the batch before it.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
POSTGRES_WRITE_SECONDS = Histogram(
    "banditd_worker_postgres_write_seconds",
    "One write of a batch's rows to the Postgres log (COPY and insert, one transaction).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
LEASE_CHANGES = Counter(
    "banditd_lease_changes",
    "Leases this worker took (acquired) or lost, per experiment.",
    ["experiment", "change"],
    registry=REGISTRY,
)

_lock = threading.Lock()  # the writer thread and the main thread both report
# per experiment: the last entry id of each batch learned and not yet acknowledged
_prepared: dict[str, dict[tuple[int, int], tuple[Tally, int, float]]] = {}


def _order(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


def _kinds(events: Iterable[Event]) -> Tally:
    return Tally(e.kind for e in events if isinstance(e, RewardEvent))


def prepared(experiment: str, events: list[tuple[bytes, Event]]) -> None:
    """Note a batch learned in memory: the kinds of its rewards, counted once acknowledged."""
    if not events:
        return
    key = _order(events[-1][0])
    with _lock:
        batches = _prepared.setdefault(experiment, {})
        batches[key] = (_kinds(e for _, e in events), len(events), time.perf_counter())


def acknowledged(experiment: str, entry_ids: list[bytes]) -> None:
    """Count the batch ending at ``entry_ids[-1]``, now acknowledged.

    Batches noted before it and never acknowledged were dropped after an error
    (their entries are read again and counted then): they are forgotten here.
    """
    if not entry_ids:
        return
    last = _order(entry_ids[-1])
    with _lock:
        batches = _prepared.get(experiment, {})
        batch = batches.pop(last, None)
        for key in [k for k in batches if k < last]:
            del batches[key]
    if batch is None:
        return
    kinds, entries, started = batch
    _count(experiment, kinds, entries)
    BATCH_SECONDS.observe(time.perf_counter() - started)


def sorted_out(experiment: str, entries: list, good_ids: list[bytes]) -> None:
    """Count the entries of a batch handled one by one that were acknowledged as good."""
    if good_ids:
        last = max(_order(i) for i in good_ids)
        with _lock:  # a batch noted before it was read again entry by entry: counted here
            batches = _prepared.get(experiment, {})
            for key in [k for k in batches if k <= last]:
                del batches[key]
    good = set(good_ids)
    kinds: Tally = Tally()
    for entry_id, fields in entries:
        if entry_id in good:
            kind = reward_kind(fields)
            if kind is not None:
                kinds[kind] += 1
    _count(experiment, kinds, len(good))


def lease_changed(experiment: str, change: str) -> None:
    """Count a lease this worker ``acquired``, ``lost`` or ``released`` (beyond its share)."""
    LEASE_CHANGES.labels(experiment, change).inc()


def _count(experiment: str, kinds: Tally, entries: int) -> None:
    for kind, n in kinds.items():
        LEARNED.labels(experiment, kind).inc(n)
    ENTRIES.labels(experiment).inc(entries)
    BATCH_ENTRIES.observe(entries)


class TimedEventLog:
    """An :class:`~app.event_log.EventLog` whose writes are timed; everything else is its own."""

    def __init__(self, event_log: EventLog) -> None:
        self._event_log = event_log

    def write(self, entries) -> None:
        """The log's ``write``, timed."""
        with POSTGRES_WRITE_SECONDS.time():
            self._event_log.write(entries)

    def write_encoded(self, batch) -> None:
        """The log's ``write_encoded``, timed."""
        with POSTGRES_WRITE_SECONDS.time():
            self._event_log.write_encoded(batch)

    def __getattr__(self, name: str):
        return getattr(self._event_log, name)


def timed_services(services: Services) -> Services:
    """``services`` with the event log's writes timed, for the worker to use."""
    return dataclasses.replace(services, event_log=TimedEventLog(services.event_log))
