"""Simulated bandit problems, an in-process runner and the comparison suite.

- :mod:`.environments`: a linear Bernoulli problem at 5-15% click rates, the
  same with a change halfway (``drifting``), and scikit-learn's digits as a
  10-arm bandit (needs scikit-learn, imported on first use).
- :mod:`.agents`: banditd's policies learning in-process; :mod:`.peers`:
  MABWiser and Vowpal Wabbit behind the same interface (the ``eval`` extra,
  imported on first use).
- :mod:`.runner`: seeds, common random numbers, mean reward ± sd, regret,
  rounds per second; :mod:`.suite`: who runs where, ``quick`` and ``full``.
- :mod:`.ope_study`: off-policy evaluation checked against known truths.

``banditd simulate`` (``app.simulate``) drives it, in-process or through a
running service.

Examples
--------
>>> from bandits import PolicyParams
>>> from bandits.simulation import SyntheticLinear, banditd_factory, run
>>> result = run(SyntheticLinear(), "linucb", banditd_factory("linucb", PolicyParams(alpha=0.3)),
...              rounds=500, seeds=[0, 1])
>>> result.mean_reward.shape, 0.05 <= float(result.mean_reward.mean()) <= 0.15
((2,), True)
"""

from .agents import Agent, AgentFactory, BanditdAgent, banditd_factory
from .environments import ENVIRONMENTS, Digits, Drifting, Environment, Episode, SyntheticLinear
from .runner import RunResult, markdown_table, run
from .suite import SIZES, lineup, run_suite

__all__ = [
    "Agent",
    "AgentFactory",
    "BanditdAgent",
    "banditd_factory",
    "ENVIRONMENTS",
    "Environment",
    "Episode",
    "SyntheticLinear",
    "Drifting",
    "Digits",
    "RunResult",
    "run",
    "markdown_table",
    "SIZES",
    "lineup",
    "run_suite",
]
