"""Per-item versus shared and hybrid models on :class:`~.item_world.ItemWorld`, in process.

Every agent plays the same episodes (one per seed, common random numbers);
its own randomness comes from the seed's agent stream
(:func:`~.runner.seed_streams`). Agents, all learning each reward before the
next round:

- ``random``: a uniform candidate.
- ``disjoint``: today's per-arm LinUCB, :mod:`bandits.linucb` and
  :func:`bandits.learning.update`, every item id its own arm (as ``arms =
  "dynamic"`` with no ``max_arms`` limit), context with the intercept.
- ``shared_linucb``, ``shared_lin_ts``, ``shared_squarecb``,
  ``hybrid_linucb``, ``hybrid_lin_ts``: :mod:`bandits.item_models` with all
  pairs (``D = (d + 1) (q + 1)``, 49 on the default world); the hybrid
  model's per-item ridge is ``--arm-ridge`` (1, the paper's, by default).
  ``--alpha`` and ``--v`` apply to every LinUCB and lin_ts agent alike.
- ``vw``: Vowpal Wabbit ``--cb_explore_adf -q UA --squarecb``: the context in
  the shared namespace ``U``, each candidate's features in namespace ``A``,
  with VW's own linear terms and constant, i.e. the same features as
  ``shared``. Cost is ``-reward``; the candidate is drawn from VW's
  probabilities with the agent's generator (as :mod:`.peers` does).

The score of a run is the mean *expected* reward of the chosen items (not the
coin flips). Run it as::

    .venv/bin/python -m bandits.simulation.item_study --seeds 5 --rounds 5000
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .. import linucb
from ..auto_forgetting import AUTO
from ..item_models import (
    ItemLayout,
    hybrid_moments,
    hybrid_prior,
    hybrid_update,
    learned_rewards,
    select_items,
    shared_moments,
    shared_prior,
    shared_update,
)
from ..learning import update
from ..policy import PolicyParams
from ..state import prior
from .agents import with_intercept
from .item_world import ItemEpisode, ItemWorld
from .runner import seed_streams

__all__ = ["Settings", "ItemAgent", "AGENTS", "play", "study", "markdown_table", "main"]


@dataclass(frozen=True)
class Settings:
    """What the agents are tuned with: the policies' knobs, the hybrid per-item ridge and the
    shared and hybrid models' forgetting (a factor or ``"auto"``)."""

    params: PolicyParams = field(default_factory=PolicyParams)
    arm_ridge: float = 1.0
    discount: float | str = 1.0


class ItemAgent(Protocol):
    """A learner over a changing catalogue: one candidate per round, then its reward."""

    def choose(self, z: np.ndarray, items: np.ndarray, ids: np.ndarray) -> int:
        """Position of the chosen candidate, given the raw context, ``(C, q)`` features and ids."""
        ...

    def learn(self, reward: float) -> None:
        """Be told the reward of the last chosen candidate."""
        ...


class RandomAgent:
    """A uniform candidate."""

    def __init__(self, episode: ItemEpisode, rng: np.random.Generator, settings: Settings):
        self.rng = rng

    def choose(self, z: np.ndarray, items: np.ndarray, ids: np.ndarray) -> int:
        """Any candidate, uniformly."""
        return int(self.rng.integers(ids.size))

    def learn(self, reward: float) -> None:
        """Nothing to learn."""


class DisjointAgent:
    """Per-arm LinUCB with every item id its own arm."""

    def __init__(self, episode: ItemEpisode, rng: np.random.Generator, settings: Settings):
        self.state = prior(episode.n_items, episode.features.shape[1] + 1)
        self.rng, self.params = rng, settings.params

    def choose(self, z: np.ndarray, items: np.ndarray, ids: np.ndarray) -> int:
        """LinUCB over the candidates' own models."""
        self._x = with_intercept(z)
        self._arm = int(
            linucb.select(self.state, self._x, self.rng, self.params, candidates=ids).arms[0]
        )
        return int(np.flatnonzero(ids == self._arm)[0])

    def learn(self, reward: float) -> None:
        """The chosen item's rank-one update."""
        update(self.state, self._arm, self._x, reward)


class SharedAgent:
    """One model over context × item features for every item."""

    def __init__(self, policy: str, episode: ItemEpisode, rng, settings: Settings) -> None:
        d, q = episode.features.shape[1] + 1, episode.items.shape[1]
        self.layout = ItemLayout.all_pairs(d, q)
        self.state = shared_prior(self.layout.dim)
        self.policy, self.rng, self.params = policy, rng, settings.params
        self.discount = settings.discount

    def choose(self, z: np.ndarray, items: np.ndarray, ids: np.ndarray) -> int:
        """The policy over the shared model's moments."""
        self._phi = self.layout.features(with_intercept(z), items)
        mean, quad = shared_moments(self.state, self._phi)
        learned = learned_rewards(self.state)
        sel = select_items(self.policy, mean, quad, self.rng, self.params, learned=learned)
        self._pos = int(sel.arms[0])
        return self._pos

    def learn(self, reward: float) -> None:
        """One rank-one update of the shared model."""
        shared_update(
            self.state,
            self._phi[self._pos],
            reward,
            discount=self.discount,
            level=self.layout.level_column,
        )


class HybridAgent:
    """Li et al.'s hybrid model: the shared model plus a per-item model of the context."""

    def __init__(self, policy: str, episode: ItemEpisode, rng, settings: Settings) -> None:
        d, q = episode.features.shape[1] + 1, episode.items.shape[1]
        self.layout = ItemLayout.all_pairs(d, q)
        self.arm_ridge = settings.arm_ridge
        self.state = hybrid_prior(episode.n_items, d, self.layout.dim, arm_ridge=self.arm_ridge)
        self.policy, self.rng, self.params = policy, rng, settings.params
        self.discount = settings.discount

    def choose(self, z: np.ndarray, items: np.ndarray, ids: np.ndarray) -> int:
        """The policy over the hybrid model's moments."""
        self._x = with_intercept(z)
        self._phi = self.layout.features(self._x, items)
        self._ids = ids
        mean, quad = hybrid_moments(self.state, ids, self._x, self._phi)
        learned = learned_rewards(self.state)
        sel = select_items(self.policy, mean, quad, self.rng, self.params, learned=learned)
        self._pos = int(sel.arms[0])
        return self._pos

    def learn(self, reward: float) -> None:
        """The paper's update of the shared part and the chosen item's part."""
        p = self._pos
        hybrid_update(
            self.state,
            int(self._ids[p]),
            self._x,
            self._phi[p],
            reward,
            discount=self.discount,
            arm_ridge=self.arm_ridge,
        )


class VowpalItemAgent:
    """Vowpal Wabbit ``--cb_explore_adf -q UA --squarecb`` over the candidates' features."""

    ARGS = "--cb_explore_adf -q UA --squarecb"

    def __init__(self, episode: ItemEpisode, rng: np.random.Generator, settings: Settings):
        import vowpalwabbit  # optional: the eval extra

        seed = int(rng.integers(2**31))
        self.vw = vowpalwabbit.Workspace(f"{self.ARGS} --random_seed {seed} --quiet")
        self.rng = rng

    def choose(self, z: np.ndarray, items: np.ndarray, ids: np.ndarray) -> int:
        """Draw a candidate from VW's exploration distribution."""
        shared = "shared |U " + " ".join(f"u{i}:{v:.6g}" for i, v in enumerate(z))
        actions = ["|A " + " ".join(f"a{i}:{v:.6g}" for i, v in enumerate(row)) for row in items]
        pmf = np.asarray(self.vw.predict([shared, *actions]), dtype=np.float64)
        pmf /= pmf.sum()
        self._pos = int(self.rng.choice(pmf.size, p=pmf))
        self._lines, self._prob = [shared, *actions], float(pmf[self._pos])
        return self._pos

    def learn(self, reward: float) -> None:
        """One labelled multi-line example: cost ``-reward`` on the chosen candidate."""
        lines = list(self._lines)
        lines[1 + self._pos] = f"0:{-reward:.6g}:{self._prob:.6g} {lines[1 + self._pos]}"
        self.vw.learn(lines)

    def close(self) -> None:
        """Free VW's native resources."""
        self.vw.finish()


def _policy(cls: type, policy: str) -> Callable[..., ItemAgent]:
    def make(episode: ItemEpisode, rng: np.random.Generator, settings: Settings) -> ItemAgent:
        return cls(policy, episode, rng, settings)

    return make


# name -> (episode, rng, settings) -> a fresh agent
AGENTS: dict[str, Callable[..., ItemAgent]] = {
    "random": RandomAgent,
    "disjoint": DisjointAgent,
    "shared_linucb": _policy(SharedAgent, "linucb"),
    "shared_lin_ts": _policy(SharedAgent, "lin_ts"),
    "shared_squarecb": _policy(SharedAgent, "squarecb"),
    "hybrid_linucb": _policy(HybridAgent, "linucb"),
    "hybrid_lin_ts": _policy(HybridAgent, "lin_ts"),
    "vw": VowpalItemAgent,
}


def play(episode: ItemEpisode, agent: ItemAgent) -> tuple[np.ndarray, float]:
    """Play ``episode``; returns each choice's ``(T,)`` expected reward and the seconds spent."""
    got = np.empty(episode.rounds)
    started = time.perf_counter()
    for t in range(episode.rounds):
        ids = episode.candidates[t]
        pos = agent.choose(episode.features[t], episode.items[ids], ids)
        agent.learn(float(episode.rewards[t, pos]))
        got[t] = episode.means[t, pos]
    seconds = time.perf_counter() - started
    if hasattr(agent, "close"):
        agent.close()
    return got, seconds


def study(
    world: ItemWorld,
    agents: Sequence[str],
    rounds: int,
    seeds: Sequence[int],
    settings: Settings,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per agent, ``(S,)`` mean expected reward and ``(S,)`` seconds, paired by seed."""
    out = {name: (np.empty(len(seeds)), np.empty(len(seeds))) for name in agents}
    for s, seed in enumerate(seeds):
        episode = world.episode(rounds, seed_streams(seed)[0])
        for name in agents:
            agent = AGENTS[name](episode, seed_streams(seed)[1], settings)
            got, seconds = play(episode, agent)
            out[name][0][s], out[name][1][s] = got.mean(), seconds
    return out


def markdown_table(results: dict[str, tuple[np.ndarray, np.ndarray]], rounds: int) -> str:
    """Mean reward ± sd, above random ± sd (paired by seed), the ratios of the above-random
    figures to disjoint's and VW's, and the paired difference to VW."""
    random = results["random"][0]
    lift = {name: reward - random for name, (reward, _) in results.items()}

    def ratio(name: str, base: str) -> str:
        if base not in lift or lift[base].mean() == 0:
            return "n/a"
        return f"{lift[name].mean() / lift[base].mean():.2f}"

    def sd(values: np.ndarray) -> float:
        return float(values.std(ddof=1)) if values.size > 1 else 0.0

    def versus_vw(reward: np.ndarray) -> str:
        if "vw" not in results:
            return "n/a"
        diff = reward - results["vw"][0]
        return f"{diff.mean():+.4f} ± {sd(diff):.4f}"

    lines = [
        "| agent | mean reward ± sd | above random ± sd | × disjoint | × vw | − vw ± sd (paired) "
        "| rounds/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (reward, seconds) in results.items():
        lines.append(
            f"| {name} | {reward.mean():.4f} ± {sd(reward):.4f} "
            f"| {lift[name].mean():+.4f} ± {sd(lift[name]):.4f} "
            f"| {ratio(name, 'disjoint')} | {ratio(name, 'vw')} | {versus_vw(reward)} "
            f"| {rounds * reward.size / seconds.sum():,.0f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    parser.add_argument("--rounds", type=int, default=5000)
    parser.add_argument("--agents", default=",".join(AGENTS), help="comma-separated")
    parser.add_argument("--alpha", type=float, default=1.0, help="LinUCB width")
    parser.add_argument("--v", type=float, default=1.0, help="lin_ts posterior scale")
    parser.add_argument(
        "--arm-ridge", type=float, default=1.0, help="hybrid per-item ridge (the paper: 1)"
    )
    parser.add_argument("--noise", default="bernoulli", choices=("bernoulli", "gaussian"))
    parser.add_argument(
        "--forgetting",
        default="1",
        help='the shared and hybrid models\' forgetting: a factor in (0, 1] or "auto"',
    )
    args = parser.parse_args(argv)
    agents = [a for a in args.agents.split(",") if a]
    unknown = sorted(set(agents) - set(AGENTS))
    if unknown:
        parser.error(f"unknown agents {unknown}; expected some of {sorted(AGENTS)}")
    if "random" not in agents:
        agents.insert(0, "random")
    world = ItemWorld(noise=args.noise)
    forgetting = args.forgetting if args.forgetting == AUTO else float(args.forgetting)
    settings = Settings(PolicyParams(alpha=args.alpha, v=args.v), args.arm_ridge, forgetting)
    results = study(world, agents, args.rounds, range(args.seeds), settings)
    print(
        f"{world.name}: d = {world.dim}, q = {world.item_dim}, ~{world.n_alive} alive, "
        f"lifetime {world.lifetime}, {world.offered} offered; {args.rounds} rounds × "
        f"{args.seeds} seeds; alpha = {args.alpha}, v = {args.v}, arm_ridge = {args.arm_ridge}, "
        f"noise = {args.noise}, forgetting = {args.forgetting}\n"
    )
    print(markdown_table(results, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
