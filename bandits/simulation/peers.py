"""Reference peers: MABWiser and Vowpal Wabbit behind the runner's agent interface.

Both come from the optional ``eval`` extra (``pip install -e '.[eval]'``) and
are imported only when a peer is built, so :mod:`bandits` never needs them.
Every peer sees the same information as banditd's agents: the raw context
(MABWiser gets it with the same leading 1 banditd adds; Vowpal Wabbit adds its
own constant feature), the chosen arm and its reward, one round at a time.

- ``mabwiser_linucb`` / ``mabwiser_lints``: MABWiser's disjoint ridge models,
  ``LearningPolicy.LinUCB(alpha)`` and ``LearningPolicy.LinTS(alpha)`` (its
  ``alpha`` scales the posterior like banditd's ``v``), ``l2_lambda = 1``,
  updated with ``partial_fit`` after every round.
- ``vw_squarecb`` / ``vw_egreedy``: ``--cb_explore_adf`` with ``--squarecb``
  or ``--epsilon``; the context is a shared namespace ``s`` and each action
  is one indicator feature in namespace ``a``, crossed with ``-q sa``, i.e. a
  per-arm linear model as banditd's. Cost is ``-reward``; the arm is drawn
  from VW's probability mass function with the agent's generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .agents import AgentFactory, with_intercept

__all__ = ["available", "mabwiser_factory", "vw_factory", "MabwiserAgent", "VowpalAgent"]


def available() -> dict[str, bool]:
    """Which peer libraries can be imported here."""
    found = {}
    for name, module in (("mabwiser", "mabwiser"), ("vw", "vowpalwabbit")):
        try:
            __import__(module)
            found[name] = True
        except ImportError:
            found[name] = False
    return found


@dataclass
class MabwiserAgent:
    """A MABWiser linear policy updated after every round."""

    mab: Any

    def choose(self, z: np.ndarray) -> int:
        """MABWiser's prediction for the context."""
        return int(self.mab.predict(with_intercept(z)[None, :]))

    def learn(self, z: np.ndarray, arm: int, reward: float) -> None:
        """One ``partial_fit`` row."""
        self.mab.partial_fit([arm], [reward], with_intercept(z)[None, :])


def mabwiser_factory(kind: str, alpha: float) -> AgentFactory:
    """A factory of MABWiser ``LinUCB`` (``kind="linucb"``) or ``LinTS`` (``"lints"``) agents."""
    from mabwiser.mab import MAB, LearningPolicy  # optional: the eval extra

    policies = {"linucb": LearningPolicy.LinUCB, "lints": LearningPolicy.LinTS}
    policy = policies[kind](alpha=alpha, l2_lambda=1.0)

    def make(n_arms: int, dim: int, rng: np.random.Generator, seed: int = 0) -> MabwiserAgent:
        mab = MAB(
            arms=list(range(n_arms)),
            learning_policy=policy,
            seed=int(rng.integers(2**31)),
        )
        mab.fit(decisions=[], rewards=[], contexts=np.empty((0, dim + 1)))
        return MabwiserAgent(mab)

    return make


class VowpalAgent:
    """Vowpal Wabbit ``--cb_explore_adf`` with one example per round."""

    def __init__(self, args: str, n_arms: int, rng: np.random.Generator) -> None:
        import vowpalwabbit  # optional: the eval extra

        seed = int(rng.integers(2**31))
        self.vw = vowpalwabbit.Workspace(f"{args} --random_seed {seed} --quiet")
        self.rng = rng
        self.actions = [f"|a arm{a}" for a in range(n_arms)]
        self._prob = 1.0

    @staticmethod
    def _shared(z: np.ndarray) -> str:
        return "shared |s " + " ".join(f"f{i}:{v:.6g}" for i, v in enumerate(z))

    def choose(self, z: np.ndarray) -> int:
        """Draw an arm from VW's exploration distribution."""
        pmf = np.asarray(self.vw.predict([self._shared(z), *self.actions]), dtype=np.float64)
        pmf /= pmf.sum()
        arm = int(self.rng.choice(pmf.size, p=pmf))
        self._prob = float(pmf[arm])
        return arm

    def learn(self, z: np.ndarray, arm: int, reward: float) -> None:
        """One labelled multi-line example: cost ``-reward`` on the chosen arm."""
        lines = [self._shared(z), *self.actions]
        lines[1 + arm] = f"0:{-reward:.6g}:{self._prob:.6g} {self.actions[arm]}"
        self.vw.learn(lines)

    def close(self) -> None:
        """Free VW's native resources."""
        self.vw.finish()


def vw_factory(exploration: str) -> AgentFactory:
    """A factory of VW agents; ``exploration`` e.g. ``"--squarecb"`` or ``"--epsilon 0.05"``."""
    args = f"--cb_explore_adf -q sa {exploration}"

    def make(n_arms: int, dim: int, rng: np.random.Generator, seed: int = 0) -> VowpalAgent:
        return VowpalAgent(args, n_arms, rng)

    return make
