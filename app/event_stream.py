"""The per-experiment Redis stream: the durable queue between API and worker.

The API appends decisions and rewards here before it answers; the worker reads
them through a consumer group and acknowledges them only once their effects
are durable. The checks that must be atomic with an append (one answer per
request id, one reward per shown arm, no reward after its window closed) run as
Lua scripts next to the data; a decision that needs none of them is appended in
a MULTI/EXEC transaction of the same writes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from typing import Iterable, Mapping

import redis
from redis.cluster import RedisCluster

from app import keys
from app.cluster.replication import ReplicaWait
from app.config import SEGMENT_MARK, Experiment
from app.lease import LeaseLost, fence
from app.events import ConfigEvent, DecisionEvent, decision_entry, encode_config
from app.learning_settings import queue_publish

GROUP = "workers"
LATE_GRACE_MS = 3_600_000  # how long after its window a decision still answers 409, not 404
CLUSTER_POLL_MS = 10  # how often a worker on a cluster looks for new entries while idle

Entry = tuple[bytes, dict[bytes, bytes]]


@dataclass(frozen=True)
class Delivery:
    """What a read of new entries delivered: the entries, or where the group's deliveries stand."""

    entries: list[Entry]
    last_delivered: bytes | None  # when ``entries`` is empty: the last id delivered to the group


ARM_LIMIT_REACHED = object()  # what record_decision returns when a catalogue is full
REQUEST_ID_REUSED = object()  # ... when an earlier request with the same id asked otherwise


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    """A stream entry's fields from the flat list a script returns."""
    return dict(zip(flat[::2], flat[1::2]))


def _entries(reply) -> list[Entry]:
    """The entries of a one-stream XREADGROUP reply from a transaction.

    redis-py parses it as ``[[stream, [(id, {field: value})]]]``, but leaves it
    raw in a cluster's transaction: ``{stream: [[id, [field, value, ...]]]}``.
    """
    if not reply:
        return []
    if isinstance(reply, dict):
        [entries] = reply.values()
        return [(entry_id, _pairs(fields)) for entry_id, fields in entries]
    return reply[0][1]


def _script(client: redis.Redis, name: str):
    return client.register_script(resources.files("app.lua").joinpath(name).read_text())


def learning_key(event: DecisionEvent) -> str:
    """What a decision's rewards are learned under: its config version, and its segment if any."""
    if event.segment is None:
        return event.config_version
    return f"{event.config_version}{SEGMENT_MARK}{event.segment}"


class EventStream:
    """Append and consume banditd events; one stream per experiment."""

    def __init__(self, client: redis.Redis, *, replicas: ReplicaWait | None = None) -> None:
        self.redis = client
        # an answer's write waits for the replicas (app/cluster/replication.py)
        self.replicas = replicas or ReplicaWait(client, 0)
        self._record_decision = _script(client, "record_decision.lua")
        self._record_reward = _script(client, "record_reward.lua")
        self._close_windows = _script(client, "close_windows.lua")
        self._read_fenced = _script(client, "read_fenced.lua")
        self._announced: set[tuple[str, str]] = set()
        # A decision with no request id on a fixed catalogue needs none of the script's
        # checks: a transaction of the same writes costs Redis about a third of the
        # script's time (bench/steady.py). The script stays where an answer waits for
        # replicas (its WAIT shares the script's pipeline) and on a cluster.
        self._decisions_in_transactions = self.replicas.replicas <= 0 and not isinstance(
            client, RedisCluster
        )

    # -- API side ---------------------------------------------------------------

    def record_decision(
        self,
        event: DecisionEvent,
        *,
        deadline_ms: int,
        default_reward: float,
        reward_min: float,
        reward_max: float,
        response: bytes,
        max_arms: int | None = None,
        fingerprint: str = "",
    ) -> bytes | object | None:
        """Append a decision and open its reward window.

        Returns None when recorded, the stored response of an earlier decision
        with the same request id, ``REQUEST_ID_REUSED`` when that earlier
        request's ``fingerprint`` (what it asked) differs from this one's, or
        ``ARM_LIMIT_REACHED`` when ``max_arms`` is given (a dynamic catalogue)
        and a shown arm would be one too many; in the last three cases nothing
        is recorded. The decision's rewards are
        learned under the settings of its config version, which
        :meth:`announce_config` stored.
        """
        exp = event.experiment
        ttl_ms = max(deadline_ms - event.decided_ms, 0) + LATE_GRACE_MS
        record, features, items, candidate_items = decision_entry(event)
        if self._decisions_in_transactions and not event.request_id and not max_arms:
            self._record_in_transaction(
                event,
                ttl_ms=ttl_ms,
                deadline_ms=deadline_ms,
                window=(default_reward, reward_min, reward_max),
                entry=(record, features, items, candidate_items),
            )
            return None
        result = self.replicas.script(
            self._record_decision,
            keys=[
                keys.decision(exp, event.decision_id),
                keys.pending(exp),
                keys.stream(exp),
                keys.request(exp, event.request_id or "-"),
                keys.arm_registry(exp),
                keys.request_fingerprint(exp, event.request_id or "-"),
            ],
            args=[
                "1" if event.request_id else "0",
                response if event.request_id else b"",
                ttl_ms,
                deadline_ms,
                event.decision_id,
                max_arms or 0,
                ",".join(i.arm for i in event.impressions),
                repr(float(default_reward)),
                repr(float(reward_min)),
                repr(float(reward_max)),
                features,
                learning_key(event),  # copied into each reward: what to learn it under
                record,
                items,
                candidate_items,
                fingerprint,
            ],
        )
        if not result:
            return None
        if result[0] == b"arm_limit":
            return ARM_LIMIT_REACHED
        _, earlier, asked = result
        if asked and fingerprint and asked.decode() != fingerprint:
            return REQUEST_ID_REUSED
        # an earlier answer repeated: wait for its write too (it may have been a 503)
        self.replicated(exp)
        return earlier

    def _record_in_transaction(
        self,
        event: DecisionEvent,
        *,
        ttl_ms: int,
        deadline_ms: int,
        window: tuple[float, float, float],
        entry: tuple[bytes, bytes, bytes, bytes],
    ) -> None:
        """What record_decision.lua writes for a decision it need not check, in MULTI/EXEC."""
        exp = event.experiment
        record, features, items, candidate_items = entry
        default_reward, reward_min, reward_max = window
        decision = {
            "arms": ",".join(i.arm for i in event.impressions),
            "dl": deadline_ms,
            "def": repr(float(default_reward)),
            "lo": repr(float(reward_min)),
            "hi": repr(float(reward_max)),
            "x": features,
            "c": learning_key(event),
        }
        fields = {"t": "decision", "d": record, "x": features}
        if items:
            decision["z"] = items
            fields.update(z=items, zc=candidate_items)
        key = keys.decision(exp, event.decision_id)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=decision)
            pipe.pexpire(key, ttl_ms)
            pipe.zadd(keys.pending(exp), {event.decision_id: deadline_ms})
            pipe.xadd(keys.stream(exp), fields)
            pipe.execute()

    def record_reward(
        self, experiment: str, decision_id: str, arm: str, reward: str, now_ms: int
    ) -> tuple[str, str | None]:
        """Check and append one explicit reward.

        Returns ``(status, detail)``: status is ``accepted``, ``duplicate``,
        ``conflict`` (detail: the reward already recorded), ``window_closed``
        (appended as late), ``unknown_decision``, ``arm_not_shown`` or
        ``out_of_range`` (detail: "min..max" of the decision).
        """
        result = self.replicas.script(
            self._record_reward,
            keys=[keys.decision(experiment, decision_id), keys.stream(experiment)],
            args=[decision_id, arm, reward, now_ms],
        )
        status = result[0].decode()
        if status in ("duplicate", "conflict", "late_duplicate", "late_conflict"):
            self.replicated(experiment)  # the reward recorded before: on the replicas too
        detail = "..".join(r.decode() for r in result[1:]) or None
        return status, detail

    def announce_config(self, experiment: Experiment, now_ms: int) -> None:
        """Store the version's learning settings and append the version, once per process.

        Both before the first decision under the version: its rewards are
        learned under those settings.
        """
        key = (experiment.name, experiment.version)
        if key in self._announced:
            return
        event = ConfigEvent(
            experiment=experiment.name,
            config_version=experiment.version,
            settings=experiment.settings,
            seen_ms=now_ms,
        )
        pipe = self.redis.pipeline(transaction=True)
        queue_publish(pipe, experiment)
        pipe.xadd(keys.stream(experiment.name), encode_config(event))
        pipe.execute()
        self.replicated(experiment.name)  # never announced again by this process
        self._announced.add(key)

    def replicated(self, experiment: str) -> None:
        """Wait until the replicas hold what was written for ``experiment`` so far
        (``BANDITD_REDIS_REPLICAS_TO_WAIT``; nothing to do when 0)."""
        self.replicas.after(keys.replicated(experiment))

    # -- worker side ------------------------------------------------------------

    def close_windows_of(
        self, experiments: Iterable[str], now_ms: int, limit: int = 500
    ) -> dict[str, int]:
        """Apply the default reward to decisions whose window closed, in each experiment (due
        decisions of all of them looked up in one round trip); rewards appended per experiment
        that had any."""
        experiments = list(experiments)
        pipe = self.redis.pipeline(transaction=False)
        for experiment in experiments:
            pipe.zrangebyscore(keys.pending(experiment), "-inf", now_ms, start=0, num=limit)
        appended = {}
        for experiment, due in zip(experiments, pipe.execute()):
            if not due:
                continue
            ids = [d.decode() for d in due]
            closed = self._close_windows(
                keys=[
                    keys.pending(experiment),
                    keys.stream(experiment),
                    *(keys.decision(experiment, d) for d in ids),
                ],
                args=[now_ms, *ids],
            )
            if closed:
                appended[experiment] = closed
        return appended

    def ensure_group(self, experiment: str) -> None:
        """Create the stream and its consumer group if missing."""
        try:
            self.redis.xgroup_create(keys.stream(experiment), GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def claim_abandoned(self, experiment: str, consumer: str) -> None:
        """Take over every entry delivered to another consumer and not acknowledged.

        Then remove the other consumers that hold nothing: the names of dead
        workers, which would otherwise pile up in the group with every restart.
        """
        stream = keys.stream(experiment)
        start = "0-0"
        while True:
            # redis-py drops the cursor of a JUSTID reply, so take the entries too
            start, _, _ = self.redis.xautoclaim(
                stream, GROUP, consumer, min_idle_time=0, start_id=start, count=1000
            )
            if start in (b"0-0", "0-0"):
                break
        for other in self.redis.xinfo_consumers(stream, GROUP):
            name = other["name"].decode() if isinstance(other["name"], bytes) else other["name"]
            if name != consumer and other["pending"] == 0:
                # a consumer that still holds entries (delivered since the claim) keeps them
                self.redis.xgroup_delconsumer(stream, GROUP, name)

    def read(
        self, experiment: str, consumer: str, count: int, *, new: bool, block_ms: int | None = None
    ) -> list[Entry]:
        """Read this consumer's unacknowledged entries (``new=False``) or new ones, in order."""
        reply = self.redis.xreadgroup(
            GROUP,
            consumer,
            {keys.stream(experiment): ">" if new else "0"},
            count=count,
            block=block_ms,
        )
        if not reply:
            return []
        entries = reply[0][1]
        vanished = [entry_id for entry_id, fields in entries if not fields]
        if vanished:  # deleted while pending: nothing left to process
            self.redis.xack(keys.stream(experiment), GROUP, *vanished)
        return [(entry_id, fields) for entry_id, fields in entries if fields]

    def read_new(self, experiment: str, consumer: str, count: int) -> list[Entry]:
        """Deliver up to ``count`` new entries to ``consumer``, in order, while it holds the lease.

        Raises :class:`LeaseLost` if it does not: entries delivered to a worker that
        lost its lease would sit in its pending list while the new holder's learning
        watermark passes them. The lease check and the read are one transaction
        (WATCH on the lease key), not a script: a script's reply of thousands of
        entries costs Redis several times the read itself.
        """
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                fence(pipe, experiment, consumer)
                pipe.xreadgroup(GROUP, consumer, {keys.stream(experiment): ">"}, count=count)
                [reply] = pipe.execute()
            except redis.WatchError:  # the lease changed (or expired) while we read
                raise LeaseLost(experiment) from None
        return _entries(reply)

    def read_new_few(self, experiment: str, consumer: str, count: int) -> Delivery:
        """``read_new`` in one round trip, for reads of a few entries (under steady traffic).

        A script checks the lease and reads; its reply costs Redis more per
        entry than a transaction's, so a backlog is read with ``read_new``. When
        nothing is new, it also says where the group's deliveries stand.
        """
        reply = self._read_fenced(
            keys=[keys.owner(experiment), keys.stream(experiment)],
            args=[consumer, GROUP, consumer, count],
        )
        if reply == 0:  # the lease is someone else's
            raise LeaseLost(experiment)
        if isinstance(reply, bytes):  # nothing new: the last id delivered to the group
            return Delivery([], reply)
        return Delivery([(entry_id, _pairs(fields)) for entry_id, fields in reply], None)

    def wait_for_any(self, after: Mapping[str, bytes | None], block_ms: int) -> dict[str, int]:
        """Block until a stream has an entry later than ``after[experiment]``.

        Returns the streams that have one, each with when its oldest such entry
        was appended (ms since the epoch, from its id); empty if none came
        within ``block_ms``. ``after`` maps each experiment to the last entry id
        this worker read (None: only entries appended from now on count).
        Nothing is delivered (``read_new`` does that, under the lease); an entry
        already there returns at once.
        """
        if not after:
            return {}
        if isinstance(self.redis, RedisCluster) and len(after) > 1:
            return self._poll_any(after, block_ms)
        reply = self.redis.xread(
            {keys.stream(e): last or "$" for e, last in after.items()}, count=1, block=block_ms
        )
        return _arrivals(reply, after)

    def _poll_any(self, after: Mapping[str, bytes | None], block_ms: int) -> dict[str, int]:
        """``wait_for_any`` on a cluster, where one XREAD cannot name streams of several
        slots: a pipelined non-blocking XREAD per stream every ``CLUSTER_POLL_MS``."""
        last = dict(after)
        unset = [e for e, entry_id in last.items() if entry_id is None]
        if unset:  # "$": what is last now
            pipe = self.redis.pipeline(transaction=False)
            for e in unset:
                pipe.xrevrange(keys.stream(e), count=1)
            for e, newest in zip(unset, pipe.execute()):
                last[e] = newest[0][0] if newest else b"0-0"
        deadline = time.monotonic() + block_ms / 1000
        while True:
            pipe = self.redis.pipeline(transaction=False)
            for e, entry_id in last.items():
                pipe.xread({keys.stream(e): entry_id}, count=1)
            arrived = _arrivals([stream for reply in pipe.execute() for stream in reply], after)
            if arrived:
                return arrived
            if time.monotonic() >= deadline:
                return {}
            time.sleep(min(CLUSTER_POLL_MS / 1000, max(0.0, deadline - time.monotonic())))

    def ack(self, experiment: str, entry_ids: Iterable[bytes]) -> None:
        """Acknowledge and delete processed entries."""
        ids = list(entry_ids)
        if not ids:
            return
        pipe = self.redis.pipeline(transaction=True)
        self.queue_ack(pipe, experiment, ids)
        pipe.execute()

    @staticmethod
    def queue_ack(pipe: redis.client.Pipeline, experiment: str, entry_ids: list[bytes]) -> None:
        """Queue the acknowledgement and deletion of ``entry_ids`` on ``pipe`` (a transaction)."""
        if entry_ids:
            pipe.xack(keys.stream(experiment), GROUP, *entry_ids)
            pipe.xdel(keys.stream(experiment), *entry_ids)


def _arrivals(reply, experiments: Iterable[str]) -> dict[str, int]:
    """Per experiment whose stream is in an XREAD reply: when its first entry there was
    appended (ms, from the entry id)."""
    experiment_of = {keys.stream(e).encode(): e for e in experiments}
    return {
        experiment_of[stream if isinstance(stream, bytes) else stream.encode()]: int(
            entries[0][0].split(b"-", 1)[0]
        )
        for stream, entries in reply or ()
        if entries
    }
