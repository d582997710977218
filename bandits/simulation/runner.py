"""Run agents on environments over several seeds and summarise.

For each seed, the environment draws an :class:`~.environments.Episode` and a
fresh agent plays it round by round: ``choose`` then ``learn``. Seed ``s``
gives the same episode to every agent (common random numbers); the agent's own
randomness comes from a separate stream of the same seed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .agents import Agent, AgentFactory
from .environments import Environment, Episode

__all__ = ["RunResult", "seed_streams", "play", "run", "markdown_table"]


@dataclass(frozen=True)
class RunResult:
    """One agent on one environment over several seeds.

    Attributes
    ----------
    environment, agent : str
        Names.
    seeds : tuple of int
    earned : np.ndarray
        ``(S, T)`` reward paid in each round.
    expected : np.ndarray
        ``(S, T)`` expected reward of the chosen arm.
    best : np.ndarray
        ``(S, T)`` expected reward of the best arm.
    seconds : np.ndarray
        ``(S,)`` wall time spent in ``choose`` and ``learn``.
    """

    environment: str
    agent: str
    seeds: tuple[int, ...]
    earned: np.ndarray
    expected: np.ndarray
    best: np.ndarray
    seconds: np.ndarray

    @property
    def rounds(self) -> int:
        """Rounds per seed."""
        return self.earned.shape[1]

    @property
    def mean_reward(self) -> np.ndarray:
        """``(S,)`` mean expected reward per round of the arms chosen, per seed.

        The expected reward of the chosen arm, not the coin flip it paid:
        the same ranking in expectation, without the Bernoulli noise
        (:attr:`mean_earned` is the realised one).
        """
        return self.expected.mean(axis=1)

    @property
    def mean_earned(self) -> np.ndarray:
        """``(S,)`` mean realised reward per round, per seed."""
        return self.earned.mean(axis=1)

    @property
    def second_half(self) -> np.ndarray:
        """``(S,)`` :attr:`mean_reward` over the second half of each seed."""
        return self.expected[:, self.rounds // 2 :].mean(axis=1)

    @property
    def regret(self) -> np.ndarray:
        """``(S,)`` pseudo-regret: summed expected reward lost to the best arm."""
        return (self.best - self.expected).sum(axis=1)

    @property
    def rounds_per_second(self) -> float:
        """Rounds played per second of agent time, over all seeds."""
        return self.earned.size / max(float(self.seconds.sum()), 1e-12)

    def summary(self) -> dict[str, float | str | int]:
        """Means and standard deviations over seeds, as plain numbers."""
        return {
            "environment": self.environment,
            "agent": self.agent,
            "rounds": self.rounds,
            "seeds": len(self.seeds),
            "mean_reward": float(self.mean_reward.mean()),
            "mean_reward_sd": _sd(self.mean_reward),
            "mean_earned": float(self.mean_earned.mean()),
            "second_half": float(self.second_half.mean()),
            "second_half_sd": _sd(self.second_half),
            "regret": float(self.regret.mean()),
            "regret_sd": _sd(self.regret),
            "optimal_reward": float(self.best.mean()),
            "rounds_per_second": self.rounds_per_second,
        }


def _sd(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if values.size > 1 else 0.0


def seed_streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """The environment's and the agent's independent generators for ``seed``."""
    env_seq, agent_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(env_seq), np.random.default_rng(agent_seq)


def play(episode: Episode, agent: Agent) -> tuple[np.ndarray, float]:
    """Play ``episode`` with ``agent``; returns the ``(T,)`` arms chosen and the seconds spent."""
    arms = np.empty(episode.rounds, dtype=np.intp)
    z_all, rewards = episode.features, episode.rewards
    started = time.perf_counter()
    for t in range(episode.rounds):
        z = z_all[t]
        arm = agent.choose(z)
        arms[t] = arm
        agent.learn(z, arm, float(rewards[t, arm]))
    return arms, time.perf_counter() - started


def run(
    env: Environment,
    agent_name: str,
    factory: AgentFactory,
    rounds: int,
    seeds: Sequence[int],
) -> RunResult:
    """Play ``rounds`` rounds of ``env`` with a fresh agent per seed.

    Parameters
    ----------
    env : Environment
    agent_name : str
        Label for the result.
    factory : callable
        ``factory(n_arms, dim, rng, seed)`` returns a fresh agent.
    rounds : int
    seeds : sequence of int

    Returns
    -------
    RunResult
    """
    earned, expected, best, seconds = [], [], [], []
    for seed in seeds:
        env_rng, agent_rng = seed_streams(seed)
        episode = env.episode(rounds, env_rng)
        agent = factory(episode.n_arms, episode.dim, agent_rng, seed)
        try:
            arms, spent = play(episode, agent)
        finally:
            close = getattr(agent, "close", None)
            if close is not None:
                close()
        rows = np.arange(episode.rounds)
        earned.append(episode.rewards[rows, arms])
        expected.append(episode.means[rows, arms])
        best.append(episode.means.max(axis=1))
        seconds.append(spent)
    return RunResult(
        env.name,
        agent_name,
        tuple(seeds),
        np.array(earned),
        np.array(expected),
        np.array(best),
        np.array(seconds),
    )


def markdown_table(results: Sequence[RunResult]) -> str:
    """A Markdown table of the results: mean reward, second half, regret (± sd) and speed."""
    lines = [
        "| environment | agent | rounds × seeds | mean reward ± sd | second half ± sd "
        "| regret ± sd | rounds/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r.summary()
        lines.append(
            f"| {s['environment']} | {s['agent']} | {s['rounds']} × {s['seeds']} "
            f"| {s['mean_reward']:.4f} ± {s['mean_reward_sd']:.4f} "
            f"| {s['second_half']:.4f} ± {s['second_half_sd']:.4f} "
            f"| {s['regret']:.1f} ± {s['regret_sd']:.1f} "
            f"| {s['rounds_per_second']:,.0f} |"
        )
    return "\n".join(lines)
