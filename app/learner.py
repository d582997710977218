"""Apply reward events to arm parameters, exactly once in effect.

The worker owns an experiment's stream while it holds its lease, so it can keep
the arms it touches in memory and treat Redis as the durable copy. Every save
carries the id of the last entry learned from; entries at or below it are
redeliveries and are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.events import Event, RewardEvent
from app.model_store import ArmUpdate, ModelStore
from bandits import LearningState, rescale, update


def learn_reward(
    state: LearningState,
    x: np.ndarray,
    reward: float,
    *,
    ridge: float,
    reward_min: float,
    reward_max: float,
    weight: float = 1.0,
    forgetting: float = 1.0,
) -> None:
    """Learn one reward into a single-arm state: the update the worker and a rebuild both apply.

    ``weight`` is the position weight of the slot the arm was shown in, and
    ``forgetting`` the discount, both as configured when the decision was made.
    """
    # Position-based model: E[reward] = weight * theta.x, so learn from weight * x.
    features = x if weight == 1.0 else x * weight
    update(
        state,
        0,
        features,
        reward,
        success=rescale(reward, reward_min, reward_max),
        discount=forgetting,
        ridge=ridge,
    )


def entry_order(entry_id: bytes | None) -> tuple[int, int]:
    """Sort key of a Redis stream entry id (``ms-seq``); None sorts first."""
    if not entry_id:
        return (-1, -1)
    ms, _, seq = entry_id.partition(b"-")
    return (int(ms), int(seq or 0))


@dataclass(frozen=True)
class Learned:
    """A batch learned in memory and not yet saved: the arms it changed, through which entry."""

    experiment: str
    updates: list[ArmUpdate]
    last_id: bytes
    rewards: int


class Learner:
    """In-memory arm states of the experiments one worker owns."""

    def __init__(self, store: ModelStore, holder: str | None = None) -> None:
        self.store = store
        self.holder = holder  # saves are fenced on this worker's lease
        self._arms: dict[tuple[str, str, str], tuple[LearningState, int]] = {}
        self._applied: dict[str, tuple[int, int]] = {}

    def forget(self, experiment: str) -> None:
        """Drop what is cached for ``experiment``; it is reloaded from Redis when needed."""
        self._arms = {k: v for k, v in self._arms.items() if k[0] != experiment}
        self._applied.pop(experiment, None)

    def learn(self, experiment: str, entries: list[tuple[bytes, Event]]) -> int:
        """Learn from the rewards among ``entries`` (in stream order) and save; returns how many."""
        return self.commit(self.prepare(experiment, entries))

    def prepare(self, experiment: str, entries: list[tuple[bytes, Event]]) -> Learned | None:
        """Learn from ``entries`` in memory only; None if all of them were learned already.

        The next ``prepare`` builds on this one, so a batch can be learned while
        the one before it is still being logged; ``commit`` the results in the
        same order. If a commit fails, or a prepared batch is dropped, call
        ``forget``: what was prepared after the last commit is lost with it.
        """
        if experiment not in self._applied:
            self._applied[experiment] = entry_order(self.store.applied_through(experiment))
        applied = self._applied[experiment]
        last_id = None
        learned = 0
        pending: dict[tuple[str, str, str], tuple[LearningState, int]] = {}
        for entry_id, event in entries:
            if entry_order(entry_id) <= applied:
                continue
            last_id = entry_id
            if not isinstance(event, RewardEvent) or event.kind == "late":
                continue
            key = (experiment, event.model_id, event.arm)
            state, version = pending.get(key) or self._load(key, event)
            learn_reward(
                state,
                event.features,
                event.reward,
                ridge=event.ridge,
                reward_min=event.reward_min,
                reward_max=event.reward_max,
                weight=event.weight,
                forgetting=event.forgetting,
            )
            pending[key] = (state, version + 1)
            learned += 1
        if last_id is None:
            return None
        self._arms.update(pending)
        self._applied[experiment] = entry_order(last_id)
        updates = [
            ArmUpdate(model_id=m, arm=a, state=state, version=version)
            for (e, m, a), (state, version) in pending.items()
        ]
        return Learned(experiment, updates, last_id, learned)

    def commit(self, learned: Learned | None) -> int:
        """Save a prepared batch to Redis (fenced on the lease); returns the rewards it learned."""
        if learned is None:
            return 0
        try:
            self.store.save(
                learned.experiment, learned.updates, learned.last_id, holder=self.holder
            )
        except Exception:
            self.forget(learned.experiment)  # our copies ran ahead of Redis: reload them
            raise
        return learned.rewards

    def _load(self, key: tuple[str, str, str], event: RewardEvent) -> tuple[LearningState, int]:
        cached = self._arms.get(key)
        if cached is not None:
            state, version = cached
            return _copy(state), version
        return self.store.load_learning(key[0], key[1], key[2], len(event.features), event.ridge)


def _copy(state: LearningState) -> LearningState:
    return LearningState(
        A_inv=state.A_inv.copy(),
        theta=state.theta.copy(),
        n=state.n.copy(),
        successes=state.successes.copy(),
        failures=state.failures.copy(),
        A=state.A.copy(),
        b=state.b.copy(),
    )
