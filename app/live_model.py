"""A consistent read of one experiment's live model in Redis.

The worker may save new parameters at any moment. To compare the live model
with the log, or to copy it into a snapshot, the arms must be read together
with the learning watermark (``bd:{exp}:applied``, the id of the last stream
entry learned from) as of one instant. Every save of the worker writes the
watermark in the same transaction as the arms, so: WATCH the watermark, read
the arms, and start again if a save came in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import redis

from app import keys
from app.model_store import LEARNING_FIELDS, decode_learning
from bandits import LearningState

Position = tuple[int, int]  # a stream entry id ``ms-seq`` as numbers: the learning order


class LiveModelBusy(RuntimeError):
    """The live model kept changing while it was being read."""


@dataclass
class LiveArm:
    """One arm's parameters in Redis and their version."""

    state: LearningState  # one arm: arrays keep the leading arm axis of length 1
    version: int
    extra: np.ndarray | None = None  # a hybrid model's arm: its (d, D) B_a


@dataclass
class LiveModel:
    """Every arm of the given models, and the watermark they include everything up to."""

    watermark: Position | None
    arms: dict[tuple[str, str], LiveArm]  # (model_id, arm) -> parameters


def position(entry_id: bytes | str | None) -> Position | None:
    """The position of a stream entry id (``b"1732-0"`` -> ``(1732, 0)``); None stays None."""
    if not entry_id:
        return None
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return (int(ms), int(seq or 0))


def entry_id(pos: Position) -> bytes:
    """The stream entry id of a position."""
    return f"{pos[0]}-{pos[1]}".encode()


def scan_model_ids(client: redis.Redis, experiment: str) -> set[str]:
    """Ids of every model of ``experiment`` that has a live arm (walks the whole keyspace)."""
    prefix = keys.arm_versions(experiment, "")[: -len(":versions")]
    found = set()
    for key in client.scan_iter(match=keys.arm_versions(experiment, "*"), count=1000):
        model = key.decode()[len(prefix) : -len(":versions")]
        if ":" not in model:  # not the hash of an arm called "versions"
            found.add(model)
    return found


def read_live(
    client: redis.Redis, experiment: str, model_ids: Iterable[str], *, attempts: int = 100
) -> LiveModel:
    """Every live arm of the given models and the watermark, as of one instant."""
    models = sorted(set(model_ids))
    applied = keys.applied(experiment)
    for _ in range(attempts):
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(applied)
                arms = [
                    (model, arm.decode())
                    for model in models
                    for arm in sorted(pipe.hkeys(keys.arm_versions(experiment, model)))
                ]
                pipe.multi()
                pipe.get(applied)
                for model, arm in arms:
                    pipe.hmget(keys.arm(experiment, model, arm), LEARNING_FIELDS + ("B",))
                watermark, *values = pipe.execute()
            except redis.WatchError:
                continue
        return LiveModel(
            watermark=position(watermark),
            arms={key: _decode(v) for key, v in zip(arms, values) if v[0] is not None},
        )
    raise LiveModelBusy(f"the live model of {experiment} changed during {attempts} reads")


def _decode(values: list[bytes]) -> LiveArm:
    state, version = decode_learning(values[:-1])
    raw = values[-1]
    extra = None
    if raw is not None:
        extra = np.frombuffer(raw, dtype=np.float64).reshape(state.theta.shape[1], -1).copy()
    return LiveArm(state=state, version=version, extra=extra)
