"""Several discount factors learned side by side, choosing with the one that predicts best.

The rule issue 18 suggested first for choosing how fast to forget: every
factor keeps its own model of every arm, all learn from every reward, and
the policy chooses with the model whose recent squared prediction error is
lowest. Each factor's error on an arm is an exponentially weighted mean over
that arm's rewards (weight ``1 - rho`` on the newest), taken before the
reward is learned. ``scope="arm"`` picks the factor per arm (each arm's
choice from its own errors); ``scope="experiment"`` picks one factor for all
arms from the errors summed over arms.

A study agent, not a setting of the service: it multiplies the state by the
number of factors. ``forgetting_study`` plays it next to ``"auto"``
(docs/LEARNING.md, "Automatic forgetting").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import select
from ..learning import update
from ..policy import PolicyParams
from ..state import prior
from .agents import AgentFactory, with_intercept

__all__ = ["FACTORS", "SideBySide", "side_by_side_factory"]

FACTORS = (1.0, 0.999, 0.995, 0.99, 0.98)


@dataclass
class SideBySide:
    """A :mod:`bandits` policy choosing with whichever discount factor predicts best lately.

    Parameters
    ----------
    policy, n_arms, dim, rng, params
        As for :class:`~.agents.BanditdAgent`.
    scope : {"arm", "experiment"}
        Pick the factor per arm, or one for every arm.
    factors : tuple of float
        The discount factors learned side by side.
    rho : float
        Weight kept by an arm's error average at each of its rewards.
    """

    policy: str
    n_arms: int
    dim: int
    rng: np.random.Generator
    params: PolicyParams = field(default_factory=PolicyParams)
    scope: str = "arm"
    factors: tuple[float, ...] = FACTORS
    rho: float = 0.98

    def __post_init__(self) -> None:
        if self.scope not in ("arm", "experiment"):
            raise ValueError(f"scope must be 'arm' or 'experiment', got {self.scope!r}")
        self.states = [prior(self.n_arms, self.dim + 1) for _ in self.factors]
        self.errors = np.zeros((self.n_arms, len(self.factors)))
        self.picked = np.zeros(self.n_arms, dtype=int)  # per arm: the factor it chooses with
        self.view = prior(self.n_arms, self.dim + 1)  # scope "arm": each arm's picked rows

    def choose(self, z: np.ndarray) -> int:
        """The policy's slot-0 arm for context ``z``, under the picked factor(s)."""
        state = self.view if self.scope == "arm" else self.states[self.picked[0]]
        return int(select(self.policy, state, with_intercept(z), self.rng, self.params).arms[0])

    def learn(self, z: np.ndarray, arm: int, reward: float) -> None:
        """Score every factor's prediction of ``reward``, then let each learn it."""
        x = with_intercept(z)
        for k, (factor, state) in enumerate(zip(self.factors, self.states)):
            error = reward - float(state.theta[arm] @ x)
            self.errors[arm, k] = self.rho * self.errors[arm, k] + (1 - self.rho) * error**2
            update(state, arm, x, reward, discount=factor)
        if self.scope == "experiment":
            self.picked[:] = int(np.argmin(self.errors.sum(axis=0)))
            return
        self.picked[arm] = int(np.argmin(self.errors[arm]))
        source = self.states[self.picked[arm]]
        for name in ("A", "b", "A_inv", "theta", "n", "successes", "failures"):
            getattr(self.view, name)[arm] = getattr(source, name)[arm]


def side_by_side_factory(
    policy: str, params: PolicyParams | None = None, *, scope: str = "arm"
) -> AgentFactory:
    """A factory of :class:`SideBySide` agents, for the runner."""

    def make(n_arms: int, dim: int, rng: np.random.Generator, seed: int = 0) -> SideBySide:
        return SideBySide(policy, n_arms, dim, rng, params or PolicyParams(), scope=scope)

    return make
