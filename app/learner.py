"""Apply reward events to arm parameters, exactly once in effect.

The worker owns an experiment's stream while it holds its lease, so it can keep
the arms it touches in memory and treat Redis as the durable copy. Every save
carries the id of the last entry learned from; entries at or below it are
redeliveries and are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import redis

from app.events import Event, RewardEvent
from app.config import AUTO_FORGETTING, SHARED_ARM
from app.model_store import ArmUpdate, ModelStore
from bandits import LearningState, rescale, update
from bandits.auto_forgetting import AUTO, BASE
from bandits.batch_learning import update_many
from bandits.item_models import HybridState, hybrid_update


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
    shared_level: int | None = None,
) -> None:
    """Learn one reward into a single-arm state: the update the worker and a rebuild both apply.

    ``weight`` is the position weight of the slot the arm was shown in, and
    ``forgetting`` the discount, both as configured when the decision was made;
    ``shared_level`` is a shared item model's level column (``RewardEvent.shared_level``).
    """
    # Position-based model: E[reward] = weight * theta.x, so learn from weight * x.
    features = x if weight == 1.0 else x * weight
    update(
        state,
        0,
        features,
        reward,
        success=rescale(reward, reward_min, reward_max),
        discount=AUTO if forgetting == AUTO_FORGETTING else forgetting,
        ridge=ridge,
        reward_range=(reward_min, reward_max),
        **_auto_level(shared_level),
    )


def _auto_level(shared_level: int | None) -> dict:
    """Where auto forgetting reads a model's level, and its discount while nothing moves:
    a per-arm model's intercept and BASE, or a shared model's level column and 1.0."""
    if shared_level is None:
        return {"level": 0, "auto_base": BASE}
    return {"level": shared_level, "auto_base": 1.0}


def learn_rewards(state: LearningState, arms: list[int], events: list[RewardEvent]) -> None:
    """Learn many rewards in order, ``events[i]`` into arm ``arms[i]`` of ``state``.

    Bit for bit what :func:`learn_reward` gives one reward at a time (what a
    rebuild does), only vectorised across arms (one at a time if any has forgetting "auto").
    """
    features = np.array([e.features for e in events])
    if not np.isfinite(features).all():
        raise ValueError("a reward's features are not finite numbers")
    if any(e.forgetting == AUTO_FORGETTING for e in events):
        for arm, e in zip(arms, events):
            one = e.features if e.weight == 1.0 else e.features * e.weight
            update(
                state,
                arm,
                one,
                e.reward,
                success=rescale(e.reward, e.reward_min, e.reward_max),
                discount=AUTO if e.forgetting == AUTO_FORGETTING else e.forgetting,
                ridge=e.ridge,
                reward_range=(e.reward_min, e.reward_max),
                **_auto_level(e.shared_level),
            )
        return
    weights = np.array([e.weight for e in events])
    update_many(
        state,
        np.array(arms),
        features * weights[:, None],  # times 1.0 is exact: unweighted features stay as they are
        np.array([e.reward for e in events]),
        successes=np.array([rescale(e.reward, e.reward_min, e.reward_max) for e in events]),
        discounts=np.array([e.forgetting for e in events]),
        ridges=np.array([e.ridge for e in events]),
    )


def learn_hybrid_reward(state: HybridState, arm: int, event: RewardEvent) -> None:
    """Learn one reward of a hybrid model into ``arm`` of ``state``: the worker's and a
    rebuild's update alike. ``event.features`` is its context, ``shared_features`` its phi."""
    x, phi = event.features, event.shared_features
    if event.weight != 1.0:  # the position-based model, as for a per-arm model
        x, phi = x * event.weight, phi * event.weight
    if event.forgetting != AUTO_FORGETTING:
        hybrid_update(
            state, arm, x, phi, event.reward, discount=event.forgetting, ridge=event.ridge
        )
        return
    hybrid_update(
        state,
        arm,
        x,
        phi,
        event.reward,
        discount=AUTO,
        ridge=event.ridge,
        success=rescale(event.reward, event.reward_min, event.reward_max),
        reward_range=(event.reward_min, event.reward_max),
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


def merged(parts: list[Learned | None]) -> Learned | None:
    """Batches prepared one after the other, as one (the later state of an arm wins)."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    updates = {(u.model_id, u.arm): u for p in parts for u in p.updates}
    return Learned(
        parts[0].experiment,
        list(updates.values()),
        parts[-1].last_id,
        sum(p.rewards for p in parts),
    )


class Learner:
    """In-memory arm states of the experiments one worker owns."""

    def __init__(self, store: ModelStore, holder: str | None = None) -> None:
        self.store = store
        self.holder = holder  # saves are fenced on this worker's lease
        self._arms: dict[tuple[str, str, str], tuple[LearningState, int]] = {}
        self._extras: dict[tuple[str, str, str], np.ndarray] = {}  # hybrid arms' B
        self._applied: dict[str, tuple[int, int]] = {}

    def forget(self, experiment: str) -> None:
        """Drop what is cached for ``experiment``; it is reloaded from Redis when needed."""
        self._arms = {k: v for k, v in self._arms.items() if k[0] != experiment}
        self._extras = {k: v for k, v in self._extras.items() if k[0] != experiment}
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
        rewards: dict[str, list[RewardEvent]] = {}  # per model, in stream order
        for entry_id, event in entries:
            if entry_order(entry_id) <= applied:
                continue
            last_id = entry_id
            if isinstance(event, RewardEvent) and event.kind != "late":
                rewards.setdefault(event.model_id, []).append(event)
        if last_id is None:
            return None
        learned = {}
        for model_id, events in rewards.items():
            if events[0].shared_features is not None:
                learned.update(self._learn_hybrid(experiment, model_id, events))
            else:
                learned.update(self._learn_model(experiment, model_id, events))
        self._arms.update(learned)
        self._applied[experiment] = entry_order(last_id)
        updates = [
            ArmUpdate(key[1], key[2], state, version, extra=self._extras.get(key))
            for key, (state, version) in learned.items()
        ]
        return Learned(experiment, updates, last_id, sum(map(len, rewards.values())))

    def _learn_model(
        self, experiment: str, model_id: str, events: list[RewardEvent]
    ) -> dict[tuple[str, str, str], tuple[LearningState, int]]:
        """Learn one model's rewards on a copy of its arms; the arms' new states and versions."""
        place: dict[str, int] = {}  # arm -> its row in the stacked copy
        firsts: list[RewardEvent] = []  # per row: the arm's first reward
        index = []  # per reward: its arm's row
        for event in events:
            row = place.get(event.learns_into)
            if row is None:
                row = place[event.learns_into] = len(firsts)
                firsts.append(event)
            index.append(row)
        loaded = [self._load((experiment, model_id, e.learns_into), e) for e in firsts]
        state = _stacked([arm_state for arm_state, _ in loaded])
        learn_rewards(state, index, events)
        counts = np.bincount(index, minlength=len(firsts))
        return {
            (experiment, model_id, arm): (_arm(state, row), loaded[row][1] + int(counts[row]))
            for arm, row in place.items()
        }

    def _learn_hybrid(
        self, experiment: str, model_id: str, events: list[RewardEvent]
    ) -> dict[tuple[str, str, str], tuple[LearningState, int]]:
        """Learn a hybrid model's rewards in order: the shared row and each rewarded arm's."""
        first = events[0]
        dim, shared_dim = len(first.features), len(first.shared_features)
        shared_key = (experiment, model_id, SHARED_ARM)
        shared, shared_version = self._arms.get(shared_key) or self.store.load_learning(
            experiment, model_id, SHARED_ARM, shared_dim, first.ridge
        )
        place: dict[str, int] = {}
        loaded = []
        for event in events:
            if event.arm not in place:
                place[event.arm] = len(loaded)
                loaded.append(self._load_hybrid((experiment, model_id, event.arm), event, dim))
        state = HybridState(
            shared=_arm(shared, 0),
            arms=_stacked([arm_state for arm_state, _, _ in loaded]),
            B=np.stack([extra for _, extra, _ in loaded]),
        )
        for event in events:
            learn_hybrid_reward(state, place[event.arm], event)
        counts = np.bincount([place[e.arm] for e in events], minlength=len(loaded))
        learned = {shared_key: (state.shared, shared_version + len(events))}
        for arm, row in place.items():
            key = (experiment, model_id, arm)
            learned[key] = (_arm(state.arms, row), loaded[row][2] + int(counts[row]))
            self._extras[key] = state.B[row].copy()
        return learned

    def _load_hybrid(
        self, key: tuple[str, str, str], event: RewardEvent, dim: int
    ) -> tuple[LearningState, np.ndarray, int]:
        cached = self._arms.get(key)
        if cached is not None and key in self._extras:
            return cached[0], self._extras[key], cached[1]
        shared_dim = len(event.shared_features)
        return self.store.load_hybrid_arm(*key, dim, shared_dim, event.ridge)

    def commit(
        self,
        learned: Learned | None,
        also: Callable[[redis.client.Pipeline], None] | None = None,
    ) -> int:
        """Save a prepared batch to Redis (fenced on the lease); returns the rewards it learned.

        ``also`` adds commands to the save's transaction; they are not run when
        there is nothing to save (``learned`` is None).
        """
        if learned is None:
            return 0
        try:
            self.store.save(
                learned.experiment, learned.updates, learned.last_id, holder=self.holder, also=also
            )
        except Exception:
            self.forget(learned.experiment)  # our copies ran ahead of Redis: reload them
            raise
        return learned.rewards

    def _load(self, key: tuple[str, str, str], event: RewardEvent) -> tuple[LearningState, int]:
        cached = self._arms.get(key)
        if cached is not None:
            return cached
        return self.store.load_learning(key[0], key[1], key[2], len(event.features), event.ridge)


FIELDS = ("A_inv", "theta", "n", "successes", "failures", "A", "b")


def _stacked(states: list[LearningState]) -> LearningState:
    """One state of many arms (a copy), in the order given."""
    return LearningState(**{f: np.concatenate([getattr(s, f) for s in states]) for f in FIELDS})


def _arm(state: LearningState, i: int) -> LearningState:
    """Arm ``i`` of ``state`` as a one-arm state of its own.

    A copy, not a view: a cached view would keep the whole batch's stack alive
    for as long as any one of its arms goes without a reward.
    """
    return LearningState(**{f: getattr(state, f)[i : i + 1].copy() for f in FIELDS})
