"""How ``forgetting = "auto"`` compares with fixed factors on worlds other than the suite's.

The suite's ``drifting`` is 5 arms over 5 features. Whether a rule for
choosing the discount is any good shows on worlds it was not tuned on, so
this study plays the same policy with no forgetting, a grid of fixed factors
and ``"auto"`` on:

- ``drifting``: the suite's (5 arms, 5 features, click rates 5-15%);
- ``drifting-20``: 20 arms over 16 features, as the world of issue 18;
- ``drifting-20-wide``: the same with rates 2-18%, where the arms differ more
  and forgetting earns more;
- ``synthetic`` and ``synthetic-20``: the same worlds without the change,
  where forgetting can only cost.

It reports the second half of the drifting worlds (after the change) and the
whole run of the others, each as a ratio to no forgetting and to the best
fixed factor, paired by seed. On the drifting worlds it also plays an
*oracle* that knows when the change comes and forgets everything there (each
arm back to its prior at round ``T // 2``, no forgetting otherwise): what
dropping the old payoffs at the change earns with perfect knowledge of when
it comes. Not a ceiling on forgetting in general: on the 20-arm worlds fixed
factors earn more than it (docs/LEARNING.md). And it plays the rule issue 18
suggested first, every factor of the grid learned side by side and the one
with the lowest recent prediction error chosen, per arm and per experiment
(:mod:`.side_by_side`). Run::

    python -m bandits.simulation.forgetting_study --seeds 8
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from multiprocessing import Pool

import numpy as np

from ..auto_forgetting import AUTO
from ..policy import PolicyParams
from ..state import prior
from .agents import BanditdAgent, banditd_factory
from .environments import Drifting, Environment, SyntheticLinear
from .runner import run
from .side_by_side import side_by_side_factory

WORLDS: dict[str, Callable[[], Environment]] = {
    "drifting": Drifting,
    "drifting-20": lambda: Drifting(n_arms=20, dim=16),
    "drifting-20-wide": lambda: Drifting(
        n_arms=20, dim=16, low=0.02, base_spread=0.08, context_spread=0.08
    ),
    "synthetic": SyntheticLinear,
    "synthetic-20": lambda: SyntheticLinear(n_arms=20, dim=16),
}
FIXED = (0.999, 0.995, 0.99, 0.98)
ORACLE = "oracle"  # the discount column of the agent that resets every arm at the change
# the discount columns of the side-by-side agents, by the scope they pick a factor for
SIDE_BY_SIDE = {"side by side, per arm": "arm", "side by side, per experiment": "experiment"}
POLICIES = {
    "linucb α=0.3": ("linucb", PolicyParams(alpha=0.3)),
    "lin_ts v=0.1": ("lin_ts", PolicyParams(v=0.1)),
}


class ResetAtChange(BanditdAgent):
    """A :class:`BanditdAgent` that puts every arm back to its prior at round ``change``."""

    change: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._round = 0

    def choose(self, z: np.ndarray) -> int:
        """As :meth:`BanditdAgent.choose`, after the reset if this is the change's round."""
        if self._round == self.change:
            self.state = prior(self.n_arms, self.dim + 1, self.ridge)
        self._round += 1
        return super().choose(z)


def _oracle_factory(policy: str, params: PolicyParams, change: int):
    def make(n_arms: int, dim: int, rng: np.random.Generator, seed: int = 0) -> BanditdAgent:
        agent = ResetAtChange(policy, n_arms, dim, rng, params)
        agent.change = change
        return agent

    return make


def _score(job: tuple[str, str, float | str, int, int]) -> tuple[str, str, str, np.ndarray]:
    """Per-seed score of one (world, policy, discount): second half if it drifts, else all."""
    world, policy, discount, rounds, seeds = job
    name, params = POLICIES[policy]
    if discount == ORACLE:  # Drifting changes at rounds // 2
        factory = _oracle_factory(name, params, rounds // 2)
    elif discount in SIDE_BY_SIDE:
        factory = side_by_side_factory(name, params, scope=SIDE_BY_SIDE[discount])
    else:
        factory = banditd_factory(name, params, discount=discount)
    result = run(WORLDS[world](), policy, factory, rounds, range(seeds))
    scores = result.second_half if world.startswith("drifting") else result.mean_reward
    return world, policy, str(discount), scores


def table(scores: dict[tuple[str, str, str], np.ndarray]) -> str:
    """Markdown: per world and policy, each discount's mean and auto's ratios (and the
    oracle's, where the world drifts), then the side-by-side agents' ratios to the best
    fixed factor."""
    lines = [
        "| world | policy | none | " + " | ".join(f"γ={g:g}" for g in FIXED) + " | auto | "
        "auto ÷ none | auto ÷ best fixed | oracle ÷ none | "
        + " | ".join(f"{name} ÷ best fixed" for name in SIDE_BY_SIDE)
        + " |",
        "|---|---|---|" + "---|" * len(FIXED) + "---|---|---|---|" + "---|" * len(SIDE_BY_SIDE),
    ]
    for world in WORLDS:
        for policy in POLICIES:
            none = scores[world, policy, "1.0"]
            fixed = {g: scores[world, policy, str(g)] for g in FIXED}
            auto = scores[world, policy, AUTO]
            best = max(fixed.values(), key=np.mean)
            cells = [f"{none.mean():.4f}"] + [f"{v.mean():.4f}" for v in fixed.values()]
            oracle = scores.get((world, policy, ORACLE))
            ceiling = "" if oracle is None else f"{oracle.mean() / none.mean():.3f}"
            others = [scores[world, policy, name].mean() / best.mean() for name in SIDE_BY_SIDE]
            lines.append(
                f"| {world} | {policy} | {' | '.join(cells)} | {auto.mean():.4f} | "
                f"{auto.mean() / none.mean():.3f} | {auto.mean() / best.mean():.3f} | {ceiling} | "
                + " | ".join(f"{ratio:.3f}" for ratio in others)
                + " |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8, help="seeds 0..N-1")
    parser.add_argument("--rounds", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args(argv)
    jobs = [
        (world, policy, discount, args.rounds, args.seeds)
        for world in WORLDS
        for policy in POLICIES
        for discount in (
            1.0,
            *FIXED,
            AUTO,
            *((ORACLE,) if world.startswith("drifting") else ()),
            *SIDE_BY_SIDE,
        )
    ]
    scores = {}
    with Pool(args.processes) as pool:
        for done, (world, policy, discount, values) in enumerate(pool.imap(_score, jobs), 1):
            scores[world, policy, discount] = values
            print(
                f"[{done}/{len(jobs)}] {world} {policy} γ={discount}", file=sys.stderr, flush=True
            )
    print(
        f"{args.rounds} rounds × {args.seeds} seeds; second half on the drifting worlds, "
        "the whole run elsewhere\n"
    )
    print(table(scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
