"""Dead letters: stream entries the worker could not decode, learn or log.

Such an entry would fail the same way on every redelivery, so the worker moves
it, with the stage and the error, to a per-experiment dead-letter stream and
goes on with the rest (app/worker.py). ``banditd deadletters`` lists them,
replays them into the experiment's stream (once the cause is fixed) or drops
them. A dead letter keeps the id its entry had in the event stream.

A dead-lettered decision is remembered until its rewards can no longer
arrive: a reward of it is dead-lettered too, because the log cannot replay a
reward without its decision (``banditd rebuild`` would refuse the log).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Iterable

import redis

from app import keys
from app.event_stream import GROUP, Entry

META = b"dl:"  # prefix of the fields a dead letter adds to its entry's own
DEAD_DECISION_MARGIN_MS = 3_600_000  # a dead decision without a hash: its rewards may still queue


@dataclass(frozen=True)
class Poisoned:
    """An entry to dead-letter: where it failed and why."""

    entry_id: bytes
    fields: dict[bytes, bytes]
    stage: str  # "decode", "learn", "log" or "decision" (its decision is a dead letter)
    error: str
    decision_id: str | None = None  # set for a decision: its rewards follow it


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter as stored."""

    entry_id: str
    stage: str
    error: str
    at_ms: int
    fields: dict[bytes, bytes]  # the entry's own fields, as they were in the stream

    def summary(self) -> str:
        """What the entry was, in a few words (its type and decision)."""
        kind = self.fields.get(b"t", b"?").decode(errors="replace")
        decision = self.fields.get(b"id", b"").decode(errors="replace")
        return f"{kind} {decision}".strip()


class DeadLetters:
    """The dead-letter streams of every experiment."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._move = client.register_script(
            resources.files("app.lua").joinpath("dead_letter.lua").read_text()
        )

    def move(self, experiment: str, poisoned: list[Poisoned], now_ms: int) -> int:
        """Dead-letter ``poisoned`` (in stream order), acking them; returns how many are new."""
        if not poisoned:
            return 0
        expiries = self._decision_expiries(experiment, poisoned, now_ms)
        args: list[bytes | str | int] = [GROUP]
        for p in poisoned:
            meta = {b"dl:stage": p.stage, b"dl:error": p.error[:2000], b"dl:at": str(now_ms)}
            fields = {k: v for k, v in p.fields.items() if not k.startswith(META)} | meta
            args += [p.entry_id, len(fields)]
            for name, value in fields.items():
                args += [name, value]
            args += [p.decision_id or "", expiries.get(p.decision_id, 0)]
        return int(
            self._move(
                keys=[
                    keys.stream(experiment),
                    keys.deadletters(experiment),
                    keys.dead_decisions(experiment),
                    keys.deadlettered(experiment),
                ],
                args=args,
            )
        )

    def _decision_expiries(
        self, experiment: str, poisoned: list[Poisoned], now_ms: int
    ) -> dict[str, int]:
        """Per dead decision: when its decision hash, and so any reward of it, expires."""
        decisions = [p.decision_id for p in poisoned if p.decision_id]
        if not decisions:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for decision_id in decisions:
            pipe.pttl(keys.decision(experiment, decision_id))
        ttls = pipe.execute()
        return {
            d: now_ms + max(int(t), 0) + DEAD_DECISION_MARGIN_MS for d, t in zip(decisions, ttls)
        }

    def dead_decisions(self, experiment: str, now_ms: int) -> set[str]:
        """The dead-lettered decisions whose rewards may still come (older ones are pruned)."""
        key = keys.dead_decisions(experiment)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zremrangebyscore(key, "-inf", now_ms)
        pipe.zrange(key, 0, -1)
        _, members = pipe.execute()
        return {m.decode() for m in members}

    def revive(self, experiment: str, decision_ids: Iterable[str]) -> None:
        """Forget that these decisions were dead letters (they were logged after all)."""
        ids = list(decision_ids)
        if ids:
            self.redis.zrem(keys.dead_decisions(experiment), *ids)

    def list(self, experiment: str, count: int | None = None) -> list[DeadLetter]:
        """The experiment's dead letters, oldest first (at most ``count``)."""
        return [
            _dead_letter(e) for e in self.redis.xrange(keys.deadletters(experiment), count=count)
        ]

    def count(self, experiment: str) -> int:
        """How many dead letters the experiment holds now."""
        return int(self.redis.xlen(keys.deadletters(experiment)))

    def total(self, experiment: str) -> int:
        """How many entries were ever dead-lettered (a redelivered one counts once)."""
        return int(self.redis.get(keys.deadlettered(experiment)) or 0)

    def replay(self, experiment: str, entry_ids: Iterable[str] | None = None) -> int:
        """Put dead letters (all, or those named) back at the end of the event stream.

        Each is appended with a new id and removed from the dead letters in one
        transaction; the worker then handles it like any new entry (and dead-letters
        it again if it still fails). Returns how many were replayed.
        """
        replayed = 0
        for letter in self._select(experiment, entry_ids):
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.xadd(keys.stream(experiment), letter.fields)
                pipe.xdel(keys.deadletters(experiment), letter.entry_id)
                pipe.execute()
            replayed += 1
        return replayed

    def drop(self, experiment: str, entry_ids: Iterable[str] | None = None) -> int:
        """Delete dead letters (all, or those named); returns how many were deleted."""
        ids = [letter.entry_id for letter in self._select(experiment, entry_ids)]
        if not ids:
            return 0
        return int(self.redis.xdel(keys.deadletters(experiment), *ids))

    def _select(self, experiment: str, entry_ids: Iterable[str] | None) -> list[DeadLetter]:
        letters = self.list(experiment)
        if entry_ids is None:
            return letters
        wanted = set(entry_ids)
        missing = wanted - {letter.entry_id for letter in letters}
        if missing:
            raise KeyError(f"no dead letter {', '.join(sorted(missing))} in {experiment}")
        return [letter for letter in letters if letter.entry_id in wanted]


def _dead_letter(entry: Entry) -> DeadLetter:
    entry_id, fields = entry
    own = {k: v for k, v in fields.items() if not k.startswith(META)}
    return DeadLetter(
        entry_id=entry_id.decode(),
        stage=fields.get(b"dl:stage", b"").decode(),
        error=fields.get(b"dl:error", b"").decode(errors="replace"),
        at_ms=int(fields.get(b"dl:at", b"0")),
        fields=own,
    )
