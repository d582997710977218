"""Per-arm model parameters in Redis.

Each arm of each model is one hash: the learning statistics (``A``, ``b``,
counts) and what choosing needs precomputed (``A_inv``, ``theta``), as raw
float64 bytes, plus a version (and, for an arm of a hybrid model, its ``B``).
A per-model hash of arm versions lets an API process see in one round trip
which arms changed since it last looked.

The worker is the only writer. It saves a batch of arms together with the id
of the last stream entry whose learning they contain, in one transaction, so a
redelivered entry is recognised and never applied twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import redis
from redis.cluster import RedisCluster

from app import keys
from app.lease import LeaseLost, fence
from bandits import LearningState, arm_prior

SCORING_FIELDS = ("A_inv", "theta", "n", "s", "f", "v")
LEARNING_FIELDS = ("A", "A_inv", "b", "theta", "n", "s", "f", "v")


@dataclass
class ArmScoring:
    """What /choose needs of one arm."""

    A_inv: np.ndarray
    theta: np.ndarray
    n: float
    successes: float
    failures: float
    version: int
    extra: np.ndarray | None = None  # a hybrid model's arm: its (d, D) B_a


@dataclass
class ArmUpdate:
    """One arm's new parameters, as the worker saves them."""

    model_id: str
    arm: str
    state: LearningState  # K = 1
    version: int
    extra: np.ndarray | None = None  # a hybrid model's arm: its (d, D) B_a


def decode_learning(values: list[bytes]) -> tuple[LearningState, int]:
    """An arm's state (K = 1) and version from its hash values, in ``LEARNING_FIELDS`` order."""
    a, a_inv, b, theta, n, s, f, v = values
    dim = math.isqrt(len(a) // 8)

    def matrix(raw: bytes) -> np.ndarray:
        return np.frombuffer(raw, dtype=np.float64).reshape(1, dim, dim).copy()

    def vector(raw: bytes) -> np.ndarray:
        return np.frombuffer(raw, dtype=np.float64).reshape(1, dim).copy()

    state = LearningState(
        A_inv=matrix(a_inv),
        theta=vector(theta),
        n=np.array([float(n)]),
        successes=np.array([float(s)]),
        failures=np.array([float(f)]),
        A=matrix(a),
        b=vector(b),
    )
    return state, int(v)


def extra_matrix(raw: bytes | None, shape: tuple[int, int]) -> np.ndarray:
    """A hybrid arm's ``B`` from its stored bytes (zeros if it has none yet)."""
    if raw is None:
        return np.zeros(shape)
    return np.frombuffer(raw, dtype=np.float64).reshape(shape)


class ModelStore:
    """Read and write arm parameters of every experiment."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def versions(self, experiment: str, model_id: str) -> dict[str, int]:
        """Current parameter version of every arm that has learned anything."""
        raw = self.redis.hgetall(keys.arm_versions(experiment, model_id))
        return {k.decode(): int(v) for k, v in raw.items()}

    def load_scoring(
        self,
        experiment: str,
        model_id: str,
        arms: list[str],
        dim: int,
        extra: tuple[int, int] | None = None,
    ) -> dict[str, ArmScoring]:
        """Choosing parameters of the given arms; arms never updated are left out.

        ``extra`` is the shape of a hybrid arm's ``B`` (then read too).
        """
        fields = SCORING_FIELDS if extra is None else SCORING_FIELDS + ("B",)
        pipe = self.redis.pipeline(transaction=False)
        for arm in arms:
            pipe.hmget(keys.arm(experiment, model_id, arm), fields)
        found = {}
        for arm, values in zip(arms, pipe.execute()):
            if values[0] is None:
                continue
            a_inv, theta, n, s, f, v = values[:6]
            found[arm] = ArmScoring(
                A_inv=np.frombuffer(a_inv, dtype=np.float64).reshape(dim, dim),
                theta=np.frombuffer(theta, dtype=np.float64),
                n=float(n),
                successes=float(s),
                failures=float(f),
                version=int(v),
                extra=None if extra is None else extra_matrix(values[6], extra),
            )
        return found

    def load_learning(
        self, experiment: str, model_id: str, arm: str, dim: int, ridge: float
    ) -> tuple[LearningState, int]:
        """One arm's full state and version; the prior (version 0) if it never learned."""
        values = self.redis.hmget(keys.arm(experiment, model_id, arm), LEARNING_FIELDS)
        if values[0] is None:
            return arm_prior(dim, ridge), 0
        return decode_learning(values)

    def load_hybrid_arm(
        self, experiment: str, model_id: str, arm: str, dim: int, shared_dim: int, ridge: float
    ) -> tuple[LearningState, np.ndarray, int]:
        """A hybrid model's arm: its state, ``B`` and version; the prior (version 0) if new."""
        values = self.redis.hmget(keys.arm(experiment, model_id, arm), LEARNING_FIELDS + ("B",))
        if values[0] is None:
            return arm_prior(dim, ridge), np.zeros((dim, shared_dim)), 0
        state, version = decode_learning(values[:8])
        return state, extra_matrix(values[8], (dim, shared_dim)).copy(), version

    def generation(self, experiment: str) -> bytes | None:
        """A value that changes whenever any arm of ``experiment`` is saved (None: never saved)."""
        return self.redis.get(keys.generation(experiment))

    def applied_through(self, experiment: str) -> bytes | None:
        """Id of the last stream entry whose learning is saved, or None."""
        return self.redis.get(keys.applied(experiment))

    def save(
        self,
        experiment: str,
        updates: list[ArmUpdate],
        applied_through: bytes,
        *,
        holder: str | None = None,
        also: Callable[[redis.client.Pipeline], None] | None = None,
    ) -> None:
        """Save arms and the learning watermark in one transaction, and announce it.

        With ``holder``, save only while that worker holds the experiment's
        lease, and raise :class:`LeaseLost` otherwise: a worker that stalled
        past its lease must not overwrite what the new holder learned since.
        ``also`` queues more commands into the same transaction (the worker's
        acknowledgement of the entries learned: one round trip for both). A
        save that changed arms is published on :func:`keys.models_saved`, so
        API processes refresh at once instead of at their next periodic check.
        """
        with self.redis.pipeline(transaction=True) as pipe:
            if holder is not None:
                fence(pipe, experiment, holder)
            versions: dict[str, dict[str, int]] = {}  # per model: its saved arms' versions
            for u in updates:
                pipe.hset(keys.arm(experiment, u.model_id, u.arm), mapping=_arm_fields(u))
                versions.setdefault(u.model_id, {})[u.arm] = u.version
            for model_id, arm_versions in versions.items():
                pipe.hset(keys.arm_versions(experiment, model_id), mapping=arm_versions)
            pipe.set(keys.applied(experiment), applied_through)
            # a cluster's transaction takes no PUBLISH (no key): it follows the EXEC there
            publish_after = updates and isinstance(self.redis, RedisCluster)
            if updates:
                pipe.incr(keys.generation(experiment))
                if not publish_after:
                    pipe.publish(keys.models_saved(), experiment)
            if also is not None:
                also(pipe)
            try:
                pipe.execute()
            except redis.WatchError as exc:
                raise LeaseLost(experiment) from exc
        if publish_after:
            self.redis.publish(keys.models_saved(), experiment)


def _arm_fields(update: ArmUpdate) -> dict[str, bytes | str | int]:
    """An arm's hash fields as :meth:`ModelStore.save` writes them."""
    s = update.state
    fields: dict[str, bytes | str | int] = {
        "A": s.A[0].tobytes(),
        "A_inv": s.A_inv[0].tobytes(),
        "b": s.b[0].tobytes(),
        "theta": s.theta[0].tobytes(),
        "n": repr(float(s.n[0])),
        "s": repr(float(s.successes[0])),
        "f": repr(float(s.failures[0])),
        "v": update.version,
    }
    if update.extra is not None:
        fields["B"] = update.extra.tobytes()
    return fields
