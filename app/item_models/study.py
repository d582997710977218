"""``banditd simulate --study items``: short-lived items, in process and through the service.

In process it runs :mod:`bandits.simulation.item_study`'s agents (random, the
per-item ``disjoint`` LinUCB, the ``shared`` model and Vowpal Wabbit
``--cb_explore_adf -q UA --squarecb`` when installed) on
:class:`~bandits.simulation.item_world.ItemWorld`. With ``--url`` it also plays
the same episodes, seed by seed, through a running banditd with its worker:
the shared model as ``model = "shared"`` with every candidate sent as an
object with its item features, and the per-item model as ``arms = "dynamic"``
with candidate ids. Each needs one experiment per seed (``--print-config``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from bandits import PolicyParams
from bandits.simulation.item_study import AGENTS, ItemAgent, Settings, markdown_table, play
from bandits.simulation.item_world import ItemEpisode, ItemWorld
from bandits.simulation.peers import available
from bandits.simulation.runner import seed_streams

# through the service: agent name -> the experiment's model and policy
SERVICE_AGENTS = {
    "http_shared_linucb": ("shared", "linucb"),
    "http_disjoint": ("disjoint", "linucb"),
}


def experiment_name(prefix: str, agent: str, seed: int) -> str:
    """The experiment ``agent`` plays seed ``seed`` in."""
    return f"{prefix}items_{agent.removeprefix('http_')}_s{seed}"


def experiments_toml(prefix: str, world: ItemWorld, seeds: Sequence[int], alpha: float) -> str:
    """The ``[experiments.*]`` tables ``--study items --url`` needs (a fresh model per seed)."""
    context = ", ".join(f'"f{i}"' for i in range(world.dim))
    items = ", ".join(f'"g{j}"' for j in range(world.item_dim))
    out = ["# banditd simulate --study items --url: one experiment per model and seed"]
    for agent, (model, policy) in SERVICE_AGENTS.items():
        for seed in seeds:
            out += [
                "",
                f"[experiments.{experiment_name(prefix, agent, seed)}]",
                f'policy = "{policy}"',
                f"alpha = {alpha!r}",
                'arms = "dynamic"',
                f'model = "{model}"',
                "reward = { default = 0.0, window_seconds = 3600, min = 0.0, max = 1.0 }",
                f"features = {{ numeric = [{context}] }}",
            ]
            if model != "disjoint":
                out.append(f"item_features = {{ numeric = [{items}] }}")
    return "\n".join(out) + "\n"


class ServiceItemAgent:
    """Chooses among the round's items through ``POST /choose``; rewards through ``/reward``.

    ``with_features`` sends each candidate as ``{"id", "features"}`` (an item
    model); otherwise as its id (a per-item model of a dynamic catalogue).
    """

    def __init__(self, transport, experiment: str, with_features: bool) -> None:
        self.transport = transport
        self.experiment = experiment
        self.with_features = with_features
        self._round = 0
        self._decision = ""
        self._arm = ""

    def choose(self, z: np.ndarray, items: np.ndarray, ids: np.ndarray) -> int:
        """The position of the item the service ranks first."""
        self._round += 1
        names = [f"item{i}" for i in ids]
        if self.with_features:
            candidates: list[Any] = [
                {"id": name, "features": {f"g{j}": float(v) for j, v in enumerate(row)}}
                for name, row in zip(names, items)
            ]
        else:
            candidates = names
        body = {
            "experiment": self.experiment,
            "context": {f"f{i}": float(v) for i, v in enumerate(z)},
            "candidates": candidates,
            "request_id": f"{self.experiment}-{self._round}",
        }
        answer = self.transport.post("/choose", body)
        self._decision = answer["decision_id"]
        self._arm = answer["arms"][0]["arm"]
        return names.index(self._arm)

    def learn(self, reward: float) -> None:
        """Report the reward; the worker learns it asynchronously."""
        body = {"decision_id": self._decision, "arm": self._arm, "reward": reward}
        self.transport.post("/reward", body)


def compare(
    world: ItemWorld,
    rounds: int,
    seeds: Sequence[int],
    alpha: float,
    *,
    transport=None,
    prefix: str = "sim_",
    progress: Callable[[str, int, float], None] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per agent, ``(S,)`` mean expected reward and seconds, paired by seed.

    The in-process agents always; with ``transport`` also those of :data:`SERVICE_AGENTS`.
    """
    names = ["random", "disjoint", "shared_linucb", "shared_lin_ts"]
    if available().get("vw"):
        names.append("vw")
    if transport is not None:
        names += list(SERVICE_AGENTS)
    settings = Settings(PolicyParams(alpha=alpha))
    out = {name: (np.empty(len(seeds)), np.empty(len(seeds))) for name in names}
    for s, seed in enumerate(seeds):
        episode = world.episode(rounds, seed_streams(seed)[0])
        for name in names:
            agent = _agent(name, episode, seed, settings, transport, prefix)
            got, seconds = play(episode, agent)
            out[name][0][s], out[name][1][s] = got.mean(), seconds
            if progress is not None:
                progress(name, seed, float(got.mean()))
    return out


def _agent(
    name: str, episode: ItemEpisode, seed: int, settings: Settings, transport, prefix: str
) -> ItemAgent:
    if name in SERVICE_AGENTS:
        model, _ = SERVICE_AGENTS[name]
        return ServiceItemAgent(
            transport, experiment_name(prefix, name, seed), with_features=model != "disjoint"
        )
    return AGENTS[name](episode, seed_streams(seed)[1], settings)


def targets(results: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[str]:
    """Issue 13's targets, met or missed, for each item model played (in process, over HTTP)."""
    random = results["random"][0]
    gain = {name: reward - random for name, (reward, _) in results.items()}
    lines = []
    for name in results:
        if "shared" not in name and "hybrid" not in name:
            continue
        base = (
            "http_disjoint" if name.startswith("http_") and "http_disjoint" in gain else "disjoint"
        )
        ratio = gain[name].mean() / gain[base].mean()
        lines.append(
            f"- {name}: {ratio:.1f}x {base}'s gain over random (target >= 2x): "
            f"{'met' if ratio >= 2 else 'MISSED'}"
        )
        if "vw" in results:
            diff = results[name][0] - results["vw"][0]
            sd = float(diff.std(ddof=1)) if diff.size > 1 else 0.0
            met = diff.mean() >= -sd  # at least as much, within the paired spread
            lines.append(
                f"- {name} - vw: {diff.mean():+.4f} ± {sd:.4f} paired by seed "
                f"(target >= 0 within the spread): {'met' if met else 'MISSED'}"
            )
    return lines


def report(results: dict[str, tuple[np.ndarray, np.ndarray]], world: ItemWorld, rounds: int) -> str:
    """The table and the targets, with what the world was."""
    head = (
        f"{world.name}: d = {world.dim}, q = {world.item_dim}, ~{world.n_alive} alive, "
        f"lifetime {world.lifetime}, {world.offered} offered; {rounds} rounds x "
        f"{len(next(iter(results.values()))[0])} seeds\n\n"
    )
    return head + markdown_table(results, rounds) + "\n\nTargets:\n" + "\n".join(targets(results))
