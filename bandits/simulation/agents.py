"""Agents the runner can drive: banditd's policies in-process, and the interface.

An agent sees a round's raw context, picks one arm, and is told the reward of
that arm. :class:`BanditdAgent` runs a :mod:`bandits` policy exactly as the
service does (same ``select`` and ``update``, intercept first as
:class:`~bandits.FeatureSpec` encodes it) but learns synchronously, each reward
before the next round. Peers live in :mod:`bandits.simulation.peers`; the
through-the-service agent lives in ``app.simulate_service``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .. import select
from ..learning import update
from ..policy import PolicyParams
from ..state import prior

__all__ = ["Agent", "AgentFactory", "BanditdAgent", "banditd_factory", "with_intercept"]


class Agent(Protocol):
    """A learner in the simulation loop."""

    def choose(self, z: np.ndarray) -> int:
        """Pick an arm for raw context ``z``."""
        ...

    def learn(self, z: np.ndarray, arm: int, reward: float) -> None:
        """Be told the reward ``arm`` earned at context ``z``."""
        ...


# (n_arms, dim, rng, seed) -> a fresh agent for one seed
AgentFactory = Callable[[int, int, np.random.Generator, int], Agent]


def with_intercept(z: np.ndarray) -> np.ndarray:
    """``[1, z...]``: the vector :class:`~bandits.FeatureSpec` encodes by default."""
    return np.concatenate(([1.0], z))


@dataclass
class BanditdAgent:
    """A :mod:`bandits` policy learning in-process, one reward at a time.

    Parameters
    ----------
    policy : str
        A key of :data:`bandits.POLICIES`.
    n_arms, dim : int
        Arms and raw features (the state has ``dim + 1`` with the intercept).
    rng : np.random.Generator
        The policy's randomness.
    params : PolicyParams
        Its knobs.
    ridge : float, default 1.0
        Ridge prior.
    discount : float, default 1.0
        Forgetting factor passed to :func:`bandits.update` (1.0: none; or
        ``"auto"``).
    delay : int, default 0
        Apply each reward only after this many further rounds, as a model of
        the service's asynchronous learning (0: the synchronous baseline).
    pending : bool, default False
        With a delay: learn each decision's context at once with the model's
        own prediction as a stand-in reward (``A`` gains ``x x^T`` so the
        confidence width shrinks, ``theta`` is unchanged), and correct ``b``
        by ``(reward - prediction) x`` when the reward arrives. Once every
        reward is in, the state is the one synchronous learning reaches (the
        same sums). Not combined with ``discount``.
    """

    policy: str
    n_arms: int
    dim: int
    rng: np.random.Generator
    params: PolicyParams = field(default_factory=PolicyParams)
    ridge: float = 1.0
    discount: float | str = 1.0
    delay: int = 0
    pending: bool = False

    def __post_init__(self) -> None:
        if self.pending and self.discount != 1.0:
            raise ValueError("pending updates are not defined with forgetting")
        self.state = prior(self.n_arms, self.dim + 1, self.ridge)
        self._queue: deque[tuple[int, np.ndarray, float, float]] = deque()
        self._guess = 0.0

    def choose(self, z: np.ndarray) -> int:
        """The policy's slot-0 arm for context ``z``."""
        x = with_intercept(z)
        arm = int(select(self.policy, self.state, x, self.rng, self.params).arms[0])
        if self.pending:
            self._guess = float(self.state.theta[arm] @ x)
            update(self.state, arm, x, self._guess, success=0.0)
        return arm

    def learn(self, z: np.ndarray, arm: int, reward: float) -> None:
        """Queue the reward; apply every reward that is ``delay`` rounds old."""
        self._queue.append((arm, with_intercept(z), reward, self._guess))
        while len(self._queue) > self.delay:
            self._apply(*self._queue.popleft())

    def flush(self) -> None:
        """Apply every queued reward now."""
        while self._queue:
            self._apply(*self._queue.popleft())

    def _apply(self, arm: int, x: np.ndarray, reward: float, guess: float) -> None:
        if not self.pending:
            update(self.state, arm, x, reward, discount=self.discount, ridge=self.ridge)
            return
        s = self.state  # A already has x x^T: only b and the Beta counts change
        s.b[arm] += (reward - guess) * x
        s.theta[arm] = s.A_inv[arm] @ s.b[arm]
        success = min(max(reward, 0.0), 1.0)
        s.successes[arm] += success
        s.failures[arm] -= success


def banditd_factory(
    policy: str,
    params: PolicyParams | None = None,
    *,
    ridge: float = 1.0,
    discount: float | str = 1.0,
    delay: int = 0,
    pending: bool = False,
) -> AgentFactory:
    """A factory of :class:`BanditdAgent` with these settings, for the runner."""

    def make(n_arms: int, dim: int, rng: np.random.Generator, seed: int = 0) -> BanditdAgent:
        return BanditdAgent(
            policy,
            n_arms,
            dim,
            rng,
            params or PolicyParams(),
            ridge=ridge,
            discount=discount,
            delay=delay,
            pending=pending,
        )

    return make
