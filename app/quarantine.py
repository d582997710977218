"""Handle a batch entry by entry, setting poisoned entries aside.

The worker's fast path handles a batch as a whole. When something in it is
poisoned (app/poison.py), the worker reads the batch again and hands it here:
every entry is decoded on its own, and the log writes and the learning are
retried on halves of the batch until each poisoned entry stands alone. The
good entries are logged here and learned in memory; the caller saves the
learning, dead-letters the poisoned entries and acknowledges the rest.

An entry reaches the log only if it can also be learned from, and a reward
only with its decision, so that the log replays to the live model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import orjson

from app.deadletters import DeadLetters, Poisoned
from app.event_log import EventLog
from app.event_stream import Entry
from app.events import DecisionEvent, Event, RewardEvent, decode
from app.learner import Learned, Learner, merged
from app.learning_settings import LearningSettings
from app.poison import PoisonedBatch, is_poison, isolate

log = logging.getLogger(__name__)


@dataclass
class Sorted:
    """A batch sorted into what to learn and acknowledge, and what to dead-letter."""

    learned: Learned | None  # prepared in the learner, not yet saved
    good_ids: list[bytes]
    poisoned: list[Poisoned]  # in stream order
    revived: set[str]  # dead-lettered decisions that were logged now (replayed)


def sort_batch(
    experiment: str,
    entries: list[Entry],
    *,
    event_log: EventLog,
    learner: Learner,
    dead_decisions: set[str],
    versions: LearningSettings | None = None,
) -> Sorted:
    """Log the good entries of ``entries``, learn them in memory, and name the poisoned ones."""
    fields_of = dict(entries)
    poisoned: dict[bytes, Poisoned] = {}

    def set_aside(entry_id: bytes, stage: str, error: str, decision_id: str | None = None) -> None:
        poisoned[entry_id] = Poisoned(entry_id, fields_of[entry_id], stage, error, decision_id)

    events: list[tuple[bytes, Event]] = []
    for entry_id, fields in entries:
        try:
            events.append((entry_id, decode(experiment, fields, versions)))
        except Exception as exc:
            if not is_poison(exc):
                raise
            set_aside(entry_id, "decode", f"{type(exc).__name__}: {exc}", _decision_id(fields))

    # Decisions and config versions first: a reward is logged only with its decision.
    heads = [(i, e) for i, e in events if not isinstance(e, RewardEvent)]
    for (entry_id, event), error in isolate(heads, event_log.write):
        set_aside(entry_id, "log", error, getattr(event, "decision_id", None))
    dead = dead_decisions | {p.decision_id for p in poisoned.values() if p.decision_id}
    revived = {
        e.decision_id
        for i, e in heads
        if isinstance(e, DecisionEvent) and e.decision_id in dead and i not in poisoned
    }
    dead -= revived

    rewards = []
    for entry_id, event in events:
        if not isinstance(event, RewardEvent):
            continue
        if event.decision_id in dead:
            set_aside(entry_id, "decision", f"its decision {event.decision_id} is a dead letter")
        else:
            rewards.append((entry_id, event))

    # Learned before they are logged: what cannot be learned must not reach the log either.
    parts: list[Learned | None] = []
    try:
        for (entry_id, _), error in isolate(
            rewards, lambda part: parts.append(learner.prepare(experiment, part))
        ):
            set_aside(entry_id, "learn", error)
        rewards = [(i, e) for i, e in rewards if i not in poisoned]
        refused = isolate(rewards, event_log.write)
    except BaseException:
        learner.forget(experiment)
        raise
    learned = merged(parts)
    if refused:  # learned, but the log refused them: learn the batch again without them
        for (entry_id, _), error in refused:
            set_aside(entry_id, "log", error)
        learner.forget(experiment)
        learned = learner.prepare(experiment, [(i, e) for i, e in rewards if i not in poisoned])

    return Sorted(
        learned=learned,
        good_ids=[i for i, _ in entries if i not in poisoned],
        poisoned=[poisoned[i] for i, _ in entries if i in poisoned],
        revived=revived,
    )


def _decision_id(fields: dict[bytes, bytes]) -> str | None:
    """The id of an undecodable decision entry, if it can be read at all."""
    if fields.get(b"t") != b"decision":
        return None
    try:
        decision_id = orjson.loads(fields[b"d"]).get("id")
    except Exception:
        return None
    return decision_id if isinstance(decision_id, str) else None


class Quarantine:
    """A worker's dead letters: sorts batches read again, and remembers dead decisions."""

    def __init__(
        self,
        deadletters: DeadLetters,
        event_log: EventLog,
        learner: Learner,
        clock: Callable[[], float],
        versions: LearningSettings | None = None,
    ) -> None:
        self.deadletters = deadletters
        self.event_log = event_log
        self.learner = learner
        self.clock = clock
        self.versions = versions
        self._dead: dict[str, set[str]] = {}  # per stream: dead-lettered decisions

    def forget(self, experiment: str) -> None:
        """Drop what is cached of ``experiment`` (on taking its stream over)."""
        self._dead.pop(experiment, None)

    def check(self, experiment: str, events: list[tuple[bytes, Event]]) -> None:
        """Raise PoisonedBatch if an event names a dead-lettered decision (``sort`` handles it)."""
        dead = self._dead_of(experiment)
        if not dead:
            return
        for _, event in events:
            if getattr(event, "decision_id", None) in dead:
                kind = "reward" if isinstance(event, RewardEvent) else "replayed decision"
                raise PoisonedBatch(experiment, ValueError(f"a {kind} of {event.decision_id}"))

    def sort(self, experiment: str, entries: list[Entry]) -> Sorted:
        """``sort_batch`` with what this worker knows of the stream's dead decisions."""
        return sort_batch(
            experiment,
            entries,
            event_log=self.event_log,
            learner=self.learner,
            dead_decisions=self._dead_of(experiment),
            versions=self.versions,
        )

    def set_aside(self, experiment: str, batch: Sorted) -> None:
        """Dead-letter a sorted batch's poisoned entries (acknowledging them) and log each."""
        dead = self._dead_of(experiment)
        if batch.poisoned:
            self.deadletters.move(experiment, batch.poisoned, int(self.clock() * 1000))
            for p in batch.poisoned:
                log.error(
                    "moved entry %s of %s to its dead letters (%s): %s",
                    p.entry_id.decode(),
                    experiment,
                    p.stage,
                    p.error,
                )
        if batch.revived:
            self.deadletters.revive(experiment, batch.revived)
        dead -= batch.revived
        dead |= {p.decision_id for p in batch.poisoned if p.decision_id}

    def _dead_of(self, experiment: str) -> set[str]:
        dead = self._dead.get(experiment)
        if dead is None:
            now_ms = int(self.clock() * 1000)
            dead = self._dead[experiment] = self.deadletters.dead_decisions(experiment, now_ms)
        return dead
